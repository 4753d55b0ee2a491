"""Question/answer pairs for the course: real GSM8K, or the course's small synthetic set.

`load_qa_pairs("gsm8k", "test")` returns `(question, answer)` pairs, where `answer` is GSM8K's full
worked solution ending in `#### N` (use `rewards.gsm8k_gold_answer` for N). Where the data comes from,
in order:

1. the `data_dir` argument, else the `GSM8K_DIR` environment variable: a folder holding
   `train.jsonl` and `test.jsonl` (one `{"question": ..., "answer": ...}` object per line — the files
   of github.com/openai/grade-school-math, copied as they are);
2. else, for the *test* split (and OpenAI's `example_model_solutions.jsonl`), the copies shipped in
   this repository under `data/gsm8k/` (MIT, (c) 2021 OpenAI; see its README), checked against their
   sha256 before use -- so a fresh clone works offline;
3. else (the train split) the Hugging Face hub: `datasets.load_dataset("openai/gsm8k", "main")`
   (needs the network the first time, then its cache);
4. else one clear `DatasetUnavailableError` saying how to get the data -- within seconds when
   offline (the hub is probed first; `datasets` alone retries a dead network for ~25 s).

Every pair is checked as it is loaded (a non-empty question, an answer ending in `#### N`): a bad
line is a `DatasetFormatError` naming the file and the line, before any model runs.
"""
import hashlib
import os
import socket
import sys
import threading
import urllib.parse
from pathlib import Path

from lessons_lib.jsonl import JsonlError, read_jsonl

GSM8K_SPLITS = ("train", "test")
HOW_TO_GET_GSM8K = (
    "Real GSM8K is not available. The course ships the test split in data/gsm8k/; for the train "
    "split either set GSM8K_DIR to a folder holding train.jsonl and test.jsonl (from https://github.com/openai/grade-school-math, grade_school_math/data/), "
    "or pass data_dir=..., or let the `datasets` package download openai/gsm8k "
    "(pip install datasets; needs the network once)."
)


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "gsm8k"  # the repo's own copies
SHIPPED_SHA256 = {  # byte-identical to openai/grade-school-math @ 3101c7d (see data/gsm8k/README.md)
    "test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "example_model_solutions.jsonl": "4bc62db838f8418365d51c627bd66294cbdca9fb7f01519cb13f0dce8c51580b",
    "fewshot_train.jsonl": "3f7ee50a459a52ed756683a31829ee9feb74db2b71c5638a09bf31139b8fee14",  # train's first 8 lines: few-shot prompts
}


class DatasetUnavailableError(RuntimeError):
    """The data set cannot be found locally nor downloaded; the message says how to get it."""


class DatasetFormatError(JsonlError):
    """A data file is malformed; the message names the file and the line."""

    @classmethod
    def at(cls, path, lineno, problem):
        """The error for line `lineno` of a data file (`jsonl.read_jsonl` raises it)."""
        return cls(f"{path}, line {lineno}: {problem}")


def gsm8k_dir(data_dir=None):
    """The local GSM8K folder: `data_dir`, else $GSM8K_DIR, else None (meaning: try the hub).

    A relative $GSM8K_DIR that does not exist from the current folder is also tried from the
    repository root (notebooks run inside notebooks/, `make` runs from the root).
    """
    folder = data_dir if data_dir is not None else os.environ.get("GSM8K_DIR") or None
    if folder is None:
        return None
    folder = Path(folder).expanduser()
    repo_root = Path(__file__).resolve().parent.parent
    if not folder.is_absolute() and not folder.exists() and (repo_root / folder).exists():
        folder = repo_root / folder
    return folder


_VERIFIED = {}  # path -> (size, mtime) of a shipped file whose sha256 was checked


def shipped_file(name):
    """The repo's copy of a GSM8K file (`test.jsonl`, `example_model_solutions.jsonl`), after
    checking its sha256: an edited or truncated copy is refused, not silently scored."""
    if name not in SHIPPED_SHA256:
        raise DatasetUnavailableError(f"{name} is not shipped with the course. {HOW_TO_GET_GSM8K}")
    path = SHIPPED_DIR / name
    if not path.is_file():
        raise DatasetUnavailableError(f"{path} is missing from this clone (git checkout -- data/). {HOW_TO_GET_GSM8K}")
    stamp = (path.stat().st_size, path.stat().st_mtime_ns)
    if _VERIFIED.get(path) != stamp:  # hash once per version of the file, not on every load
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != SHIPPED_SHA256[name]:
            raise DatasetFormatError(f"{path} has sha256 {digest[:12]}..., not the published "
                                     f"{SHIPPED_SHA256[name][:12]}...: it was modified; restore it with "
                                     "`git checkout -- data/gsm8k` or set GSM8K_DIR to a good copy")
        _VERIFIED[path] = stamp
    return path


