"""The across-stage table: rows in a JSONL file, intervals, paired tests, text/Markdown and a plot.

Every scored checkpoint becomes one *row* — a JSON object on its own line of a `.jsonl` file
(label, checkpoint sha256, dataset, n, correct, accuracy, settings, timing, library version, where the
per-item records were saved). Appending a line is the whole database: it survives crashes, two runs
can append at once, and `cat` shows it.

Two statistics make the table honest on a few hundred questions:

* **Wilson 95% interval** per row — how far the true accuracy could plausibly be from the measured
  one (±4 points at n=500, ±7 at n=200: a 3-point "gain" can be noise).
* **Exact McNemar test** between two stages scored on the *same* questions. Only the questions where
  they disagree carry information: `fixed` (new stage right, old wrong) and `broke` (the reverse).
  If the new stage were no better, each disagreement would be a fair coin flip, so
  p = P(a Binomial(fixed+broke, 1/2) at least as lopsided as observed), two-sided.

**A label appended twice** (e.g. you re-scored `sft` after retraining): every row stays in the file
(it is an append-only log), but the table keeps only the *latest* row per (dataset, split, label),
in the position where that label first appeared, and prints a note saying how many rows it replaced.
"""

import fcntl
import hashlib
import json
import math
import os
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal: a two-sided 95% interval


class StageTableError(ValueError):
    """A stage-table or records file that cannot be read (the message names the file and line)."""


# ---------------------------------------------------------------------------------------------
# rows: what one scored checkpoint records

