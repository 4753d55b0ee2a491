"""Small drawing helpers for the notebooks' figures: boxes and arrows, and a heatmap of categories.

Plain matplotlib, nothing else: a flowchart is text boxes joined by arrows, placed by hand in axes
coordinates (0..1 both ways), so no graph-layout dependency is needed.
"""
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

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
