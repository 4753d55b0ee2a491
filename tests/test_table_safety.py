"""The stage table never loses a row (issue 11, section 1): each case here destroyed or hid a row, or
lost a measured result, before the fix. Plus the scorer's up-front refusals (section 2)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_script
from lessons_lib import evaluation, stage_table as st
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


@pytest.fixture
def no_loading(monkeypatch):
    """Fail loudly if the scorer gets as far as loading the model."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the bad argument was refused")
    monkeypatch.setattr("lessons_lib.checkpoint.load_checkpoint", refuse)


# ---- 1. data loss ---------------------------------------------------------------------------

def test_records_pointing_at_the_table_is_refused_and_the_table_survives(capsys, ckpt, tmp_path):
    table = tmp_path / "t.jsonl"
    assert score(capsys, ckpt, table, "base")[0] == 0
    before = table.read_bytes()
    code, _, err = score(capsys, ckpt, table, "sft", "--records", table)
    assert code == 2 and err.startswith("error: --records") and "is the table itself" in err
    assert table.read_bytes() == before and [r["label"] for r in st.read_rows(table)] == ["base"]


@pytest.mark.parametrize("content", ['{"question": "q", "answer": "#### 1"}\n', "\x00\x01binary\n",
                                     '{"label": "sft", "n": 3, "correct": 1}\n'])
def test_records_pointing_at_any_other_file_is_refused(capsys, ckpt, tmp_path, no_loading, content):
    other = tmp_path / "precious.jsonl"
    other.write_text(content)
    code, _, err = score(capsys, ckpt, tmp_path / "t.jsonl", "sft", "--records", other)
    assert code == 2 and "is not a records file" in err and "refusing to overwrite" in err
    assert other.read_text() == content


def test_records_of_another_row_are_not_overwritten(capsys, ckpt, tmp_path):
    table, shared = tmp_path / "t.jsonl", tmp_path / "r.jsonl"
    assert score(capsys, ckpt, table, "base", "--records", shared)[0] == 0
    before = shared.read_bytes()
    code, _, err = score(capsys, ckpt, table, "sft", "--records", shared)
    assert code == 2 and "holds the records of row 'base'" in err and shared.read_bytes() == before
    assert score(capsys, ckpt, table, "base", "--records", shared, limit=2)[0] == 0  # its own row: re-scored


@pytest.mark.filterwarnings("ignore::UserWarning")  # the scorer warns about the torn line; checked below
@pytest.mark.parametrize("tail", ['{"label": "hand", "n": 2, "correct": 1}', '{"label": "torn", "n": 3, "cor'])
def test_append_after_a_last_line_without_newline_starts_a_new_line(capsys, ckpt, tmp_path, tail):
    table = tmp_path / "t.jsonl"
    assert score(capsys, ckpt, table, "base")[0] == 0
    with open(table, "a") as f:
        f.write(tail)  # hand-edited without the final newline, or half a line from a crash
    assert score(capsys, ckpt, table, "sft")[0] == 0
    lines = table.read_text().splitlines()
    assert lines[1] == tail and json.loads(lines[2])["label"] == "sft"
    torn = tail.endswith("cor")
    with pytest.warns(st.StageTableWarning, match=rf"{table}:2: .*sed -i '2d'") if torn else _no_warning():
        labels = [r["label"] for r in st.read_rows(table)]
    assert labels == (["base", "sft"] if torn else ["base", "hand", "sft"])


def test_a_torn_last_line_does_not_hide_the_rows_before_it(capsys, tmp_path):
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "base", "n": 4, "correct": 1})
    st.append_row(table, {"label": "sft", "n": 4, "correct": 3})
    with open(table, "a") as f:
        f.write('{"label": "grpo", "n"')
    with pytest.warns(UserWarning, match=rf"{table}:3: an unfinished last line .*sed -i '3d'"):
        code, out, _ = run(capsys, "--table", table)
    assert code == 0 and "base" in out and "sft" in out and "grpo" not in out


class _no_warning:
    def __enter__(self):
        import warnings
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error", st.StageTableWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def test_same_label_on_two_datasets_keeps_both_records(capsys, ckpt, tmp_path):
    table = tmp_path / "t.jsonl"
    for dataset in ("synthetic", "gsm8k"):
        assert score(capsys, ckpt, table, "sft", dataset=dataset)[0] == 0
        assert score(capsys, ckpt, table, "base", "--parent", "sft", dataset=dataset)[0] == 0
    rows = st.read_rows(table)
    assert len({r["records"] for r in rows}) == 4
    for row in rows:  # every row still points at its own questions
        questions = [r["question"] for r in st.load_records(row)]
        expected = [q for q, _ in __import__("lessons_lib").load_qa_pairs(row["dataset"], "test", limit=3)]
        assert questions == expected
    code, out, _ = run(capsys, "--table", table)
    assert code == 0 and out.count("vs sft (") == 2  # both paired tests found their records


