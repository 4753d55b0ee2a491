"""Fault injection: writers killed with SIGKILL at random moments while they append to one table.

The promise under test (docs/reliability.md): every row a process reported as written is in the
file, intact, exactly once; every other line is intact too, or is the torn start of a row that was
never reported; the table still reads and renders. FAULT_TRIALS=300 runs a longer campaign.

Linux finishes a small write even when SIGKILL arrives, so killing the writers rarely tears a line;
one more writer therefore crashes *inside* its appends on purpose (it writes a random prefix of a
row and gives up, as a power cut or a full disk would leave it): the others must append around it.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from helpers import load_script
from lessons_lib import stage_table as st
from lessons_lib.checkpoint import save_checkpoint
from lessons_lib.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent
TRIALS = int(os.environ.get("FAULT_TRIALS", "30"))
WRITERS = 4  # plus one that tears its rows (index WRITERS)

# The exact row writer w appends as its i-th, so that any line in the file can be checked against
# it. Payloads of 3-9 KB make rows straddle page boundaries, where a write can be cut short by a fatal
# signal. Shared as source: the writers must not import this module (it imports torch: seconds each).
ROW = """
def expected_row(writer, i):
    size = 3000 + (writer * 7919 + i * 104729) % 6000
    return {"label": f"w{writer}-{i}", "n": 10, "correct": i % 11, "dataset": "synthetic", "split": "test",
            "payload": "x" * size}
"""
exec(ROW)

# One writer: appends with the library's append_row and reports each row on stdout only after
# append_row returned.
WRITER = ROW + """
import sys
from lessons_lib.stage_table import append_row
w = int(sys.argv[2])
for i in range(10**6):
    append_row(sys.argv[1], expected_row(w, i))
    print(i, flush=True)
"""

# The tearer: append_row's steps (lock, own line, write) but it stops partway through the row.
TEARER = ROW + """
import fcntl, json, os, random, sys, time
w, rng = int(sys.argv[2]), random.Random(int(sys.argv[3]))
for i in range(10**6):
    time.sleep(rng.uniform(0, 0.02))
    line = json.dumps(expected_row(w, i)).encode()
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    size = os.fstat(fd).st_size
    os.write(fd, (b"\\n" if size and os.pread(fd, 1, size - 1) != b"\\n" else b"") + line[:rng.randrange(1, len(line))])
    os.close(fd)  # the crash: no newline, no report
"""


def _line(writer, i) -> bytes:
    return json.dumps(expected_row(writer, i)).encode()


def _check_table(path: Path, reported: dict[int, int], killed_at: dict[int, int]) -> tuple[list, int]:
    """Assert the promise; return the intact rows' labels in file order and how many torn lines
    (the start of a row a killed writer never reported) were found."""
    seen, order, torn = set(), [], 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw:
            continue
        try:
            row = json.loads(raw)
        except ValueError:  # allowed only as the start of a row that was never reported
            assert any(_line(w, i).startswith(raw) for w, i in killed_at.items()) or _torn_by_tearer(raw), raw[:80]
            torn += 1
            continue
        w, i = (int(x) for x in row["label"][1:].split("-"))
        assert raw == _line(w, i), f"row {row['label']} is damaged"
        assert (w, i) not in seen, f"row {row['label']} appears twice"
        seen.add((w, i))
        order.append(row["label"])
    for w, count in reported.items():
        missing = [i for i in range(count) if (w, i) not in seen]
        assert not missing, f"writer {w} reported rows {missing[:5]} as written, but they are not in the file"
    return order, torn


def _torn_by_tearer(raw: bytes) -> bool:
    head = b'{"label": "w%d-' % WRITERS
    if head.startswith(raw):
        return True
    digits = re.match(rb"\d+", raw[len(head):]) if raw.startswith(head) else None
    return bool(digits) and _line(WRITERS, int(digits.group())).startswith(raw)


def _one_trial(path: Path, rng: random.Random) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)], stdout=subprocess.PIPE, env=env)
             for w in range(WRITERS)]
    tearer = subprocess.Popen([sys.executable, "-c", TEARER, str(path), str(WRITERS), str(rng.randrange(10**6))], env=env)
    deadline = time.time() + 30
    while not path.exists() and time.time() < deadline:  # wait out the interpreters' startup
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.4))  # then a random stretch of concurrent appends
    for w in rng.sample(range(WRITERS), WRITERS):
        time.sleep(rng.uniform(0, 0.05))
        procs[w].send_signal(signal.SIGKILL)
    tearer.kill()
    tearer.wait(timeout=60)
    reported = {}
    for w, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=60)
        reported[w] = len(out.decode().split())  # each report is "i\n"; a half-printed one is not counted
    killed_at = {w: reported[w] for w in range(WRITERS)}  # the row each was writing when it died (if any)
    intact, torn = _check_table(path, reported, killed_at)
    st.append_row(path, {"label": "after", "n": 1, "correct": 1})  # the next append lands on its own line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = st.read_rows(path)
    assert [r["label"] for r in rows] == intact + ["after"]  # exactly the intact rows, in order
    assert len(caught) == torn  # each torn line reported (file:line), none hides another row
    assert "after" in st.render_table(rows)
    return torn


def test_sigkill_during_concurrent_appends_never_loses_a_reported_row(tmp_path):
    rng = random.Random(11)
    torn = total = 0
    for trial in range(TRIALS):
        path = tmp_path / f"t{trial}.jsonl"
        torn += _one_trial(path, rng)
        total += sum(1 for _ in open(path, "rb"))
    assert total > TRIALS * WRITERS  # the writers did get to append between kills
    print(f"\n{TRIALS} trials x {WRITERS} writers + 1 tearer: {total} lines, {torn} torn, no reported row lost")


# ---- the real scorer, killed mid-run -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=256))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, {"stage": "sft", "calculator": True})


def test_sigkill_on_scorers_sharing_a_table(tmp_path, tiny_ckpt):
    """Three real scorers (scripts/eval_post_training.py) on one table, killed at random moments of
    their run (import, loading, scoring, writing records, appending): a scorer that printed its
    result line wrote its row and its records; the table renders with every reported row."""
    rng, table = random.Random(5), tmp_path / "t.jsonl"
    reported = set()
    for trial in range(2):
        procs = {}
        for k in range(3):
            label = f"s{trial}-{k}"
            procs[label] = subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "eval_post_training.py"), "--ckpt", str(tiny_ckpt),
                 "--label", label, "--append", str(table), "--dataset", "synthetic", "--limit", "3",
                 "--max_new_tokens", "4", "--device", "cpu", "--no_progress"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = {label: time.time() + rng.uniform(1.0, 8.0) for label in procs}
        while any(p.poll() is None for p in procs.values()):
            for label, p in procs.items():
                if p.poll() is None and time.time() > deadline[label]:
                    p.send_signal(signal.SIGKILL)
            time.sleep(0.02)
        for label, p in procs.items():
            if p.stdout.read().decode().startswith(f"{label}: "):
                reported.add(label)
    rows = st.read_rows(table) if table.exists() else []
    by_label = {r["label"]: r for r in rows}
    assert reported <= by_label.keys()
    for label in reported:
        assert len(st.load_records(by_label[label])) == 3 == by_label[label]["n"]
    if rows:
        load_script("eval_post_training").main(["--table", str(table)])
