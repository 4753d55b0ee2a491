"""JSONL files: one JSON object per line. The one reader and the two writers every module uses.

* `read_jsonl` — every object of a file, strict: a line that is not a JSON object (or lacks a key,
  or fails a check) raises an error naming the file and the line. Lines are read as bytes, so a
  line torn inside a UTF-8 character is one bad line, not an unreadable file; a UTF-8 byte-order
  mark is not part of the first object. `jsonl_lines` is the same reading, one line at a time, for a
  reader that skips bad lines instead (`stage_table.read_rows`).
* `append_jsonl` — one object as one line, durable and safe against concurrent writers (the stage
  table, the training logs).
* `write_jsonl` — a whole file at once, atomically: complete or absent, never half-written (per-item
  records, preference pairs).
"""

import fcntl
import json
import os
from pathlib import Path


class JsonlError(ValueError):
    """A JSONL file that cannot be read: the message names the file and the line."""

    @classmethod
    def at(cls, path, lineno, problem):
        """The error for line `lineno` of `path`, as `file:line: problem` (what editors open)."""
        return cls(f"{path}:{lineno}: {problem}; fix or delete that line")


def jsonl_lines(path, error=JsonlError):
    """(line number, object or None, what is wrong or None) for each non-blank line of a JSONL file.
    Read as bytes: a line torn inside a UTF-8 character is one bad line, not an unreadable file.
    A path that is missing or not a regular file (a folder, a FIFO: never opened) raises `error`."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    if not path.is_file():
        raise error(f"{path} is not a file")
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


def read_jsonl(path, limit=None, keys=(), check=None, error=JsonlError) -> list[dict]:
    """The JSON objects of a JSONL file (blank lines skipped), at most `limit` of them.

    A line that is not a JSON object holding every key in `keys` (or for which `check(obj)` returns
    a complaint) raises `error.at(path, line, problem)`, so a broken file is found at once, at the
    right line. `error` is the caller's own subclass of `JsonlError` (`StageTableError`,
    `DatasetFormatError`): it says how the place is written and what callers catch.
    """
    objects = []
    for lineno, obj, problem in jsonl_lines(path, error):
        if limit is not None and len(objects) >= limit:
            break  # what follows is never parsed
        if problem is None:
            missing = [k for k in keys if k not in obj]
            problem = f"missing key(s) {missing}" if missing else check(obj) if check else None
        if problem:
            raise error.at(path, lineno, problem)
        objects.append(obj)
    return objects


def append_jsonl(path, obj) -> None:
    """Append one JSON object as one line; when this returns, the line is on disk.

    The whole line goes out in one `os.write` on an `O_APPEND` descriptor (the kernel moves to the
    end and writes in one step), under an exclusive `flock` (so even a short write that needs a
    second call cannot be interleaved with another process's line). The line starts on a line of its
    own even when the file ends in a torn or hand-edited line without its newline (else it would be
    glued onto it and lost), it is `fsync`ed before returning (a power cut cannot take back a
    reported line), and a write that fails half-way (full disk, file-size limit) is cut back off.
    """
    line = (json.dumps(obj) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # RDWR: we read the last byte
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held from the last-byte check to the end of the write
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # end the damaged line; a reader reports it and reads on
        try:
            written = os.write(fd, line)
            while written < len(line):  # rare (full disk, signals); the lock keeps it contiguous
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except BaseException:
            _restore_length(fd, size)  # a short write (full disk, file-size limit): no half line left
            raise
    finally:
        os.close(fd)


def _restore_length(fd, size) -> None:
    """Cut the file back to `size` bytes, its length before this write, still under the lock: the
    next line then starts where this one would have, not glued to a fragment of it."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass  # nothing better to do: the original error is the one to report


def write_jsonl(path, objects, compact=False) -> None:
    """A whole JSONL file, written atomically (tmp file + fsync + rename: never half a file).
    `compact` leaves out the spaces after `,` and `:` (large files: the preference pairs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    separators = (",", ":") if compact else None
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for obj in objects:
                f.write(json.dumps(obj, separators=separators) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a size limit leaves no .tmp behind
        raise