@pytest.mark.parametrize("labels", [("sft v2", "sft_v2"), ("àîü", "éèê"), ("SFT", "sft"), ("a/b", "a_b")])
def test_labels_that_differ_never_share_a_records_file(capsys, ckpt, tmp_path, labels):
    table = tmp_path / "t.jsonl"
    for limit, label in enumerate(labels, start=2):
        assert score(capsys, ckpt, table, label, limit=limit)[0] == 0
    rows = st.read_rows(table)
    paths = [st.resolve_path(r["records"]) for r in rows]
    assert len({str(p).lower() for p in paths}) == 2  # distinct, even on a case-insensitive disk
    assert [len(st.read_records(p)) for p in paths] == [2, 3]  # the first was not overwritten


def test_default_records_paths_are_unique_per_table_dataset_split_and_label(tmp_path):
    keys = [(t, d, s, label) for t in ("t.jsonl", "t.json") for d in ("synthetic", "gsm8k") for s in ("train", "test")
            for label in ("sft", "sft ", "SFT", "..", "__", "模型", "模形", "x" * 300)]
    paths = {str(st.default_records_path(tmp_path / t, d, s, label)).lower() for t, d, s, label in keys}
    assert len(paths) == len(keys) and max(len(Path(p).name) for p in paths) < 80


def test_sha256_names_the_weights_that_were_scored_not_the_file_afterwards(capsys, ckpt, tmp_path, monkeypatch):
    mine = tmp_path / "m.pt"
    mine.write_bytes(ckpt.read_bytes())
    scored = hashlib.sha256(mine.read_bytes()).hexdigest()
    real = evaluation.score_checkpoint
    def score_then_replace(*a, **k):  # e.g. training writes a new checkpoint while we score the old one
        torch.manual_seed(7)
        save_checkpoint(mine, GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=256)), {"stage": "new"})
        return real(*a, **k)
    monkeypatch.setattr(evaluation, "score_checkpoint", score_then_replace)
    assert score(capsys, mine, tmp_path / "t.jsonl")[0] == 0
    [row] = st.read_rows(tmp_path / "t.jsonl")
    assert row["ckpt_sha256"] == scored != hashlib.sha256(mine.read_bytes()).hexdigest()


def test_limit_zero_is_refused_and_writes_no_row(capsys, ckpt, tmp_path, no_loading):
    table = tmp_path / "t.jsonl"
    code, _, err = score(capsys, ckpt, table, limit=0)
    assert code == 2 and "error: argument --limit: must be >= 1" in err and not table.exists()


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_an_empty_data_file_is_an_error_and_writes_no_row(capsys, ckpt, tmp_path, monkeypatch, no_loading, content):
    data = tmp_path / "gsm8k"
    data.mkdir()
    (data / "test.jsonl").write_text(content)
    monkeypatch.setenv("GSM8K_DIR", str(data))
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "sft", "n": 3, "correct": 1, "dataset": "gsm8k", "split": "test"})
    code, _, err = score(capsys, ckpt, table, dataset="gsm8k")
    assert code == 1 and "holds no questions" in err
    assert [r["n"] for r in st.read_rows(table)] == [3]  # the real row is still the latest


def test_old_tables_with_an_empty_row_show_the_real_one(tmp_path):
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "sft", "n": 3, "correct": 1})
    table.write_text(table.read_text() + json.dumps({"label": "sft", "n": 0, "correct": 0}) + "\n")  # the old bug
    with pytest.warns(st.StageTableWarning, match=":2: n=0"):
        assert [r["n"] for r in st.read_rows(table)] == [3]


@pytest.mark.parametrize("flag, where", [
    ("--append", lambda d: d / ("x" * 300 + ".jsonl")),            # a name too long for the disk
    ("--append", lambda d: d / "a_file" / "t.jsonl"),               # "folder" that is a file
    ("--records", lambda d: d / "a_file" / "r.jsonl"),
    ("--records", lambda d: d / "sub" / ("é" * 200 + ".jsonl")),    # 400 bytes in UTF-8
    ("--records", lambda d: d / ("é" * 200 + ".jsonl")),            # ... in a folder that exists
    ("--append", lambda d: Path("/proc/t.jsonl")),                   # a file system that takes no new files
])
def test_unwritable_destinations_are_refused_before_loading(capsys, ckpt, tmp_path, no_loading, flag, where):
    (tmp_path / "a_file").write_text("x")
    dest = where(tmp_path)
    argv = ["--ckpt", ckpt, "--limit", 2, "--dataset", "synthetic", "--no_progress"]
    argv += [flag, dest] + (["--append", tmp_path / "t.jsonl"] if flag == "--records" else [])
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith(f"error: {flag}") and len(err.strip().splitlines()) == 1


