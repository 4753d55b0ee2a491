"""The across-stage table: its rows (what one scored checkpoint records) and their rendering.

Every scored checkpoint becomes one *row* — a JSON object on its own line of a `.jsonl` file
(label, checkpoint sha256, dataset, n, correct, accuracy, settings, timing, library version, where the
per-item records were saved). Appending a line is the whole database: it survives crashes, two runs
can append at once, and `cat` shows it.

The table is built from three neighbours, each one job:
`lessons_lib.jsonl` reads and writes the files (durable appends, atomic records),
`lessons_lib.stats` computes the Wilson interval per row and the exact McNemar test per pair, and
`lessons_lib.plots.plot_stage_accuracy` draws the table as a bar chart.

**A label appended twice** (e.g. you re-scored `sft` after retraining): every row stays in the file
(it is an append-only log), but the table keeps only the *latest* row per (dataset, split, label),
in the position where that label first appeared, and prints a note saying how many rows it replaced.
"""

import hashlib
import json
import re
import unicodedata
import warnings
from importlib import import_module
from pathlib import Path

from lessons_lib.jsonl import JsonlError, append_jsonl, jsonl_lines, read_jsonl, write_jsonl
from lessons_lib.stats import format_p, paired_counts, wilson_interval

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_N = 10**9  # no benchmark has more questions; a larger n is an edit (and overflows the intervals)


class StageTableError(JsonlError):
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
             generated_tokens, records_path=None, parent=None, control=None, ckpt_sha256=None,
             **extra) -> dict:
    """Build one table row from the per-item records of a scoring run. Pass `ckpt_sha256`, the
    hash of the bytes that were loaded (`model.sha256`): the file may have changed since.

    `truncated_correct` counts the correct records that ran out of `max_new_tokens`
    (`scoring.truncated_but_credited`); it is None when no record says whether it finished."""
    from lessons_lib.scoring import truncated_but_credited  # here: reading a table never imports torch
    n, correct = len(records), sum(bool(r["correct"]) for r in records)
    known = any("finished" in r for r in records)  # records of bare responses can't tell
    return {
        "label": label,
        "ckpt": display_path(ckpt),
        "ckpt_sha256": ckpt_sha256 or file_sha256(ckpt),  # which exact weights produced this number
        "dataset": dataset, "split": split,
        "n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
        "truncated_correct": len(truncated_but_credited(records)) if known else None,  # credited, unfinished
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
# the files: rows appended one by one, records written whole (both through lessons_lib.jsonl)

def append_row(path, row) -> None:
    """Append one stage-table row (see `make_row`) as one line; when this returns, the row is on disk.

    `jsonl.append_jsonl`: one `os.write` on an `O_APPEND` descriptor under an exclusive `flock`, the
    row on a line of its own even after a torn or hand-edited last line, `fsync`ed before returning,
    and a failed write cut back off (docs/reliability.md, G1-G3 and G12).
    """
    append_jsonl(path, row)


class StageTableWarning(UserWarning):
    """A damaged line of a table or an unusable records file: skipped, and said where."""



def row_problem(row) -> str | None:
    """Why a JSON object is not a usable stage-table row, or None when it is one."""
    missing = [k for k in ("label", "n", "correct") if k not in row]
    if missing:
        return f"not a stage-table row (lacks {missing})"
    n, correct = row["n"], row["correct"]
    if not isinstance(row["label"], str) or not row["label"].strip():
        return "the label is not a non-empty string"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, correct)) or not 0 <= correct <= n:
        return f"n={n!r}, correct={correct!r} are not counts with 0 <= correct <= n"
    if n == 0:
        return "n=0: no question was scored (such a row would hide a real one)"
    if n > MAX_N:
        return f"n={n} is out of range (more than {MAX_N:.0e} questions)"
    odd = [k for k in ("dataset", "split", "parent", "control", "records") if not isinstance(row.get(k), (str, type(None)))]
    return f"{odd} must be strings" if odd else None


