"""The course's figures: boxes and arrows, a heatmap of categories, and the stages side by side.

Plain matplotlib, nothing else: a flowchart is text boxes joined by arrows, placed by hand in axes
coordinates (0..1 both ways), so no graph-layout dependency is needed. The stage table's bar chart
(`plot_stage_accuracy`, what `--plot` and `make table` save) and the paired comparisons of
notebook 05 are here too.
"""
import matplotlib
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from lessons_lib.stage_table import dataset_name, latest_rows
from lessons_lib.stats import difference_by_sample_size, format_p, paired_counts, wilson_interval

KIND_COLORS = {"start": "#e8e8e8", "question": "#dbe8f7", "answer": "#d8f0d8", "none": "#f7dcdc"}


def flowchart(nodes, edges, ax=None, figsize=(10, 6), fontsize=9):
    """Draw a flowchart and return its Axes.

    nodes: {name: (x, y, text, kind)} with x, y the box centre in axes units and kind one of
    KIND_COLORS; edges: [(from, to, label)]. An arrow joins the facing sides of two boxes: straight
    down (or up) when the target is mostly below (or above), else from side to side.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    ax.set_axis_off()
    boxes = {}
    for name, (x, y, text, kind) in nodes.items():
        boxes[name] = ax.text(x, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=fontsize, zorder=2,
                              bbox=dict(boxstyle="round,pad=0.4", facecolor=KIND_COLORS[kind],
                                        edgecolor="#555555"))
    ax.figure.canvas.draw()  # box sizes are known only once the text has been laid out
    to_axes = ax.transAxes.inverted()
    extent = {name: to_axes.transform_bbox(box.get_bbox_patch().get_window_extent())
              for name, box in boxes.items()}
    for start, end, label in edges:
        a, b = extent[start], extent[end]
        if abs(b.y0 + b.y1 - a.y0 - a.y1) > abs(b.x0 + b.x1 - a.x0 - a.x1):  # mostly vertical
            x = (max(a.x0, b.x0) + min(a.x1, b.x1)) / 2  # straight down where the boxes overlap
            (x0, y0), (x1, y1) = ((x, a.y0), (x, b.y1)) if b.y1 < a.y0 else ((x, a.y1), (x, b.y0))
        else:  # side to side, from the middle of one side to the middle of the other
            ya, yb = (a.y0 + a.y1) / 2, (b.y0 + b.y1) / 2
            (x0, y0), (x1, y1) = ((a.x1, ya), (b.x0, yb)) if b.x0 > a.x1 else ((a.x0, ya), (b.x1, yb))
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), xycoords="axes fraction",
                    arrowprops=dict(arrowstyle="-|>", color="#333333", shrinkA=0, shrinkB=0), zorder=1)
        if label:
            vertical = abs(x1 - x0) < 1e-9
            ax.text((x0 + x1) / 2 + (0.01 if vertical else 0), (y0 + y1) / 2 + (0 if vertical else 0.01),
                    label, transform=ax.transAxes, ha="left" if vertical else "center",
                    va="center" if vertical else "bottom", fontsize=fontsize - 1, style="italic",
                    color="#333333")
    return ax


def extraction_rules_flowchart(ax=None):
    """The three rules of `rewards.extract_answer`, in the order they are tried."""
    q, q2, out = 0.16, 0.53, 0.87  # three columns: the rule's question, its ambiguity test, the result
    nodes = {
        "text": (q, 0.95, "the response text", "start"),
        "tag": (q, 0.74, "rule 1: an <answer>…</answer> tag\nholding a number?", "question"),
        "tag_one": (q2, 0.74, "one distinct number in all tags?\n(each read after its last '=')", "question"),
        "tag_answer": (out, 0.74, "answer: that number", "answer"),
        "ambiguous": (out, 0.605, "None: ambiguous\n(no falling through)", "none"),
        "hash": (q, 0.47, "rule 2: a '#### N' line\nholding a number?", "question"),
        "hash_one": (q2, 0.47, "one distinct number in all\n'####' segments?", "question"),
        "hash_answer": (out, 0.47, "answer: that number", "answer"),
        "any": (q, 0.2, "rule 3 (fallback):\nany number in the text?", "question"),
        "last": (q2, 0.2, "answer: the last number", "answer"),
        "nothing": (q, 0.03, "None: no number", "none"),
    }
    edges = [("text", "tag", ""), ("tag", "tag_one", "yes"), ("tag_one", "tag_answer", "yes"),
             ("tag_one", "ambiguous", "no"), ("tag", "hash", "no"), ("hash", "hash_one", "yes"),
             ("hash_one", "hash_answer", "yes"), ("hash_one", "ambiguous", "no"), ("hash", "any", "no"),
             ("any", "last", "yes"), ("any", "nothing", "no")]
    ax = flowchart(nodes, edges, ax=ax)
    ax.set_title("How extract_answer reads a response (rules tried top to bottom)")
    return ax


def category_heatmap(ax, codes, labels, colors, xlabel="", ylabel="", title="", legend=True):
    """Draw a 2-D grid of integer codes (0..len(labels)-1) with one colour per code, and a legend of
    the labels beside it (unless legend=False). `codes` is a nested list (rows, columns); returns the Axes."""
    from matplotlib.colors import ListedColormap
    ax.imshow(codes, cmap=ListedColormap(colors), vmin=-0.5, vmax=len(colors) - 0.5)
    rows, cols = len(codes), len(codes[0])
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xticks([c - 0.5 for c in range(1, cols)], minor=True)
    ax.set_yticks([r - 0.5 for r in range(1, rows)], minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend:
        ax.legend(handles=[Patch(facecolor=c, edgecolor="#555555", label=l) for c, l in zip(colors, labels)],
                  loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return ax


# ---------------------------------------------------------------------------------------------
# stages side by side: the table's accuracies, failure categories, the paired 2x2, a difference as n grows

def plot_stage_accuracy(rows, path=None, ax=None, title=None):
    """Bar chart of accuracy per stage with Wilson 95% interval bars; control rows hatched.
    Saves to `path` when given; returns the matplotlib Axes."""
    if path is not None and ax is None:
        matplotlib.use("Agg", force=False)  # headless-safe when only saving a file
    rows, _ = latest_rows(rows)
    controls = {r.get("control") for r in rows if r.get("control")}
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    acc = [100 * r["correct"] / max(r["n"], 1) for r in rows]
    ci = [wilson_interval(r["correct"], r["n"]) for r in rows]
    err = [[a - 100 * lo for a, (lo, _) in zip(acc, ci)], [100 * hi - a for a, (_, hi) in zip(acc, ci)]]
    names = [r["label"] + ("\n(control)" if r["label"] in controls else "") for r in rows]
    bars = ax.bar(names, acc, yerr=err, capsize=4, color="#7aa6d8", edgecolor="#2c6fbb")
    for bar, r, a, hi in zip(bars, rows, acc, err[1]):
        if r["label"] in controls:
            bar.set_hatch("//"); bar.set_facecolor("#dddddd")  # the control is not a stage
        ax.text(bar.get_x() + bar.get_width() / 2, a + hi + 1.5, f"{a:.1f}", ha="center", fontsize=8)
    ax.set_ylabel("accuracy (%)  ± Wilson 95%")
    ax.set_ylim(0, 100)
    ax.set_title(title or f"{dataset_name(rows)} accuracy per stage (greedy, n={rows[0]['n'] if rows else 0})")
    ax.tick_params(axis="x", rotation=20)
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=120)
    return ax


CATEGORY_COLORS = {"correct": "#4c9a4c", "truncated": "#b0b0b0", "no answer": "#e0e0e0",
                   "wrong arithmetic": "#e8a33d", "wrong number copied": "#d9704a", "wrong reasoning": "#b83c3c"}


def plot_failure_categories(records_by_stage, ax=None):
    """Stacked bars: how many of each stage's records fall in each `scoring.failure_category`,
    categories stacked in FAILURE_CATEGORIES order (correct at the bottom), one bar per stage in the
    order of `records_by_stage` ({label: records}). Returns the Axes; bar i of container j is stage
    i's count of category j."""
    from lessons_lib.scoring import FAILURE_CATEGORIES, failure_category  # here: scoring imports torch
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    labels = list(records_by_stage)
    categories = [[failure_category(r) for r in records] for records in records_by_stage.values()]
    bottom = [0] * len(labels)
    for name in FAILURE_CATEGORIES:
        counts = [cats.count(name) for cats in categories]
        ax.bar(labels, counts, bottom=bottom, label=name, color=CATEGORY_COLORS[name], edgecolor="white")
        bottom = [b + c for b, c in zip(bottom, counts)]
    sizes = sorted(set(bottom))
    ax.set_ylabel("questions")
    ax.set_title(f"Failure categories per stage (n={'/'.join(map(str, sizes))})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False, reverse=True)  # top = top
    ax.tick_params(axis="x", rotation=20)
    return ax


def plot_mcnemar_2x2(records_a, records_b, label_a, label_b, ax=None):
    """The 2x2 table of two stages on the same questions as an annotated heatmap: rows a right/wrong,
    columns b right/wrong, so the off-diagonal cells are "only a" and "only b", the only questions
    McNemar's test reads. The exact p-value is in the title. Returns the Axes."""
    c = paired_counts(records_a, records_b)  # fixed: a right and b wrong; broke: the reverse
    table = [[c["both_right"], c["fixed"]], [c["broke"], c["both_wrong"]]]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(table, cmap="Blues", vmin=0, vmax=max(max(row) for row in table) or 1)
    names = [["both right", f"only {label_a}"], [f"only {label_b}", "both wrong"]]
    for i in range(2):
        for j in range(2):
            dark = table[i][j] > 0.6 * max(max(row) for row in table)  # white text on dark cells
            ax.text(j, i, f"{table[i][j]}\n{names[i][j]}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks([0, 1], [f"{label_b} right", f"{label_b} wrong"])
    ax.set_yticks([0, 1], [f"{label_a} right", f"{label_a} wrong"])
    ax.set_title(f"{label_a} vs {label_b} on the same {c['n']} questions\n"
                 f"exact McNemar {format_p(c['p'], ' ')} (+{c['fixed']}/-{c['broke']})", fontsize=10)
    return ax


def plot_sample_size_flip(records_a, records_b, label_a="a", label_b="b", sizes=(50, 100, 200, 500), ax=None):
    """The paired difference a − b (points) with its 95% interval (`stats.paired_difference_interval`)
    on the first n questions, for each n in `sizes` the two share (`stats.difference_by_sample_size`).
    A small difference can change sign as n grows; the intervals say it was never pinned down.
    Returns the Axes; `ax.containers[0]` is the errorbar of the differences."""
    points = difference_by_sample_size(records_a, records_b, sizes)
    if not points:
        raise ValueError(f"the two runs share fewer questions than the smallest size in {tuple(sizes)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    x = list(range(len(points)))
    deltas = [p["delta"] for p in points]
    err = [[p["delta"] - p["lo"] for p in points], [p["hi"] - p["delta"] for p in points]]
    ax.axhline(0, color="#555555", linewidth=1, linestyle="--")  # no difference
    ax.errorbar(x, deltas, yerr=err, fmt="o", capsize=5, color="#2c6fbb")
    for xi, p in zip(x, points):
        ax.annotate(f"{p['delta']:+.1f}\n(+{p['fixed']}/-{p['broke']})", (xi, p["delta"]), xytext=(8, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xticks(x, [f"first {p['n']}" for p in points])
    ax.set_xlim(-0.5, len(points) - 0.1)  # room for the last label
    ax.set_ylabel(f"{label_a} − {label_b} (points)  ± 95%")
    ax.set_title(f"{label_a} − {label_b}, paired, on the first n questions")
    return ax
