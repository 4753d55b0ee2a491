"""The stage table, round two (issue 19). Section 1: a row names exactly the weights it measured, no
result is lost after the work, and a short write (full disk, file-size limit) leaves the table as it
was. Section 3: a paired comparison says on how many questions it was computed. Section 2: refusals
that come first, in one line. Each case failed on the code before the fix."""

import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from helpers import load_script
from lessons_lib import evaluation, jsonl, stage_table as st
from lessons_lib.checkpoint import save_checkpoint
from lessons_lib.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "eval_post_training.py"
evalpt = load_script("eval_post_training")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=256))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "sft.pt", model, {"stage": "sft", "calculator": True})


def run(capsys, *argv):
    """(exit status, stdout, stderr) of the scorer's main, in this process."""
    try:
        evalpt.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def score(capsys, ckpt, table, label="sft", *extra, limit=3, dataset="synthetic"):
    return run(capsys, "--ckpt", ckpt, "--label", label, "--limit", limit, "--append", table,
               "--dataset", dataset, "--max_new_tokens", 4, "--no_progress", *extra)


def add_command(err: str) -> list[str]:
    """The command the scorer's error line says to run, as argv."""
    assert "Add it with: " in err, err
    return shlex.split(err.split("Add it with: ", 1)[1].strip())


def read_quietly(table):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any damaged line would be a warning: there must be none
        return st.read_rows(table)


# ---- 1. the row names the bytes that were loaded ---------------------------------------------

