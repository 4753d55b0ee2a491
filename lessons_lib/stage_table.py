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
import re
import unicodedata
import warnings
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_N = 10**9  # no benchmark has more questions; a larger n is an edit (and overflows the intervals)
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
    """Append one stage-table row (see `make_row`) as one line; when this returns, the row is on disk.

    Like `append_jsonl` (one `os.write` on an `O_APPEND` descriptor under an exclusive `flock`), plus
    two guarantees a table needs: the row starts on a line of its own even when the file ends in a
    torn or hand-edited line without its newline (else the row would be glued onto it and lost),
    and it is `fsync`ed before returning (a power cut cannot take back a reported row).
    """
    line = (json.dumps(row) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # RDWR: we read the last byte
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held from the last-byte check to the end of the write
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # end the damaged line; read_rows reports it and reads on
        try:
            written = os.write(fd, line)
            while written < len(line):  # rare (full disk, signals); the lock keeps it contiguous
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except BaseException:
            _restore_length(fd, size)  # a short write (full disk, file-size limit): no half row left
            raise
    finally:
        os.close(fd)


def _restore_length(fd, size) -> None:
    """Cut the table back to `size` bytes, its length before this write, still under the lock: the
    next row then starts where this one would have, not glued to a fragment of it."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass  # nothing better to do: the original error is the one to report


class StageTableWarning(UserWarning):
    """A damaged line of a table or an unusable records file: skipped, and said where."""


def _jsonl_lines(path):
    """(line number, object or None, what is wrong or None) for each non-blank line of a JSONL file.
    Read as bytes: a line torn inside a UTF-8 character is one bad line, not an unreadable file."""
    path = Path(path)
    if not path.exists():
        raise StageTableError(f"{path}: no such file (score a checkpoint with --append {path} first)")
    if not path.is_file():
        raise StageTableError(f"{path} is not a file")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (some editors): not part of the row
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except ValueError as e:  # also an integer past Python's 4300-digit limit
                torn = not raw.endswith(b"\n")  # the last line, cut short by a crash or an editor
                why = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8" \
                    if isinstance(e, UnicodeDecodeError) else str(e)
                yield lineno, None, ("an unfinished last line (a write cut short?)" if torn else
                                     f"not valid JSON ({why}: a write cut short, or an edit)")
                continue
            if not isinstance(obj, dict):
                yield lineno, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield lineno, obj, None


def read_jsonl(path) -> list[dict]:
    """Every JSON object in a JSONL file (per-item records). Blank lines are skipped; a broken line
    raises `StageTableError("file:line: ...")` so you can open the file at the right place."""
    objects = []
    for lineno, obj, problem in _jsonl_lines(path):
        if problem:
            raise StageTableError(f"{path}:{lineno}: {problem}; fix or delete that line")
        objects.append(obj)
    return objects


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
    for lineno, obj, problem in _jsonl_lines(path):
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
    """Per-item records as JSONL, written atomically (tmp file + fsync + rename: never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a size limit leaves no .tmp behind
        raise


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


def paired_difference_interval(both_right: int, fixed: int, broke: int, both_wrong: int,
                               z: float = Z95) -> tuple[float, float]:
    """95% interval for new − old accuracy, (fixed − broke)/n, of two stages on the same questions.

    Newcombe's square-and-add interval for paired data (1998, method 10): the Wilson interval of each
    stage's accuracy, combined through the correlation of their right/wrong answers (which the
    paired design has, and an unpaired interval would ignore). Stays inside [-1, 1], and is not
    zero-width when the stages never disagree, unlike delta ± z·se.
    """
    n = both_right + fixed + broke + both_wrong
    if n <= 0:
        return -1.0, 1.0
    new_right, old_right = both_right + fixed, both_right + broke
    p_new, p_old = new_right / n, old_right / n
    (lo_new, hi_new), (lo_old, hi_old) = wilson_interval(new_right, n, z), wilson_interval(old_right, n, z)
    margins = new_right * (n - new_right) * old_right * (n - old_right)
    a = both_right * both_wrong - fixed * broke  # > 0: the stages tend to be right on the same questions
    a = a - n / 2 if a > n / 2 else min(a, 0)  # Newcombe's continuity correction of the correlation
    phi = a / math.sqrt(margins) if margins else 0.0
    delta = p_new - p_old
    down = (p_new - lo_new) ** 2 + (hi_old - p_old) ** 2 - 2 * phi * (p_new - lo_new) * (hi_old - p_old)
    up = (hi_new - p_new) ** 2 + (p_old - lo_old) ** 2 - 2 * phi * (hi_new - p_new) * (p_old - lo_old)
    return max(-1.0, delta - math.sqrt(max(down, 0.0))), min(1.0, delta + math.sqrt(max(up, 0.0)))


def difference_by_sample_size(records_a, records_b, sizes=(50, 100, 200, 500)) -> list[dict]:
    """The paired difference a − b on the first n questions (by index) they share, for each n in
    `sizes` that is not larger than what they share: {n, delta, lo, hi, fixed, broke, p} per n, in
    points (delta, lo, hi) and counts. Shows how a small difference, and even its sign, moves with n."""
    common = sorted({r["index"] for r in records_a} & {r["index"] for r in records_b})
    out = []
    for n in sorted(set(sizes)):
        if n > len(common) or n <= 0:
            continue  # fewer questions than asked for: no row rather than a silently smaller n
        keep = set(common[:n])
        c = paired_counts([r for r in records_a if r["index"] in keep], [r for r in records_b if r["index"] in keep])
        lo, hi = paired_difference_interval(c["both_right"], c["fixed"], c["broke"], c["both_wrong"])
        out.append({"n": n, "delta": 100 * (c["fixed"] - c["broke"]) / n, "lo": 100 * lo, "hi": 100 * hi,
                    "fixed": c["fixed"], "broke": c["broke"], "p": c["p"]})
    return out


def load_records(row) -> list[dict] | None:
    """The per-item records a row points to, or None when it has none / the file is gone."""
    if not row.get("records"):
        return None
    try:
        path = resolve_path(row["records"])
        return read_jsonl(path) if path.exists() else None
    except StageTableError:
        raise
    except (OSError, ValueError) as e:  # unreadable, or a NUL byte in the path: only this row's tests go
        raise StageTableError(f"its records {row['records']!r} cannot be read ({e})") from None


# ---------------------------------------------------------------------------------------------
# the table

P_FLOOR = 1e-6  # below this an exact p only says "tiny": the test's assumptions matter more than its digits


def format_p(p: float, space: str = "") -> str:
    """'p=0.0010': two significant digits, trailing zeros kept, never in e-notation (0.000999 is not
    '1e-03'); below P_FLOOR, 'p<1e-6'. `space` goes around the sign ('p = 0.0010' in a plot title)."""
    if p < P_FLOOR:
        return f"p{space}<{space}1e-6"
    rounded = float(f"{p:.2g}")
    decimals = max(1, 1 - math.floor(math.log10(rounded)))  # 2 significant digits after the leading zeros
    return f"p{space}={space}{rounded:.{decimals}f}"


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
    header = ["stage", f"{_dataset_name(rows)} acc", "95% CI", "n", "vs parent (paired)", "vs control (paired)"]
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


def _dataset_name(rows) -> str:
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