def read_rows(path) -> list[dict]:
    """Stage-table rows, in file order. A damaged line (torn by a crash, edited by hand, not a row)
    never hides the others: it is skipped with a `StageTableWarning` naming file:line and how to
    repair it. A file with lines but no row at all raises `StageTableError` (is it a table?)."""
    rows, bad = [], []
    if not Path(path).exists():
        raise StageTableError(f"{path}: no such file (score a checkpoint with --append {path} first)")
    for lineno, obj, problem in jsonl_lines(path, StageTableError):
        problem = problem or row_problem(obj)
        if problem:
            bad.append((lineno, problem))
        else:
            rows.append(obj)
    if bad and not rows:
        lineno, problem = bad[0]
        raise StageTableError(f"{path} holds no stage-table rows ({len(bad)} unreadable line(s); "
                              f"line {lineno}: {problem}). Is it a stage table?")
    for lineno, problem in bad:
        warnings.warn(f"{path}:{lineno}: {problem}; skipped, the other rows are read. Repair: fix "
                      f"that line or delete it (sed -i '{lineno}d' {path})", StageTableWarning, stacklevel=2)
    return rows


def default_records_path(table, dataset: str, split: str, label: str) -> Path:
    """Default per-item records file of a row: one per (table, dataset, split, label), and two
    different labels never share one (a readable slug of the label + 12 hex digits of its sha256,
    so `sft v2`/`sft_v2`, `SFT`/`sft` on a case-insensitive disk, or any two unicode labels differ)."""
    for part in (dataset, split):
        if not re.fullmatch(r"[A-Za-z0-9_]+", part):
            raise ValueError(f"dataset and split must be plain names, got {part!r}")
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:40].lstrip(".") or "label"
    tag = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    table = Path(table)
    return table.parent / "records" / table.name / dataset / split / f"{slug}-{tag}.jsonl"