def gsm8k_file(name, data_dir=None):
    """Path of a GSM8K data file: from `data_dir`/$GSM8K_DIR when one is set, else the shipped copy."""
    folder = gsm8k_dir(data_dir)
    if folder is None:
        return shipped_file(name)
    path = folder / name
    if not path.is_file():  # a folder was named explicitly: say so rather than silently using another copy
        raise DatasetUnavailableError(f"{path} does not exist (from data_dir/GSM8K_DIR). {HOW_TO_GET_GSM8K}")
    return path


def gsm8k_pair_problem(row) -> str | None:
    """What is wrong with one GSM8K `{"question", "answer"}` object, or None: checked at load time."""
    from rewards import gsm8k_gold_answer

    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return f"the question is {row.get('question')!r}, not a non-empty text"
    try:
        gsm8k_gold_answer(row.get("answer"))
    except (ValueError, TypeError):
        return f"the answer has no '#### N' gold line: {str(row.get('answer'))[-60:]!r}"
    return None


def _hub_unreachable(timeout=3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached within `timeout` seconds, or None when it can.
    A thread bounds the DNS lookup too (socket timeouts don't cover it)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows: let `datasets` try
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (url.hostname, url.port or (80 if url.scheme == "http" else 443))
    answer = []

    def probe():
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(None)
        except OSError as e:
            answer.append(f"{address[0]} is not reachable ({e.strerror or e})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"{address[0]} did not answer within {timeout:.0f} s"


def _load_gsm8k_from_hub(split, limit):
    offline = _hub_unreachable()
    if offline and "datasets" in sys.modules:  # already imported online: it would retry for ~25 s
        raise DatasetUnavailableError(f"{HOW_TO_GET_GSM8K} (GSM8K {split}: {offline})")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read when datasets is imported: its cache only, no retries
    try:
        import datasets  # optional: only needed when no local folder is given

        rows = datasets.load_dataset("openai/gsm8k", "main", split=split)
    except Exception as e:  # not installed, offline, hub down: all mean the same to the learner
        why = offline or (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DatasetUnavailableError(f"{HOW_TO_GET_GSM8K} (GSM8K {split}: {why})") from e
    n = len(rows) if limit is None else min(limit, len(rows))
    pairs = []
    for i in range(n):
        problem = gsm8k_pair_problem(rows[i])
        if problem:
            raise DatasetFormatError(f"openai/gsm8k {split}, row {i}: {problem}")
        pairs.append((rows[i]["question"], rows[i]["answer"]))
    return pairs


def load_gsm8k(split, limit=None, data_dir=None):
    """GSM8K `(question, answer)` pairs for split "train" (7473) or "test" (1319), in file order."""
    if split not in GSM8K_SPLITS:
        raise ValueError(f"GSM8K split must be one of {GSM8K_SPLITS}, got {split!r}")
    if gsm8k_dir(data_dir) is None and split not in ("test",):
        return _load_gsm8k_from_hub(split, limit)  # only the test split ships with the course
    path = gsm8k_file(f"{split}.jsonl", data_dir)
    rows = read_jsonl(path, limit=limit, keys=("question", "answer"), check=gsm8k_pair_problem, error=DatasetFormatError)
    if not rows:
        raise DatasetFormatError(f"{path} holds no questions (the file is empty or blank)")
    return [(row["question"], row["answer"]) for row in rows]


def load_qa_pairs(name, split, limit=None, data_dir=None):
    """`(question, answer)` pairs of data set `name` ("gsm8k" or "synthetic") and `split`.

    `limit` keeps the first `limit` pairs (None: all; else at least 1, for every data set). For
    "gsm8k", `answer` is the worked solution ending in `#### N`; see the module docstring for
    where the data is read from.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be None (all) or a whole number >= 1, got {limit!r}")
    if name == "gsm8k":
        return load_gsm8k(split, limit=limit, data_dir=data_dir)
    if name == "synthetic":
        from lessons_lib.synthetic import SPLIT_SIZES, synthetic_qa_pairs  # here: data.py stays light

        if split == "test" and limit is not None:
            limit = min(limit, SPLIT_SIZES["test"])  # the fixed test set: past its end you get all of it, as with GSM8K
        return synthetic_qa_pairs(split, limit)
    raise ValueError(f"unknown data set {name!r}: use 'gsm8k' or 'synthetic'")


def solution_with_answer_tag(answer_field):
    """A GSM8K solution with its final `#### N` line replaced by `<answer>N</answer>`.

    This is the SFT target format: the assistant reasons, then ends with `<answer>N</answer>`
    (N as `rewards.gsm8k_gold_answer` normalizes it: `#### 1,450,000` -> `<answer>1450000</answer>`).
    """
    from rewards import gsm8k_gold_answer

    gold = gsm8k_gold_answer(answer_field)  # raises ValueError when there is no '#### N' line
    body = answer_field[:answer_field.rfind("####")].rstrip()
    return f"{body}\n<answer>{gold}</answer>" if body else f"<answer>{gold}</answer>"