def test_read_only_destination_is_refused_before_loading(capsys, ckpt, tmp_path, no_loading, monkeypatch):
    import errno
    import tempfile
    def read_only(*a, **k):  # as root, chmod can't make a folder unwritable: simulate the disk
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code, _, err = score(capsys, ckpt, tmp_path / "t.jsonl")
    assert code == 2 and "cannot be written (Read-only file system)" in err


def test_when_the_final_write_fails_the_row_is_printed(capsys, ckpt, tmp_path, monkeypatch):
    import errno
    def disk_full(path, row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(evaluation, "append_row", disk_full)
    code, out, err = score(capsys, ckpt, tmp_path / "t.jsonl", "late")
    row = json.loads(out.splitlines()[0])
    assert code == 1 and row["label"] == "late" and row["n"] == 3 and len(row["ckpt_sha256"]) == 64
    assert err.startswith("error: could not append the row") and "No space left" in err


def test_plot_into_a_missing_folder_is_refused(capsys, tmp_path):
    table = tmp_path / "t.jsonl"
    st.append_row(table, {"label": "sft", "n": 3, "correct": 1})
    code, out, err = run(capsys, "--table", table, "--plot", tmp_path / "nope" / "p.png")
    assert code == 2 and "folder" in err and "does not exist" in err and out == ""


# ---- 2. clean refusals ----------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "argument --limit: must be >= 1"),
    (["--limit", "-3"], "argument --limit: must be >= 1"),
    (["--limit", "all"], "argument --limit: expected a whole number"),
    (["--batch_size", "0"], "argument --batch_size: must be >= 1"),
    (["--max_new_tokens", "0"], "argument --max_new_tokens: must be >= 1"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--device", "banana"], "unknown device 'banana'"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--split", "dev", "--dataset", "gsm8k"], "--split 'dev': gsm8k has the splits train, test"),
    (["--label", " "], "--label is empty"),
    (["--markdown"], "--plot and --markdown go with --table"),
    (["--dataset", "mmlu"], "argument --dataset: invalid choice"),
])
def test_bad_arguments_get_one_line_and_status_2_before_loading(capsys, ckpt, no_loading, argv, message):
    code, out, err = run(capsys, "--ckpt", ckpt, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(capsys, ckpt, no_loading):
    code, _, err = run(capsys, "--ckpt", ckpt, "--device", "cuda")
    assert code == 2 and "no CUDA GPU is visible here; use --device cpu" in err


def test_missing_inputs(capsys, tmp_path):
    code, _, err = run(capsys, "--ckpt", tmp_path / "nope.pt")
    assert code == 2 and "--ckpt" in err and "no such file" in err
    code, _, err = run(capsys, "--table", tmp_path / "nope.jsonl")
    assert code == 2 and "--table" in err and "no such file" in err
    (tmp_path / "empty.jsonl").write_text("")
    code, _, err = run(capsys, "--table", tmp_path / "empty.jsonl")
    assert code == 1 and "has no rows yet" in err


def test_a_broken_checkpoint_is_one_line_and_status_1(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "--ckpt", bad, "--dataset", "synthetic", "--limit", "2")
    assert code == 1 and err.startswith("error: ") and "not a readable checkpoint" in err


def test_table_survives_one_bad_records_file(capsys, ckpt, tmp_path):
    table = tmp_path / "t.jsonl"
    for label in ("base", "sft", "grpo"):
        assert score(capsys, ckpt, table, label, "--parent", "base")[0] == 0
    rows = st.read_rows(table)
    st.resolve_path(rows[1]["records"]).write_text("{broken\n")
    with pytest.warns(UserWarning, match="no paired tests for 'sft'"):
        code, out, _ = run(capsys, "--table", table)
    assert code == 0 and "grpo" in out and "vs base (" in out  # grpo's own test still rendered


def test_labels_with_newlines_pipes_and_wide_characters_keep_the_tables_intact():
    rows = [{"label": label, "n": 10, "correct": 3, "dataset": "synthetic", "split": "test"}
            for label in ("base", "two\nlines", "a|b", "模型一号", "tab\there")]
    text = st.render_table(rows).split("\n\n")[0].splitlines()
    assert len(text) == 3 + 5  # title, header, rule, and one line per row
    assert len({len(line) + sum(ord(c) > 0x2e80 for c in line) for line in text[1:]}) == 1  # columns aligned
    assert "two\\nlines" in text[4] and "tab\\there" in text[7]
    md = st.render_table(rows, markdown=True).split("\n\n")[1].splitlines()
    assert all(line.count("|") - line.count("\\|") == 5 for line in md)  # 4 columns, never 5
    assert "a\\|b" in md[4]


def test_a_closed_pipe_is_not_an_error(tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps({"label": f"stage{i}", "n": 10, "correct": i % 10}) + "\n"
                             for i in range(3000)))  # a table longer than a pipe's buffer
    out = subprocess.run(f"{sys.executable} {SCRIPT} --table {table} | head -2; exit ${{PIPESTATUS[0]}}",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "" and len(out.stdout.splitlines()) == 2