def records_problem(path) -> str | None:
    """Why an existing file is not a per-item records file (so must not be overwritten by one), or
    None: absent, empty, or its first line is a record (an object with index, question, correct)."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        return "it is not a regular file"
    with open(path, "rb") as f:
        first = next((line for line in iter(lambda: f.readline(1 << 20), b"") if line.strip()), None)
    if first is None:
        return None
    try:
        obj = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its first line is not JSON"
    if not isinstance(obj, dict) or not {"index", "question", "correct"} <= obj.keys():
        keys = list(obj)[:4] if isinstance(obj, dict) else type(obj).__name__
        return f"its first line is not a record: {keys}"
    return None


def write_records(path, records) -> None:
    """Per-item records as JSONL, written atomically (`jsonl.write_jsonl`: never half a file)."""
    write_jsonl(path, records)


def read_records(path) -> list[dict]:
    """Every record of a per-item records file, strict: a broken line raises
    `StageTableError("file:line: ...")` so you can open the file at the right place."""
    return read_jsonl(path, error=StageTableError)


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


def load_records(row) -> list[dict] | None:
    """The per-item records a row points to, or None when it has none / the file is gone."""
    if not row.get("records"):
        return None
    try:
        path = resolve_path(row["records"])
        return read_records(path) if path.exists() else None
    except StageTableError:
        raise
    except (OSError, ValueError) as e:  # unreadable, or a NUL byte in the path: only this row's tests go
        raise StageTableError(f"its records {row['records']!r} cannot be read ({e})") from None


# ---------------------------------------------------------------------------------------------
# the table

def compare_rows(rows) -> dict:
    """Paired tests for each row against its `parent` and `control` rows present in the same table.
    Returns {(label, "parent"|"control"): (reference label, paired_counts dict)}. A records file
    that can't be used (damaged, another run's questions) skips only the tests that need it, with a
    `StageTableWarning`: one bad file never takes the table down."""
    by_label = {r["label"]: r for r in rows}
    cache, out = {}, {}
    for row in rows:
        for role in ("parent", "control"):
            ref = by_label.get(row.get(role))
            if ref is None or ref is row:
                continue
            for r in (row, ref):
                if r["label"] not in cache:
                    cache[r["label"]] = _records_or_warn(r)
            if cache[row["label"]] is not None and cache[ref["label"]] is not None:
                try:
                    counts = paired_counts(cache[row["label"]], cache[ref["label"]])
                except (ValueError, KeyError, TypeError) as e:  # ValueError: different questions
                    warnings.warn(f"no paired test of {row['label']!r} vs {ref['label']!r}: {e!r}", StageTableWarning)
                    continue
                out[(row["label"], role)] = (ref["label"], counts)
    return out


def _records_or_warn(row):
    try:
        return load_records(row)
    except StageTableError as e:
        warnings.warn(f"no paired tests for {row['label']!r}: {e}", StageTableWarning)
        return None


def _comparison_cell(cmp, ns) -> str:
    """'+25.0 vs sft (+10/-0, p=0.0020)'; ' on n=100' after the counts when the paired questions are
    fewer than either row's n (`ns`): the delta is then on those questions, not on the rows' own."""
    if cmp is None:
        return ""
    ref, c = cmp
    delta = 100 * (c["fixed"] - c["broke"]) / c["n"] if c["n"] else 0.0
    on = f" on n={c['n']}" if any(n != c["n"] for n in ns) else ""
    return f"{delta:+.1f} vs {_printable(ref)} (+{c['fixed']}/-{c['broke']}{on}, {format_p(c['p'])})"


def table_lines(rows):
    """Header and cell strings of one table (rows already deduplicated, one dataset/split)."""
    controls = {r.get("control") for r in rows if r.get("control")}
    comparisons = compare_rows(rows)
    header = ["stage", f"{dataset_name(rows)} acc", "95% CI", "n", "vs parent (paired)", "vs control (paired)"]
    body = []
    for r in rows:
        lo, hi = wilson_interval(r["correct"], r["n"])
        label = _printable(r["label"]) + (" (control)" if r["label"] in controls else "")
        body.append([label, f"{100 * r['correct'] / r['n']:.1f}%" if r["n"] else "-",
                     f"[{100 * lo:4.1f}, {100 * hi:4.1f}]", str(r["n"]),
                     *(_comparison_cell(comparisons.get((r["label"], role)), _paired_ns(r, rows, role))
                       for role in ("parent", "control"))])
    keep = [i for i in range(len(header)) if i < 4 or any(row[i] for row in body)]  # no empty columns
    return [header[i] for i in keep], [[row[i] for i in keep] for row in body]


def _paired_ns(row, rows, role) -> tuple:
    """The n of a row and of its `role` reference row (the paired n is compared with both)."""
    ref = next((r for r in rows if r["label"] == row.get(role)), None)
    return (row["n"],) + ((ref["n"],) if ref else ())


def dataset_name(rows) -> str:
    dataset = rows[0].get("dataset") if rows else None
    return {"gsm8k": "GSM8K", "synthetic": "synthetic"}.get(dataset, _printable(dataset or "GSM8K"))


def _printable(text) -> str:
    """A label as one line of visible text: newlines, tabs and other control or invisible
    characters are shown escaped (`\\n`), so a label can never break a table's layout."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _width(text: str) -> int:
    """Columns `text` takes in a terminal: wide (CJK, emoji) characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _render_text(header, body) -> str:
    widths = [max(_width(x) for x in col) for col in zip(header, *body)]
    pad = lambda c, w, left: c + " " * (w - _width(c)) if left else " " * (w - _width(c)) + c
    fmt = lambda cells: "  ".join(pad(c, w, i in (0, 4, 5))
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    lines = [fmt(header), "-" * _width(fmt(header))]
    return "\n".join(lines + [fmt(row) for row in body])


def _render_markdown(header, body) -> str:
    align = ["---" if i in (0, 4, 5) else "---:" for i in range(len(header))]
    rows = [header, align] + [[c.replace("\\", "\\\\").replace("|", "\\|") for c in cells] for cells in body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


TABLE_NOTE = ("95% CI: Wilson interval. Paired: two-sided exact McNemar test on the same questions;\n"
              "+fixed/-broke = questions this stage got right/wrong that the reference got wrong/right; "
              "delta = (fixed - broke)/n in points.")


def _row_name(row, n_groups) -> str:
    """A row's label in a note; with the dataset/split when the notes cover several tables."""
    name = _printable(row["label"])
    return name if n_groups <= 1 else f"{name} ({_printable(row.get('dataset'))}/{_printable(row.get('split'))})"