def library_version() -> str:
    """`lessons_lib.__version__`, else the installed distribution's version, else "unknown"."""
    import importlib.metadata as md

    import lessons_lib
    version = getattr(lessons_lib, "__version__", None)
    if version:
        return str(version)
    for dist in md.packages_distributions().get("lessons_lib", []):  # whatever pyproject calls it
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "unknown"


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def display_path(path) -> str:
    """Repo-relative when the file lives inside the repo (so rows are portable), else absolute."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def resolve_path(path) -> Path:
    """Inverse of `display_path`: a relative path is taken relative to the repo root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def make_row(label, records, *, ckpt, dataset, split, max_new_tokens, strategy, seconds,
             generated_tokens, records_path=None, parent=None, control=None, **extra) -> dict:
    """Build one table row from the per-item records of a scoring run."""
    n, correct = len(records), sum(bool(r["correct"]) for r in records)
    return {
        "label": label,
        "ckpt": display_path(ckpt),
        "ckpt_sha256": file_sha256(ckpt),  # which exact weights produced this number
        "dataset": dataset, "split": split,
        "n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
        "max_new_tokens": max_new_tokens, "strategy": strategy or "auto",
        "seconds": round(seconds, 3),
        "tokens_per_s": round(generated_tokens / seconds, 1) if seconds > 0 else None,
        "lessons_lib_version": library_version(),
        "records": display_path(records_path) if records_path else None,
        "parent": parent,    # the label this stage started from (paired test)
        "control": control,  # the compute-matched control label (paired test), if any
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# JSONL: append safely, read with precise errors

def append_jsonl(path, obj) -> None:
    """Append one JSON object as one line, safe against concurrent writers.

    The whole line goes out in a single `os.write` on an `O_APPEND` descriptor (the kernel moves to
    the end and writes in one step), under an exclusive `flock` (so even a short write that needs a
    second call cannot be interleaved with another process's line).
    """
    line = (json.dumps(obj, sort_keys=False) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the fd is closed
        written = os.write(fd, line)
        while written < len(line):  # rare (full disk, signals); the lock keeps it contiguous
            written += os.write(fd, line[written:])
    finally:
        os.close(fd)


def append_row(path, row) -> None:
    """Append one stage-table row (see `make_row`) to a JSONL file."""
    append_jsonl(path, row)


def read_jsonl(path) -> list[dict]:
    """Every JSON object in a JSONL file. Blank lines are skipped; a broken line raises
    `StageTableError("file:line: ...")` so you can open the file at the right place."""
    path = Path(path)
    if not path.exists():
        raise StageTableError(f"{path}: no such file (score a checkpoint with --append {path} first)")
    objects = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise StageTableError(f"{path}:{lineno}: not valid JSON ({e.msg}); "
                                      f"fix or delete that line") from None
            if not isinstance(obj, dict):
                raise StageTableError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            objects.append(obj)
    return objects


def read_rows(path) -> list[dict]:
    """Stage-table rows; each must have at least label, n and correct (error names file:line)."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows):
        missing = [k for k in ("label", "n", "correct") if k not in row]
        if missing:
            raise StageTableError(f"{path}: row {i + 1} ({row.get('label', '?')}) lacks {missing}")
    return rows


def write_records(path, records) -> None:
    """Per-item records as JSONL, written atomically (tmp file + rename: never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def latest_rows(rows) -> tuple[list[dict], int]:
    """Keep the latest row per (dataset, split, label), in first-appearance order.
    Returns (rows, how many older duplicates were dropped) — the documented duplicate policy."""
    latest, order = {}, []
    for row in rows:
        key = (row.get("dataset"), row.get("split"), row["label"])
        if key not in latest:
            order.append(key)
        latest[key] = row
    return [latest[k] for k in order], len(rows) - len(order)


# ---------------------------------------------------------------------------------------------
# statistics

def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion. Unlike p ± z·se it never leaves [0, 1] and stays
    sensible at 0/n and n/n — exactly where tiny models live (0% on real GSM8K)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends, no 1e-18 rounding residue
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(fixed: int, broke: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    Under "no difference" each of the `fixed + broke` disagreements is a fair coin, so
    p = min(1, 2 · P(Binomial(fixed+broke, 1/2) ≤ min(fixed, broke))). Computed with exact integers
    (Fraction) so tiny p-values like 1e-40 are not rounded to 0 along the way.
    """
    m, k = fixed + broke, min(fixed, broke)
    if m == 0:
        return 1.0
    tail = Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2 ** m)
    return float(min(Fraction(1), 2 * tail))


def paired_counts(records_new, records_old) -> dict:
    """Compare two stages question by question (matched on `index`, checked on `question`).

    Returns both_right, fixed (new right, old wrong), broke (new wrong, old right), both_wrong,
    n (questions in common), the exact McNemar p, and the fixed/broke index lists.
    """
    old_by_index = {r["index"]: r for r in records_old}
    counts = {"both_right": 0, "fixed": 0, "broke": 0, "both_wrong": 0}
    fixed_ids, broke_ids = [], []
    for r in records_new:
        old = old_by_index.get(r["index"])
        if old is None:
            continue
        if old.get("question") != r.get("question"):
            raise ValueError(f"item {r['index']}: the two runs asked different questions — "
                             "a paired test needs both stages scored on the same dataset and split")
        key = {(True, True): "both_right", (True, False): "fixed",
               (False, True): "broke", (False, False): "both_wrong"}[(bool(r["correct"]), bool(old["correct"]))]
        counts[key] += 1
        if key == "fixed":
            fixed_ids.append(r["index"])
        elif key == "broke":
            broke_ids.append(r["index"])
    n = sum(counts.values())
    return {**counts, "n": n, "p": mcnemar_exact(counts["fixed"], counts["broke"]),
            "fixed_ids": fixed_ids, "broke_ids": broke_ids}


def load_records(row) -> list[dict] | None:
    """The per-item records a row points to, or None when it has none / the file is gone."""
    if not row.get("records"):
        return None
    path = resolve_path(row["records"])
    return read_jsonl(path) if path.exists() else None


# ---------------------------------------------------------------------------------------------
# the table

def _format_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def compare_rows(rows) -> dict:
    """Paired tests for each row against its `parent` and `control` rows present in the same table.
    Returns {(label, "parent"|"control"): (reference label, paired_counts dict)}."""
    by_label = {r["label"]: r for r in rows}
    cache, out = {}, {}
    for row in rows:
        for role in ("parent", "control"):
            ref = by_label.get(row.get(role))
            if ref is None or ref is row:
                continue
            for r in (row, ref):
                if r["label"] not in cache:
                    cache[r["label"]] = load_records(r)
            if cache[row["label"]] is not None and cache[ref["label"]] is not None:
                out[(row["label"], role)] = (ref["label"], paired_counts(cache[row["label"]], cache[ref["label"]]))
    return out


def _comparison_cell(cmp) -> str:
    if cmp is None:
        return ""
    ref, c = cmp
    delta = 100 * (c["fixed"] - c["broke"]) / c["n"] if c["n"] else 0.0
    return f"{delta:+.1f} vs {ref} (+{c['fixed']}/-{c['broke']}, p={_format_p(c['p'])})"


def table_lines(rows):
    """Header and cell strings of one table (rows already deduplicated, one dataset/split)."""
    controls = {r.get("control") for r in rows if r.get("control")}
    comparisons = compare_rows(rows)
    header = ["stage", f"{_dataset_name(rows)} acc", "95% CI", "n", "vs parent (paired)", "vs control (paired)"]
    body = []
    for r in rows:
        lo, hi = wilson_interval(r["correct"], r["n"])
        label = r["label"] + (" (control)" if r["label"] in controls else "")
        body.append([label, f"{100 * r['correct'] / r['n']:.1f}%" if r["n"] else "-",
                     f"[{100 * lo:4.1f}, {100 * hi:4.1f}]", str(r["n"]),
                     _comparison_cell(comparisons.get((r["label"], "parent"))),
                     _comparison_cell(comparisons.get((r["label"], "control")))])
    keep = [i for i in range(len(header)) if i < 4 or any(row[i] for row in body)]  # no empty columns
    return [header[i] for i in keep], [[row[i] for i in keep] for row in body]


def _dataset_name(rows) -> str:
    dataset = rows[0].get("dataset") if rows else None
    return {"gsm8k": "GSM8K", "synthetic": "synthetic"}.get(dataset, dataset or "GSM8K")


def _render_text(header, body) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i in (0, 4, 5) else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    lines = [fmt(header), "-" * len(fmt(header))]
    return "\n".join(lines + [fmt(row) for row in body])


def _render_markdown(header, body) -> str:
    align = ["---" if i in (0, 4, 5) else "---:" for i in range(len(header))]
    rows = [header, align] + body
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


TABLE_NOTE = ("95% CI: Wilson interval. Paired: two-sided exact McNemar test on the same questions;\n"
              "+fixed/-broke = questions this stage got right/wrong that the reference got wrong/right; "
              "delta = (fixed - broke)/n in points.")


def render_table(rows, markdown=False) -> str:
    """Render rows (any number of datasets/splits) as plain text like the seed's table, or Markdown.

    Duplicate labels keep the latest row (see the module docstring); one table per dataset/split.
    """
    rows, dropped = latest_rows(rows)
    groups = {}
    for r in rows:
        groups.setdefault((r.get("dataset"), r.get("split")), []).append(r)
    parts = []
    for (dataset, split), group in groups.items():
        header, body = table_lines(group)
        title = f"{dataset or '?'} / {split or '?'}"
        table = _render_markdown(header, body) if markdown else _render_text(header, body)
        parts.append((f"**{title}**\n\n" if markdown else f"[{title}]\n") + table)
    notes = [TABLE_NOTE]
    if dropped:
        notes.append(f"{dropped} older row(s) with a repeated label were replaced by the latest one.")
    skipped = [f"{r['label']} {r['skipped']}/{r['n']}" for r in rows if r.get("skipped")]
    if skipped:
        notes.append("Prompts too long for the model's context (not generated, counted wrong): " + ", ".join(skipped))
    sep = "\n\n"
    if markdown:
        notes = ["_" + n.replace("\n", " ") + "_" for n in notes]
    return sep.join(parts) + sep + ("\n\n" if markdown else "\n").join(notes)


def plot_stage_accuracy(rows, path=None, ax=None, title=None):
    """Bar chart of accuracy per stage with Wilson 95% interval bars; control rows hatched.
    Saves to `path` when given; returns the matplotlib Axes."""
    import matplotlib
    if path is not None and ax is None:
        matplotlib.use("Agg", force=False)  # headless-safe when only saving a file
    import matplotlib.pyplot as plt

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
    ax.set_title(title or f"{_dataset_name(rows)} accuracy per stage (greedy, n={rows[0]['n'] if rows else 0})")
    ax.tick_params(axis="x", rotation=20)
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=120)
    return ax
