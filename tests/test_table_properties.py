"""Property-based tests of the stage table (hypothesis): random sequences of appends with unicode labels,
datasets and splits, duplicate labels, torn last lines and hand-edited lines without a newline. The
table always reads back exactly the accepted rows, and every row's paired test finds its own records."""

import json
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as S

from lessons_lib import stage_table as st

N_QUESTIONS = 4
LABELS = S.text(min_size=1, max_size=12).filter(lambda s: s.strip())  # any unicode: spaces, |, \n, wide...
KEYS = S.tuples(S.sampled_from(["synthetic", "gsm8k"]), S.sampled_from(["train", "dev", "test"]))
OPS = S.one_of(
    S.tuples(S.just("append"), S.integers(0, 3), KEYS, S.integers(0, N_QUESTIONS)),
    S.tuples(S.just("tear"), S.integers(0, 3), KEYS, S.floats(0.01, 0.99)),   # a crash mid-row
    S.tuples(S.just("hand"), S.integers(0, 3), KEYS, S.integers(0, N_QUESTIONS)),  # edited: no final newline
)


def _records(dataset, split, label, seq, correct):
    """Same questions for every row of a (dataset, split), so rows pair up; `response` marks whose they are."""
    return [{"index": i, "question": f"{dataset}/{split}/q{i}", "correct": i < correct,
             "response": json.dumps([label, seq])} for i in range(N_QUESTIONS)]


def _play(table: Path, labels, ops):
    """Apply `ops` to `table`; return (the rows that were accepted, how many lines were torn)."""
    accepted, torn, previous = [], 0, {}
    for seq, (kind, which, (dataset, split), arg) in enumerate(ops):
        label = labels[which % len(labels)]
        row = {"label": label, "n": N_QUESTIONS, "dataset": dataset, "split": split,
               "parent": previous.get((dataset, split)), "seq": seq}
        if kind == "append":
            path = st.default_records_path(table, dataset, split, label)
            st.write_records(path, _records(dataset, split, label, seq, arg))
            row.update(correct=arg, records=str(path))
            st.append_row(table, row)
            accepted.append(row)
        elif kind == "tear":
            line = json.dumps({**row, "correct": 0})
            _write_raw(table, line[:max(1, int(len(line) * arg))])  # never the closing brace: never valid
            torn += 1
        else:
            row.update(correct=arg)
            _write_raw(table, json.dumps(row))  # a whole row, but the editor dropped the final newline
            accepted.append(row)
        previous[(dataset, split)] = label
    return accepted, torn


def _write_raw(table: Path, text: str):
    """What a crashed append_row or an editor leaves: the text on a line of its own, no newline after."""
    data = table.read_bytes() if table.exists() else b""
    table.write_bytes(data + (b"\n" if data and not data.endswith(b"\n") else b"") + text.encode())


@settings(max_examples=150, deadline=None)
@given(labels=S.lists(LABELS, min_size=1, max_size=4), ops=S.lists(OPS, min_size=1, max_size=12))
@example(labels=["stage"], ops=[("append", 0, ("synthetic", "train"), 0)])  # a label that reads like the header
def test_the_table_reads_back_exactly_the_accepted_rows_and_each_finds_its_records(labels, ops):
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "stage table.jsonl"
        accepted, torn = _play(table, labels, ops)
        if not accepted:  # only torn lines: not a table, and it says so
            with pytest.raises(st.StageTableError, match="holds no stage-table rows"):
                st.read_rows(table)
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = st.read_rows(table)
        assert rows == accepted
        last_line_torn = ops[-1][0] == "tear"
        assert sum(issubclass(w.category, st.StageTableWarning) for w in caught) == torn  # each one said
        assert not last_line_torn or "unfinished last line" in str(caught[-1].message)
        latest, _ = st.latest_rows(rows)
        for row in latest:  # the latest row of each (dataset, split, label) pairs with its own records
            if row.get("records"):
                marks = {json.loads(r["response"])[0] for r in st.load_records(row)}
                assert marks == {row["label"]}
        text, md = st.render_table(rows), st.render_table(rows, markdown=True)
        groups = {(r["dataset"], r["split"]) for r in latest}
        titles = {"[" + st._printable(f"{d or '?'} / {s or '?'}") + "]" for d, s in groups}  # one per dataset/split
        assert sum(line in titles for line in text.splitlines()) == len(groups)
        lines = md.splitlines()
        headers = {i - 1 for i, line in enumerate(lines) if line.startswith("| ---")}  # by place: a label may be "stage"
        body = [line for i, line in enumerate(lines) if line.startswith("| ") and not line.startswith("| ---")
                and i not in headers]
        assert len(body) == len(latest)  # no label broke a Markdown row into two
        assert all(st._printable(r["label"]).replace("\\", "\\\\").replace("|", "\\|") in md for r in latest)


@settings(max_examples=300, deadline=None)
@given(keys=S.sets(S.tuples(S.sampled_from(["t.jsonl", "t.json", "T.jsonl"]), KEYS, LABELS), min_size=2, max_size=12))
def test_records_paths_never_collide(keys):
    paths = {str(st.default_records_path(Path("/x") / t, d, s, label)).lower() for t, (d, s), label in keys}
    tables = {(t.lower(), d, s, label) for t, (d, s), label in keys}  # t.jsonl and T.jsonl: one file there
    assert len(paths) == len(tables)  # distinct even on a case-insensitive disk (labels "A" and "a" included)