def truncated_correct(row) -> int | None:
    """A row's count of correct answers that ran out of max_new_tokens, or None when unknown: rows
    written before `make_row` recorded it, records that did not say, or a hand-edited non-count."""
    value = row.get("truncated_correct")
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= row["correct"]
    return value if ok else None


def truncated_note(rows, n_groups=1) -> list[str]:
    """The note under the table on truncated-but-credited answers, as a list of 0 or 1 lines: the
    rows that have some (`k of their c correct`), and which rows did not record the count. No row
    with any: no note, so tables of old rows (or of models that always finish) render as before."""
    credited = [f"{_row_name(r, n_groups)} {truncated_correct(r)} of {r['correct']} correct"
                for r in rows if truncated_correct(r)]
    if not credited:
        return []
    unknown = [_row_name(r, n_groups) for r in rows if truncated_correct(r) is None]
    return ["Correct but truncated (ran out of max_new_tokens; the last-number fallback still read the gold): "
            + ", ".join(credited) + (f"; not recorded for {', '.join(unknown)}" if unknown else "")]


def render_table(rows, markdown=False) -> str:
    """Render rows (any number of datasets/splits) as plain text like the seed's table, or Markdown.

    Duplicate labels keep the latest row (see the module docstring); one table per dataset/split.
    Notes under the tables say which rows had prompts skipped and which had correct answers that
    were truncated (`truncated_note`; rows without the count are "not recorded", never 0).
    """
    rows, dropped = latest_rows(rows)
    groups = {}
    for r in rows:
        groups.setdefault((r.get("dataset"), r.get("split")), []).append(r)
    parts = []
    for (dataset, split), group in groups.items():
        header, body = table_lines(group)
        title = _printable(f"{dataset or '?'} / {split or '?'}")
        table = _render_markdown(header, body) if markdown else _render_text(header, body)
        parts.append((f"**{title}**\n\n" if markdown else f"[{title}]\n") + table)
    notes = [TABLE_NOTE]
    if dropped:
        notes.append(f"{dropped} older row(s) with a repeated label were replaced by the latest one.")
    skipped = [f"{_row_name(r, len(groups))} {r['skipped']}/{r['n']}" for r in rows if r.get("skipped")]
    if skipped:
        notes.append("Prompts too long for the model's context (not generated, counted wrong): " + ", ".join(skipped))
    notes += truncated_note(rows, len(groups))
    sep = "\n\n"
    if markdown:
        notes = ["_" + n.replace("\n", " ") + "_" for n in notes]
    return sep.join(parts) + sep + ("\n\n" if markdown else "\n").join(notes)


# ---------------------------------------------------------------------------------------------
# names that moved out of this module (issue 18): still importable from here, for code written before

_MOVED = {"Z95": "stats", "mcnemar_exact": "stats", "paired_difference_interval": "stats",
          "difference_by_sample_size": "stats", "P_FLOOR": "stats", "plot_stage_accuracy": "plots"}


def __getattr__(name):  # imported on first use: reading a table never imports matplotlib
    if name not in _MOVED:
        raise AttributeError(f"module 'lessons_lib.stage_table' has no attribute {name!r}")
    return getattr(import_module(f"lessons_lib.{_MOVED[name]}"), name)
