"""scripts/eval_post_training.py: the seed's CLI, rows, records, duplicate labels, errors, torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lessons_lib.checkpoint import save_checkpoint
from lessons_lib.model import GPT, GPTConfig
from helpers import load_script
from lessons_lib.jsonl import read_jsonl
from lessons_lib.stage_table import read_rows

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "eval_post_training.py"
evalpt = load_script("eval_post_training")


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory):
    """Two seeded random checkpoints (1 layer, 32 dims): 'base' and 'sft' whose meta names its parent."""
    folder = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for seed, (stage, parent) in enumerate([("base_pretrained", None), ("sft", "base_pretrained")]):
        torch.manual_seed(seed)
        model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=256))
        meta = {"stage": stage, "calculator": True, **({"parent": parent} if parent else {})}
        paths[stage] = save_checkpoint(folder / f"{stage}.pt", model, meta)
    return paths


def _score(ckpt, table, label, *extra, limit=6):
    return evalpt.main(["--ckpt", str(ckpt), "--label", label, "--limit", str(limit), "--append", str(table),
                        "--dataset", "synthetic", "--max_new_tokens", "8", "--no_progress", *extra])


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        evalpt.parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--ckpt", "--label", "--limit", "--append", "--table", "--dataset", "--split", "--max_new_tokens",
                 "--batch_size", "--device", "--strategy", "--records", "--markdown", "--parent", "--control"]:
        assert flag in out
    assert "latest row wins" in out


def test_runs_as_a_script_without_installing():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         cwd="/", env={**os.environ, "PYTHONPATH": ""}, timeout=60)
    assert out.returncode == 0 and "--append" in out.stdout


def test_needs_ckpt_or_table(capsys):
    with pytest.raises(SystemExit) as e:
        evalpt.parse_args([])
    assert e.value.code == 2 and "--ckpt" in capsys.readouterr().err


def test_scores_one_checkpoint_and_appends_one_row(tiny_ckpts, tmp_path, capsys):
    table = tmp_path / "stage_table.jsonl"
    _score(tiny_ckpts["base_pretrained"], table, "base_pretrained")
    _score(tiny_ckpts["sft"], table, "sft")
    rows = read_rows(table)
    assert [r["label"] for r in rows] == ["base_pretrained", "sft"]
    row = rows[1]
    for key in ["ckpt", "ckpt_sha256", "dataset", "split", "n", "correct", "accuracy", "max_new_tokens",
                "strategy", "seconds", "tokens_per_s", "lessons_lib_version", "records"]:
        assert row[key] is not None, key
    assert (row["dataset"], row["split"], row["n"], row["max_new_tokens"]) == ("synthetic", "test", 6, 8)
    assert row["strategy"] == "pad" and row["parent"] == "base_pretrained"  # parent read from the meta
    assert row["accuracy"] == row["correct"] / 6 and len(row["ckpt_sha256"]) == 64
    records = read_jsonl(row["records"])
    assert [r["index"] for r in records] == list(range(6))
    assert sum(r["correct"] for r in records) == row["correct"]
    assert "sft: " in capsys.readouterr().out


def test_table_renders_like_the_seed_with_paired_test(tiny_ckpts, tmp_path, capsys):
    table = tmp_path / "t.jsonl"
    _score(tiny_ckpts["base_pretrained"], table, "base_pretrained")
    _score(tiny_ckpts["sft"], table, "sft")
    capsys.readouterr()
    evalpt.main(["--table", str(table), "--plot", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    header = out.splitlines()[1]
    assert header.split()[:3] == ["stage", "synthetic", "acc"] and "95% CI" in header and "n" in header
    assert "vs base_pretrained" in out  # the paired McNemar cell for sft
    assert (tmp_path / "p.png").exists()
    evalpt.main(["--table", str(table), "--markdown"])
    assert "| stage |" in capsys.readouterr().out


def test_duplicate_label_latest_row_wins(tiny_ckpts, tmp_path, capsys):
    table = tmp_path / "t.jsonl"
    _score(tiny_ckpts["sft"], table, "sft", limit=3)
    _score(tiny_ckpts["sft"], table, "sft", limit=5)
    assert len(read_rows(table)) == 2  # the log keeps both
    capsys.readouterr()
    evalpt.main(["--table", str(table)])
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("sft")] == ["5"]
    assert "replaced by the latest" in out


def test_broken_table_line_names_file_and_line_and_the_rest_renders(tmp_path, capsys):
    table = tmp_path / "t.jsonl"
    table.write_text('{"label": "sft", "n": 1, "correct": 0}\n{oops\n')
    with pytest.warns(UserWarning, match=rf"{table}:2: not valid JSON"):
        evalpt.main(["--table", str(table)])
    assert capsys.readouterr().out.splitlines()[3].startswith("sft ")


def test_records_none_and_explicit_parent_control(tiny_ckpts, tmp_path):
    table = tmp_path / "t.jsonl"
    _score(tiny_ckpts["sft"], table, "grpo", "--records", "none", "--parent", "sft", "--control", "sft_continued",
           limit=2)
    row = read_rows(table)[0]
    assert row["records"] is None and (row["parent"], row["control"]) == ("sft", "sft_continued")


def test_torchrun_two_processes_match_one_process(tiny_ckpts, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    _score(tiny_ckpts["sft"], one, "sft", limit=5)  # 5 questions over 2 ranks: uneven shards (3 + 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "--ckpt", str(tiny_ckpts["sft"]), "--label", "sft", "--limit", "5", "--append", str(two),
           "--dataset", "synthetic", "--max_new_tokens", "8", "--device", "cpu", "--no_progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    [row1], [row2] = read_rows(one), read_rows(two)  # rank 0 wrote exactly one row
    assert row2["world_size"] == 2 and row1["world_size"] == 1
    assert (row2["n"], row2["correct"]) == (row1["n"], row1["correct"])
    keep = ("index", "question", "response", "extracted", "gold", "correct", "reward")
    strip = lambda recs: [{k: r[k] for k in keep} for r in recs]
    assert strip(read_jsonl(row2["records"])) == strip(read_jsonl(row1["records"]))


def test_make_table_driver_on_tiny_checkpoints(tiny_ckpts, tmp_path, capsys):
    make_table = load_script("make_table")
    out_dir = tmp_path / "results"
    make_table.main(["--ckpt_dir", str(tiny_ckpts["sft"].parent), "--out_dir", str(out_dir), "--skip_gsm8k",
                     "--synthetic_limit", "4", "--max_new_tokens", "4", "--no_progress"])
    out = capsys.readouterr().out
    assert "missing dpo, ppo, ppo_rm, grpo, sft_continued" in out
    assert "[synthetic / test]" in out and "vs base_pretrained" in out
    assert [r["label"] for r in read_rows(out_dir / "stage_table_synthetic.jsonl")] == ["base_pretrained", "sft"]
    assert (out_dir / "stage_table.png").exists() and "| stage |" in (out_dir / "stage_table.md").read_text()


@pytest.mark.parametrize("stage", ["base_pretrained", "sft", "dpo", "ppo", "grpo", "sft_continued"])
def test_shipped_checkpoint_scores(stage, tmp_path):
    ckpt = REPO / "checkpoints" / f"{stage}.pt"
    if not ckpt.exists():
        pytest.skip(f"{ckpt} not built yet (make checkpoints)")
    table = tmp_path / "t.jsonl"
    evalpt.main(["--ckpt", str(ckpt), "--label", stage, "--limit", "8", "--append", str(table),
                 "--dataset", "synthetic", "--no_progress"])
    [row] = read_rows(table)
    assert row["ckpt"] == f"checkpoints/{stage}.pt"  # inside the repo: stored relative
    assert row["n"] == 8 and row["stage"] == stage
