"""lessons_lib/cli.py and the CLIs that use it: one `error:` line, status 2 for bad arguments and 1 for
failures, checked before anything loads; a closed pipe and Ctrl-C are not errors."""

import errno
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_script
from lessons_lib import cli, data
from lessons_lib.checkpoint import save_checkpoint
from lessons_lib.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent


def _exit(capsys, fn, *argv):
    with pytest.raises(SystemExit) as e:
        fn([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize("text, ok", [("1", True), ("64", True), ("0", False), ("-2", False), ("1.5", False), ("x", False)])
def test_positive_int(text, ok):
    if ok:
        assert cli.positive_int(text) == int(text)
    else:
        with pytest.raises(Exception, match="must be >= 1|whole number"):
            cli.positive_int(text)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "cuda:-1"])
def test_unknown_devices_are_usage_errors(name):
    with pytest.raises(cli.UsageError, match="device"):
        cli.check_device(name)


def test_cpu_and_none_are_fine():
    cli.check_device(None)
    cli.check_device("cpu")


def test_check_writable_probes_without_touching_the_real_name(tmp_path):
    target = tmp_path / "new" / "deeper" / "t.jsonl"
    cli.check_writable(target, "--append")
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # nothing left behind
    existing = tmp_path / "t.jsonl"
    existing.write_text("row\n")
    cli.check_writable(existing, "--append")
    assert existing.read_text() == "row\n"
    with pytest.raises(cli.UsageError, match="is a folder"):
        cli.check_writable(tmp_path, "--plot")
    with pytest.raises(cli.UsageError, match="does not exist; create it first"):
        cli.check_writable(target, "--plot", make_dirs=False)


def test_cli_errors_statuses(capsys):
    for exc, status, line in [(cli.UsageError("bad"), 2, "error: bad"), (OSError(errno.ENOSPC, "No space"), 1, "error: "),
                              (KeyboardInterrupt(), 130, "interrupted"), (ValueError("x"), 1, "error: x")]:
        with pytest.raises(SystemExit) as e:
            with cli.cli_errors(ValueError):
                raise exc
        assert e.value.code == status and capsys.readouterr().err.startswith(line)
    with pytest.raises(RuntimeError):  # anything else is a bug: let the traceback show it
        with cli.cli_errors(ValueError):
            raise RuntimeError("bug")


# ---- make_table ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    for seed, stage in enumerate(["base_pretrained", "sft"]):
        torch.manual_seed(seed)
        save_checkpoint(folder / f"{stage}.pt", GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=256)),
                        {"stage": stage, "calculator": True})
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--synthetic_limit", "0"], "argument --synthetic_limit: must be >= 1"),
    (["--gsm8k_limit", "-1"], "argument --gsm8k_limit: must be >= 1"),
    (["--batch_size", "0"], "argument --batch_size: must be >= 1"),
    (["--device", "warp"], "unknown device 'warp'"),
    (["--out_dir", "/proc/none"], "--out_dir"),
])
def test_make_table_refuses_bad_arguments(capsys, ckpt_dir, argv, message):
    code, out, err = _exit(capsys, load_script("make_table").main, "--ckpt_dir", ckpt_dir, *argv)
    assert code == 2 and out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_make_table_with_no_checkpoints(capsys, tmp_path):
    code, _, err = _exit(capsys, load_script("make_table").main, "--ckpt_dir", tmp_path)
    assert code == 2 and "no checkpoints in" in err and "make checkpoints" in err


