"""lessons_lib.plots: the notebooks' flowchart and category heatmap draw what they are given."""
import matplotlib
import pytest

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


# --- stages side by side ------------------------------------------------------------------------------

from lessons_lib.plots import plot_failure_categories, plot_mcnemar_2x2, plot_sample_size_flip  # noqa: E402
from lessons_lib.scoring import FAILURE_CATEGORIES, failure_category  # noqa: E402
from lessons_lib.stats import mcnemar_exact, paired_difference_interval  # noqa: E402

QUESTION = "Ann has 3 apples and 5 pears. How many fruits?"
ONE_OF_EACH = {  # a record of each failure category, as scoring writes them
    "correct": {"correct": True, "finished": True, "extracted": "8", "response": "<<3+5=8>>8"},
    "truncated": {"correct": False, "finished": False, "extracted": "3", "response": "Ann has 3"},
    "no answer": {"correct": False, "finished": True, "extracted": None, "response": "fruits!"},
    "wrong arithmetic": {"correct": False, "finished": True, "extracted": "9", "response": "<<3+5=9>>9"},
    "wrong number copied": {"correct": False, "finished": True, "extracted": "44", "response": "<<3+41=44>>44"},
    "wrong reasoning": {"correct": False, "finished": True, "extracted": "15", "response": "<<3*5=15>>15"},
}


def _stage(counts):
    """Records with `counts[category]` of each category, indexed in order."""
    names = [name for name in FAILURE_CATEGORIES for _ in range(counts.get(name, 0))]
    return [{"index": i, "question": QUESTION, **ONE_OF_EACH[name]} for i, name in enumerate(names)]


def test_the_example_records_fall_in_their_categories():
    assert [failure_category({"question": QUESTION, **r}) for r in ONE_OF_EACH.values()] == list(ONE_OF_EACH)


def test_failure_categories_stack_each_stages_counts_in_category_order():
    stages = {"sft": _stage({"correct": 2, "truncated": 1, "wrong reasoning": 3}),
              "grpo": _stage({"correct": 4, "no answer": 1, "wrong arithmetic": 1}),
              "base": _stage({"wrong number copied": 5, "no answer": 1})}
    ax = plot_failure_categories(stages)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sft", "grpo", "base"]  # the given order
    heights = {c.get_label(): [bar.get_height() for bar in c] for c in ax.containers}
    assert list(heights) == list(FAILURE_CATEGORIES)
    assert heights["correct"] == [2, 4, 0] and heights["wrong reasoning"] == [3, 0, 0]
    assert heights["wrong number copied"] == [0, 0, 5] and heights["no answer"] == [0, 1, 1]
    top = ax.containers[-1]  # stacked: the last category starts where the others end
    assert [bar.get_y() for bar in top] == [3, 6, 6] and [b.get_y() + b.get_height() for b in top] == [6, 6, 6]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(FAILURE_CATEGORIES)
    assert "n=6" in ax.get_title()
    plt.close(ax.figure)


def _pair(both_right, only_a, only_b, both_wrong):
    """Records of stages a and b on the same questions with the given 2x2 counts."""
    flags = [(1, 1)] * both_right + [(1, 0)] * only_a + [(0, 1)] * only_b + [(0, 0)] * both_wrong
    a = [{"index": i, "question": f"q{i}", "correct": bool(x)} for i, (x, _) in enumerate(flags)]
    b = [{"index": i, "question": f"q{i}", "correct": bool(y)} for i, (_, y) in enumerate(flags)]
    return a, b


def test_mcnemar_2x2_shows_the_four_counts_and_the_exact_p():
    a, b = _pair(both_right=5, only_a=3, only_b=1, both_wrong=2)
    ax = plot_mcnemar_2x2(a, b, "grpo", "sft")
    assert ax.images[0].get_array().tolist() == [[5, 3], [1, 2]]  # rows: grpo right/wrong; columns: sft
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["5\nboth right", "3\nonly grpo", "1\nonly sft", "2\nboth wrong"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["grpo right", "grpo wrong"]
    assert f"p = {mcnemar_exact(3, 1):.2f}" == "p = 0.62" and "p = 0.62" in ax.get_title()  # 0.625: two significant digits
    assert "11 questions" in ax.get_title()
    plt.close(ax.figure)


def _flip():
    """500 questions: a wins the first 200 (+10/-2), b wins the rest (+0/-30)."""
    a = [{"index": i, "question": f"q{i}", "correct": i < 200 and i % 20 == 0} for i in range(500)]
    b = [{"index": i, "question": f"q{i}", "correct": i in (1, 101) or (i >= 200 and i % 10 == 0)} for i in range(500)]
    return a, b


def test_sample_size_flip_plots_the_paired_difference_for_each_n():
    a, b = _flip()
    ax = plot_sample_size_flip(a, b, "dpo", "sft", sizes=(50, 100, 200, 500, 1000))  # 1000: more than there are
    line, _, (bars,) = ax.containers[0]
    assert list(line.get_ydata()) == pytest.approx([4.0, 4.0, 4.0, -4.4])  # +3-1 /50, +5-1 /100, +10-2 /200, +10-32 /500
    assert [t.get_text() for t in ax.get_xticklabels()] == ["first 50", "first 100", "first 200", "first 500"]
    ends = [end for seg in bars.get_segments() for end in (seg[0][1], seg[1][1])]  # lo, hi of each n
    counts = [(3, 1, 46), (5, 1, 94), (10, 2, 188), (10, 32, 458)]  # (only a, only b, both wrong); never both right
    assert ends == pytest.approx([100 * x for c in counts for x in paired_difference_interval(0, *c)])
    assert ends[0] < 0 < ends[4] and ends[7] < 0  # noise at 50, "a wins" at 200, "b wins" at 500
    assert "dpo − sft" in ax.get_title()
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="fewer questions"):
        plot_sample_size_flip(a[:40], b[:40])


# --- showing code ---------------------------------------------------------------------------------------

from lessons_lib.nb_helpers import source_without_docstring  # noqa: E402


def _documented(x):
    """A docstring
    on two lines."""
    # a comment stays
    return x + 1


def _undocumented(x):
    return x * 2


class _Documented:
    """Class docstring."""

    def method(self):
        """Method docstring stays: only the object's own docstring goes."""
        return 1


def test_source_without_docstring_drops_only_the_objects_own_docstring():
    assert source_without_docstring(_documented) == "def _documented(x):\n    # a comment stays\n    return x + 1"
    assert source_without_docstring(_undocumented) == "def _undocumented(x):\n    return x * 2"
    shown = source_without_docstring(_Documented)
    assert "Class docstring" not in shown and "Method docstring stays" in shown
    namespace = {}
    exec(source_without_docstring(_documented), namespace)  # still valid code
    assert namespace["_documented"](1) == 2
