"""lessons_lib.plots: the notebooks' flowchart and category heatmap draw what they are given."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lessons_lib.plots import category_heatmap, extraction_rules_flowchart, flowchart  # noqa: E402


def test_flowchart_draws_one_box_per_node_and_one_arrow_per_edge():
    nodes = {"a": (0.2, 0.8, "start", "start"), "b": (0.2, 0.2, "below", "question"),
             "c": (0.8, 0.2, "right", "answer")}
    ax = flowchart(nodes, [("a", "b", "down"), ("b", "c", "yes")])
    texts = [t.get_text() for t in ax.texts]
    assert {"start", "below", "right", "down", "yes"} <= set(texts)
    arrows = [c for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)]
    assert len(arrows) == 2
    (x0, y0), (x1, y1) = arrows[0].xyann, arrows[0].xy  # a -> b leaves a's bottom for b's top
    assert abs(x0 - x1) < 1e-9 and y0 > y1
    plt.close(ax.figure)


def test_the_extraction_flowchart_names_all_three_rules():
    ax = extraction_rules_flowchart()
    text = " ".join(t.get_text() for t in ax.texts)
    assert "rule 1" in text and "rule 2" in text and "rule 3" in text and "None: ambiguous" in text
    plt.close(ax.figure)


def test_category_heatmap_draws_the_codes_with_a_legend():
    _, ax = plt.subplots()
    category_heatmap(ax, [[0, 1], [2, 1]], ["a", "b", "c"], ["white", "grey", "black"], title="t")
    assert ax.images[0].get_array().tolist() == [[0, 1], [2, 1]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    plt.close(ax.figure)