def test_make_table_says_in_one_line_when_gsm8k_is_missing(capsys, ckpt_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    monkeypatch.setattr(data, "SHIPPED_DIR", tmp_path / "gone")  # a clone whose data/gsm8k was deleted
    load_script("make_table").main(["--ckpt_dir", str(ckpt_dir), "--out_dir", str(tmp_path / "out"),
                                "--synthetic_limit", "2", "--max_new_tokens", "4", "--no_progress"])
    notes = [line for line in capsys.readouterr().out.splitlines() if "GSM8K" in line and line.startswith("note:")]
    assert len(notes) == 1 and "scoring the synthetic set only" in notes[0] and "set GSM8K_DIR" in notes[0]


def test_make_table_does_not_wipe_rows_it_did_not_write(capsys, ckpt_dir, tmp_path):
    from lessons_lib.stage_table import append_row
    table = tmp_path / "stage_table_synthetic.jsonl"
    append_row(table, {"label": "mine", "n": 5, "correct": 2, "dataset": "synthetic", "split": "test"})
    code, _, err = _exit(capsys, load_script("make_table").main, "--ckpt_dir", ckpt_dir, "--out_dir", tmp_path,
                         "--skip_gsm8k")
    assert code == 2 and "holds rows make table did not write ('mine')" in err
    assert "mine" in table.read_text()


def _table_numbers(out_dir):
    from lessons_lib.stage_table import read_rows
    keep = ("label", "dataset", "n", "correct", "ckpt_sha256", "parent", "control")
    return {d: [{k: r.get(k) for k in keep} for r in read_rows(out_dir / f"stage_table_{d}.jsonl")]
            for d in ("synthetic", "gsm8k")}


def test_make_table_jobs_2_writes_the_same_tables_as_jobs_1(capsys, ckpt_dir, tmp_path):
    make_table = load_script("make_table")
    common = ["--ckpt_dir", str(ckpt_dir), "--synthetic_limit", "3", "--gsm8k_limit", "2",
              "--max_new_tokens", "6", "--no_progress"]
    make_table.main(common + ["--out_dir", str(tmp_path / "one"), "--jobs", "1"])
    make_table.main(common + ["--out_dir", str(tmp_path / "two"), "--jobs", "2"])  # one spawned process per dataset
    one, two = _table_numbers(tmp_path / "one"), _table_numbers(tmp_path / "two")
    assert one == two and [r["label"] for r in one["gsm8k"]] == ["base_pretrained", "sft"]


def test_make_table_reports_a_worker_error_in_one_line(capsys, ckpt_dir, tmp_path):
    bad = tmp_path / "ckpts"
    bad.mkdir()
    (bad / "base_pretrained.pt").write_bytes((ckpt_dir / "base_pretrained.pt").read_bytes()[:500])  # truncated
    code, _, err = _exit(capsys, load_script("make_table").main, "--ckpt_dir", bad, "--out_dir", tmp_path / "out",
                         "--synthetic_limit", "2", "--gsm8k_limit", "2", "--no_progress", "--jobs", "2")
    assert code == 1 and err.startswith("error: ") and "base_pretrained.pt" in err


# ---- bench_generation ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "argument --n: must be >= 1"),
    (["--cache_n", "0"], "argument --cache_n: must be >= 1"),
    (["--max_new_tokens", "0"], "argument --max_new_tokens: must be >= 1"),
    (["--batch_size", "-1"], "argument --batch_size: must be >= 1"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--ckpt", "no/such.pt"], "--ckpt no/such.pt: no such file"),
    (["--n", "2", "--max_new_tokens", "5000"], "--max_new_tokens 5000: the longest of these prompts leaves room"),
])
def test_bench_refuses_bad_arguments(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    code, _, err = _exit(capsys, load_script("bench_generation").main, *argv)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_every_cli_has_help(capsys, monkeypatch):
    from lessons_lib import chat, train_sft
    from lessons_lib.training import stage_cli
    monkeypatch.setattr("sys.argv", ["train_sft", "--help"])
    mains = [load_script(name).main for name in ("eval_post_training", "make_table", "bench_generation")]
    mains += [chat.main, lambda argv: stage_cli(train_sft.SFTConfig(), train_sft.train, "doc")]
    for main in mains:
        code, out, err = _exit(capsys, main, "--help")
        assert code == 0 and out.startswith("usage:") and err == ""


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed -1: use a seed >= 0"),
    (["--teacher", "oracle"], "argument --teacher: invalid choice"),
    (["--use_wandb", "maybe"], "argument --use_wandb: expected true or false"),
    (["--out", "/proc/no/such"], "cannot be written"),
])
def test_pipeline_refuses_bad_arguments_before_training(capsys, argv, message):
    from lessons_lib import pipeline
    code, _, err = _exit(capsys, pipeline.main, *argv)
    assert code == 2 and message in err and err.count("\n") == 1
