"""The whole pipeline on the micro config (~2 minutes): every stage trains, writes a checkpoint
that loads, a metrics log, and a manifest with accuracies, intervals and sha256s."""
import hashlib
import json

import pytest

from lessons_lib.checkpoint import load_checkpoint
from lessons_lib.metrics import read_metrics
from lessons_lib.pipeline import STAGES, run


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoints")
    manifest = run(out, micro=True, progress=False)
    return out, manifest


def test_every_checkpoint_loads_with_stage_meta(micro_run):
    out, _ = micro_run
    for stage in STAGES:
        model = load_checkpoint(out / f"{stage}.pt", device="cpu")
        assert model.meta["stage"] == stage and model.calculator is True
        assert model.meta["parent"] == {"base_pretrained": None, "sft": "base_pretrained"}.get(stage, "sft")


def test_metrics_logs_written(micro_run):
    out, _ = micro_run
    for name in STAGES + ["reward_model"]:
        rows = read_metrics(out / "logs" / f"{name}.jsonl")
        assert rows and all("step" in r for r in rows)
    grpo = read_metrics(out / "logs" / "grpo.jsonl")
    assert {"reward", "kl", "clip_frac", "groups_with_spread"} <= set(grpo[-1])
    assert {"reward", "kl", "clip_frac", "value_loss"} <= set(read_metrics(out / "logs" / "ppo.jsonl")[-1])
    assert "implicit_acc" in read_metrics(out / "logs" / "dpo.jsonl")[0]
    assert "heldout_pref_acc" in read_metrics(out / "logs" / "reward_model.jsonl")[0]
    assert "dev_loss" in read_metrics(out / "logs" / "sft.jsonl")[-1]


def test_manifest_is_complete_and_consistent(micro_run):
    out, manifest = micro_run
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for stage in STAGES:
        entry = manifest["stages"][stage]
        assert entry["sha256"] == hashlib.sha256((out / f"{stage}.pt").read_bytes()).hexdigest()
        assert 0.0 <= entry["ci95"][0] <= entry["accuracy"] <= entry["ci95"][1] <= 1.0
        assert entry["n"] == manifest["test_set"]["n"] and entry["parameters"] > 0
    assert "final_kl" in manifest["stages"]["grpo"] and "final_kl" in manifest["stages"]["ppo"]
    assert manifest["seed"] == 0 and manifest["teacher"]["name"] == "flawed"
    assert 0.0 < manifest["teacher"]["pool_accuracy"] < 1.0  # the flawed teacher's demonstrations: some wrong
    assert set(manifest["phase_seconds"]) == {"base_and_sft", "rl_lanes", "scoring"}
    for stage in STAGES:  # trap kinds vs clean kinds, and copies of the teacher's wrong answers
        entry = manifest["stages"][stage]
        assert 0.0 <= entry["trap_acc"] <= 1.0 and 0.0 <= entry["clean_acc"] <= 1.0 and entry["copies_teacher"] >= 0
        assert "use_wandb" not in entry["config"]
    assert 0.0 <= manifest["comparisons"]["grpo_vs_sft"]["p"] <= 1.0
    # the control takes as many optimizer steps, of as many sequences, as GRPO did (every epoch counted)
    cont, grpo = manifest["stages"]["sft_continued"]["config"], manifest["stages"]["grpo"]["config"]
    assert cont["steps"] == grpo["steps"] * grpo["epochs"] * grpo["minibatches"]
    assert cont["steps"] * cont["batch_size"] == grpo["steps"] * grpo["epochs"] * grpo["prompts_per_step"] * grpo["group_size"]
    for name in ("ppo", "ppo_rm", "grpo"):  # what each RL stage did, in the papers' terms
        rl = manifest["rl"][name]
        assert rl["temperature"] == manifest["stages"][name]["config"]["temperature"] and rl["epochs"] >= 1
        assert 0.0 <= rl["mean_clip_frac"] <= 1.0 and rl["loss_agg"]
    assert manifest["rl"]["ppo_rm"]["reward"] == "reward_model" and manifest["rl"]["ppo"]["reward"] == "verifier"
    assert {"ppo_rm_vs_ppo", "ppo_rm_vs_sft", "sft_vs_base_pretrained"} <= set(manifest["comparisons"])


def test_compare_says_whether_two_runs_hold_the_same_weights(micro_run, tmp_path, capsys):
    import shutil
    import torch
    from lessons_lib.checkpoint import save_checkpoint
    from lessons_lib.pipeline import main, same_weights
    out, _ = micro_run
    copy = tmp_path / "rerun"
    shutil.copytree(out, copy)
    assert all(same_weights(out, copy).values())
    model = load_checkpoint(copy / "grpo.pt", device="cpu")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp-ish nudge
    save_checkpoint(copy / "grpo.pt", model, model.meta)
    assert same_weights(out, copy) == {s: s != "grpo" for s in STAGES}
    with pytest.raises(SystemExit) as e:
        main(["--out", str(out), "--compare", str(copy)])
    assert e.value.code == 1 and "grpo             DIFFERENT" in capsys.readouterr().out


def test_resume_reuses_what_was_trained_with_the_same_recipe_and_nothing_else(micro_run, tmp_path, capfd):
    import shutil
    from lessons_lib import pipeline
    out, manifest = micro_run
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    cfgs = pipeline.stage_configs(copy, micro=True, sft_best_step=manifest["stages"]["sft"]["best_step"])
    assert pipeline.reusable_summary(copy, "grpo", cfgs["grpo"]) is not None
    assert pipeline.reusable_summary(copy, "grpo", cfgs["grpo"].updated(lr=3e-4)) is None  # another recipe
    (copy / "dpo.pt").write_bytes((copy / "dpo.pt").read_bytes() + b"\0")  # not the file that run wrote
    assert pipeline.reusable_summary(copy, "dpo", cfgs["dpo"]) is None
    capfd.readouterr()
    resumed = run(copy, micro=True, progress=False, resume=True)
    printed = capfd.readouterr().out
    assert "dpo              done in" in printed  # retrained: its checkpoint had changed
    assert all(f"{s:16s} reused" in printed for s in pipeline.STAGES + ["reward_model"] if s != "dpo")
    assert {s: resumed["stages"][s]["accuracy"] for s in STAGES} == {s: manifest["stages"][s]["accuracy"] for s in STAGES}