@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Two tiny Qwen2 models with different weights, each saved in several shards + an index."""
    transformers = pytest.importorskip("transformers")
    from lessons_lib.hf_model import save_tiny_model
    folders = []
    for seed in (0, 1):
        one = save_tiny_model(tmp_path_factory.mktemp("one") / "m", seed=seed)
        folder = tmp_path_factory.mktemp(f"sharded{seed}") / "m"
        transformers.AutoModelForCausalLM.from_pretrained(one).save_pretrained(folder, max_shard_size="100KB")
        transformers.AutoTokenizer.from_pretrained(one).save_pretrained(folder)
        assert len(list(folder.glob("model-*.safetensors"))) > 1
        folders.append(folder)
    return folders


def score_hf(capsys, folder, table, label, *extra):
    return run(capsys, "--hf", folder, "--label", label, "--limit", 2, "--append", table,
               "--max_new_tokens", 4, "--device", "cpu", "--no_progress", *extra)


def manifest_sha256(folder) -> str:
    """`sha256sum` of the index and every shard, sorted by name, hashed: the documented digest."""
    files = sorted([*folder.glob("model-*.safetensors"), folder / "model.safetensors.index.json"], key=lambda f: f.name)
    listing = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def test_sharded_models_with_different_weights_get_different_hashes(capsys, sharded, tmp_path):
    table = tmp_path / "t.jsonl"
    for i, folder in enumerate(sharded):
        assert score_hf(capsys, folder, table, f"m{i}")[0] == 0
    a, b = st.read_rows(table)
    assert (folder / "model.safetensors.index.json").read_bytes() == (sharded[0] / "model.safetensors.index.json").read_bytes()
    assert a["ckpt_sha256"] != b["ckpt_sha256"]  # same index file, different shards
    assert [a["ckpt_sha256"], b["ckpt_sha256"]] == [manifest_sha256(f) for f in sharded]
    assert len(a["weights_sha256"]) == len(list(sharded[0].glob("model-*"))) + 1  # each file, by name


def test_weights_changed_while_scoring_write_no_row(capsys, sharded, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    for f in sharded[0].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    real = evaluation.score_checkpoint
    def score_then_overwrite(*a, **k):  # e.g. a training run saves into the folder being scored
        shard.write_bytes((sharded[1] / shard.name).read_bytes())
        return real(*a, **k)
    monkeypatch.setattr(evaluation, "score_checkpoint", score_then_overwrite)
    table = tmp_path / "t.jsonl"
    code, out, err = score_hf(capsys, folder, table, "m")
    assert code == 1 and "changed while they were scored" in err and "no row" in err
    assert not table.exists() and out == ""


# ---- 1. no result is lost after the work -----------------------------------------------------

def test_a_failure_after_scoring_prints_the_row_and_the_command_that_adds_it(capsys, sharded, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    for f in sharded[0].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    real = evaluation.score_checkpoint
    def score_then_clean(*a, **k):  # a cache cleaned while the scorer runs
        result = real(*a, **k)
        for shard in folder.glob("model-*.safetensors"):
            shard.unlink()
        return result
    monkeypatch.setattr(evaluation, "score_checkpoint", score_then_clean)
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "before", "n": 2, "correct": 1})
    code, out, err = score_hf(capsys, folder, table, "m")
    row = json.loads(out.splitlines()[0])
    assert code == 1 and row["label"] == "m" and row["ckpt_sha256"] == manifest_sha256(sharded[0])
    [line] = [x for x in err.splitlines() if x.startswith("error:")]  # transformers' loading bar aside
    done = subprocess.run(add_command(line), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_quietly(table) == [{"label": "before", "n": 2, "correct": 1}, row]


def test_add_row_refuses_what_is_not_a_row(capsys, tmp_path):
    table = tmp_path / "t.jsonl"
    for bad, message in [("{oops", "not one JSON object"), ('{"label": "x", "n": 0, "correct": 0}', "n=0"),
                         ("[1]", "not a JSON object")]:
        code, _, err = run(capsys, "--append", table, "--add_row", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "--add_row", '{"label": "x", "n": 1, "correct": 0}')
    assert code == 2 and "needs --append" in err
    assert not table.exists()


# ---- 1. a short write never tears the table --------------------------------------------------

def scorer_with_file_size_limit(ckpt, table, limit_bytes, label="late", n=3):
    """The real scorer in a subprocess whose files cannot grow past `limit_bytes` (RLIMIT_FSIZE: the
    kernel cuts a write short, then fails the next with EFBIG, as a full disk does; Python ignores
    SIGXFSZ, so the process lives on to handle the error)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, str(SCRIPT), "--ckpt", str(ckpt), "--label", label, "--limit", str(n),
                           "--append", str(table), "--dataset", "synthetic", "--max_new_tokens", "4",
                           "--device", "cpu", "--no_progress"],
                          capture_output=True, text=True, preexec_fn=limit, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_short_write_of_the_row_leaves_the_table_as_it_was(ckpt, tmp_path):
    table = tmp_path / "t.jsonl"
    for i in range(12):  # a table larger than the records file, so only the row's write is cut short
        st.append_row(table, {"label": f"old{i}", "n": 2, "correct": 1, "pad": "x" * 400})
    before = table.read_bytes()
    done = scorer_with_file_size_limit(ckpt, table, len(before) + 100)
    assert done.returncode == 1 and "File too large" in done.stderr, done.stderr
    assert table.read_bytes() == before  # no fragment of the row, no newline
    row = json.loads(done.stdout.splitlines()[0])
    assert not list(tmp_path.rglob("*.tmp"))
    again = subprocess.run(add_command(done.stderr.strip().splitlines()[-1]), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    rows = read_quietly(table)  # the advice worked: every old row and the new one, no damaged line
    assert [r["label"] for r in rows] == [f"old{i}" for i in range(12)] + ["late"] and rows[-1] == row
    assert len(st.load_records(row)) == 3  # its records were written before the row


def test_a_short_write_of_the_records_leaves_no_tmp_file(ckpt, tmp_path):
    table = tmp_path / "t.jsonl"
    done = scorer_with_file_size_limit(ckpt, table, 1500, n=12)  # 12 records are > 1500 bytes, the row is not
    assert done.returncode == 0, done.stderr
    assert "could not write the records" in done.stderr
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp"))
    [row] = read_quietly(table)
    assert row["records"] is None and row["n"] == 12


def test_append_row_restores_the_length_on_a_failed_write(tmp_path, monkeypatch):
    import errno
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "a", "n": 1, "correct": 1})
    with open(table, "ab") as f:
        f.write(b'{"label": "hand", "n": 1, "correct": 1}')  # no newline: append_row adds one first
    before = table.read_bytes()
    real_write = os.write
    calls = []
    def cut(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(jsonl.os, "write", cut)
    with pytest.raises(OSError, match="No space"):
        st.append_row(table, {"label": "b", "n": 1, "correct": 1, "pad": "y" * 100})
    assert table.read_bytes() == before and len(calls) == 2


# ---- 2. refuse first, in one line, and never hang --------------------------------------------

@pytest.fixture
def no_loading(monkeypatch):
    """Fail loudly if the scorer gets as far as loading the data or the model."""
    def refuse(*a, **k):
        raise AssertionError("the data or the model was loaded before the bad argument was refused")
    monkeypatch.setattr("lessons_lib.checkpoint.load_checkpoint", refuse)
    monkeypatch.setattr("lessons_lib.data.load_qa_pairs", refuse)


def one_error_line(err) -> str:
    lines = [x for x in err.strip().splitlines() if not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _scorer_subprocess(*argv, env=None, timeout=60):
    """The real scorer, in a subprocess with a timeout: a hang fails the test instead of stalling it."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flag", ["--append", "--records"])
def test_a_fifo_as_an_output_is_refused_not_waited_on(ckpt, tmp_path, flag):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    argv = ["--ckpt", ckpt, "--limit", 2, "--dataset", "synthetic", "--no_progress", flag, fifo]
    if flag == "--records":
        argv += ["--append", tmp_path / "t.jsonl"]
    done = _scorer_subprocess(*argv)  # before the fix: blocked forever opening the FIFO
    assert done.returncode == 2 and "is not a regular file" in one_error_line(done.stderr)


@pytest.mark.parametrize("flag", ["--append", "--records"])
def test_outputs_that_are_devices_or_dangling_links_are_refused_before_loading(capsys, ckpt, tmp_path, no_loading, flag):
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "elsewhere" / "gone.jsonl")
    for dest, message in [(Path("/dev/null"), "is not a regular file"), (link, "which does not exist")]:
        extra = ["--append", tmp_path / "t.jsonl"] if flag == "--records" else []
        code, _, err = run(capsys, "--ckpt", ckpt, "--limit", 2, "--dataset", "synthetic", flag, dest, *extra)
        assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "elsewhere").exists()


def test_records_inside_the_tables_own_path_are_refused_before_scoring(capsys, ckpt, tmp_path, no_loading):
    table = tmp_path / "records"  # the default records go to <dir>/records/<table name>/...: inside it
    code, _, err = run(capsys, "--ckpt", ckpt, "--limit", 2, "--dataset", "synthetic", "--append", table)
    assert code == 2 and "is inside --append" in one_error_line(err) and not table.exists()


def test_threads_beyond_the_cores_are_refused(capsys, ckpt, no_loading):
    code, _, err = run(capsys, "--ckpt", ckpt, "--threads", 10**9)
    assert code == 2 and "CPU cores" in one_error_line(err)


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"),
    ({"WORLD_SIZE": "two"}, "is not a number of processes"),
    ({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}, "RANK='x'"),
])
def test_stray_or_malformed_torchrun_variables_are_one_line(ckpt, tmp_path, env, message):
    done = _scorer_subprocess("--ckpt", ckpt, "--limit", 2, "--dataset", "synthetic", "--device", "cpu", env=env)
    assert done.returncode == 2 and message in one_error_line(done.stderr)
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "sft", "n": 2, "correct": 1})
    done = _scorer_subprocess("--table", table, env=env)  # rendering a table needs no torchrun at all
    assert done.returncode == 0 and "sft" in done.stdout and done.stderr == "", done.stderr


def test_a_byte_order_mark_does_not_hide_the_first_row(tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_bytes(b"\xef\xbb\xbf" + b'{"label": "base", "n": 2, "correct": 1}\n{"label": "sft", "n": 2, "correct": 2}\n')
    assert [r["label"] for r in read_quietly(table)] == ["base", "sft"]  # before: base skipped, and 'sed 1d' advised


def test_hostile_rows_are_skipped_with_a_warning_never_a_traceback(tmp_path):
    table = tmp_path / "t.jsonl"
    lines = ['{"label": "ok", "n": 2, "correct": 1}',
             '{"label": "huge", "n": ' + "9" * 5000 + ', "correct": 1}',  # past Python's int-parsing limit
             '{"label": "big", "n": 100000000000000000000000, "correct": 1}',  # parses, overflows the interval
             json.dumps({"label": "nul", "n": 2, "correct": 1, "records": "a\x00b.jsonl", "parent": "ok"})]
    table.write_text("\n".join(lines) + "\n")
    with pytest.warns(st.StageTableWarning) as caught:
        rows = st.read_rows(table)
        text = st.render_table(rows)
    assert [r["label"] for r in rows] == ["ok", "nul"] and "nul" in text
    assert any(":2: " in str(w.message) for w in caught) and any("out of range" in str(w.message) for w in caught)
    assert st.compare_rows(rows) == {}  # a NUL byte in a records path: no paired test, no traceback


def test_an_unreadable_records_file_drops_only_its_paired_test(tmp_path):
    table = tmp_path / "t.jsonl"
    for label, parent in (("base", None), ("sft", "base"), ("grpo", "base")):
        rec = tmp_path / f"{label}.jsonl"
        st.write_records(rec, [{"index": i, "question": f"q{i}", "correct": i % 2 == 0} for i in range(4)])
        st.append_row(table, {"label": label, "n": 4, "correct": 2, "records": str(rec), "parent": parent})
    (tmp_path / "sft.jsonl").unlink()
    os.mkfifo(tmp_path / "sft.jsonl")  # opening it would block forever; a directory or no permission alike
    with pytest.warns(st.StageTableWarning, match="no paired tests for 'sft'"):
        text = st.render_table(st.read_rows(table))
    assert "vs base" in next(line for line in text.splitlines() if line.startswith("grpo"))


def test_a_parent_or_control_without_a_row_is_a_warning(capsys, ckpt, tmp_path):
    table = tmp_path / "t.jsonl"
    with pytest.warns(UserWarning) as caught:
        assert score(capsys, ckpt, table, "sft", "--parent", "base", "--control", "sft")[0] == 0
    said = [str(w.message) for w in caught]
    assert any(m.startswith("--parent 'base': ") and "no row with that label" in m for m in said), said
    assert any(m.startswith("--control 'sft' is this row itself") for m in said), said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert score(capsys, ckpt, table, "grpo", "--parent", "sft")[0] == 0  # sft has a row: no warning
