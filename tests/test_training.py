"""The shared training pieces: SFT masks, batching, RL masks and log-probs; the stage CLIs' checks."""
import sys

import pytest
import torch

from lessons_lib import train_base, train_grpo, train_sft
from lessons_lib.checkpoint import load_checkpoint
from lessons_lib.generation import Generation
from lessons_lib.tokenizer import EOT, PAD, decode, encode, encode_prompt
from lessons_lib.train_sft import SFTConfig, sft_lr as lr_at
from lessons_lib.training import (collate, lm_loss, new_model, rollout_batch, sequence_logprobs,
                                  sft_example, sft_target, stage_cli)

CONFIG_OF = {train_base: train_base.BaseConfig, train_sft: SFTConfig, train_grpo: train_grpo.GRPOConfig}
QUESTION = "Mia has 3 boxes of 4 pens. How many pens?"
ANSWER = "<<3*4=12>>12 pens\n#### 12"


def test_sft_target_ends_with_answer_tag():
    assert sft_target(ANSWER) == "<<3*4=12>>12 pens\n<answer>12</answer>"


def test_sft_mask_covers_reply_but_not_prompt_or_forced_tokens():
    ids, mask = sft_example(QUESTION, ANSWER)
    prompt = encode_prompt([{"role": "user", "content": QUESTION}])
    assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)])
    assert ids[-1] == EOT and mask[-1] == 1  # the model learns to stop
    trained = decode([i for i, m in zip(ids, mask) if m])
    assert trained == "<<3*4=12 pens\n<answer>12</answer>"  # '12>>' is forced by the calculator


def test_collate_right_pads_with_zero_mask():
    idx, mask = collate([[1, 2, 3], [4]], [[0, 1, 1], [1]])
    assert idx.tolist() == [[1, 2, 3], [4, PAD, PAD]]
    assert mask.tolist() == [[0, 1, 1], [1, 0, 0]]


def test_rollout_masks_exclude_prompt_padding_and_forced():
    gens = [Generation("a", [97, 98, EOT], [False, True, False], True), Generation("b", [99], [False], False)]
    idx, policy, response = rollout_batch([[1, 2], [3, 4, 5]], gens)
    assert idx.tolist() == [[1, 2, 97, 98, EOT], [3, 4, 5, 99, PAD]]
    assert policy.tolist() == [[0, 0, 1, 0, 1], [0, 0, 0, 1, 0]]
    assert response.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 0]]


def test_logprobs_and_loss_agree_and_padding_does_not_leak():
    torch.manual_seed(0)
    model = new_model(train_base.BaseConfig(n_layer=1, n_head=2, n_embd=16, max_seq_len=64)).eval()
    seq = encode("hello")
    alone = sequence_logprobs(model, torch.tensor([seq]))
    idx, mask = collate([seq, seq + encode(" world")], [[1] * 5, [1] * 11])
    batched = sequence_logprobs(model, idx)
    assert torch.allclose(alone[0], batched[0, :4], atol=1e-5)  # right padding never seen by real tokens
    loss = lm_loss(model, torch.tensor([seq]), torch.ones(1, 5))
    assert torch.allclose(loss, -alone.mean(), atol=1e-5)


def test_sft_lr_schedule_warmup_then_cosine_floor():
    cfg = SFTConfig(lr=1.0, warmup=10, steps=110, decay_steps=110, min_lr_frac=0.1)
    assert lr_at(1, cfg) == 0.1 and lr_at(5, cfg) == 0.5 and lr_at(10, cfg) == 1.0  # step 1 already learns
    assert abs(lr_at(110, cfg) - 0.1) < 1e-9 and abs(lr_at(60, cfg) - 0.55) < 1e-9
    assert lr_at(50, cfg.updated(min_lr_frac=1.0)) == 1.0  # the control's constant rate
    early = cfg.updated(decay_steps=60)  # the decay ends at step 60, then the floor holds
    assert abs(lr_at(35, early) - 0.55) < 1e-9 and abs(lr_at(60, early) - 0.1) < 1e-9 and lr_at(100, early) == lr_at(60, early)
    assert lr_at(110, cfg.updated(decay_steps=500)) == lr_at(110, cfg)  # never past the step budget


def test_base_and_sft_share_one_schedule():
    # one definition (`training.lr_at`, steps counted from 1): base anneals to 10% at its last step
    from lessons_lib import training
    base = train_base.BaseConfig(lr=1.0, warmup=10, steps=110)
    rates = [training.lr_at(s, lr=base.lr, warmup=base.warmup, decay_end=base.steps, floor=0.1) for s in (1, 10, 110)]
    assert rates == pytest.approx([0.1, 1.0, 0.1])
    assert train_base.lr_at is training.lr_at and train_sft.lr_at is training.lr_at


# ---------------------------------------------------------------- the trainers' CLIs refuse bad arguments


@pytest.mark.parametrize("module, argv, message", [
    (train_sft, ["--steps", "0"], "--steps 0: must be >= 1"),
    (train_sft, ["--batch_size", "-4"], "--batch_size -4: must be >= 1"),
    (train_sft, ["--lr", "0"], "--lr 0.0: must be > 0"),
    (train_sft, ["--lr", "nan"], "--lr nan: must be a finite number"),
    (train_sft, ["--min_lr_frac", "2"], "--min_lr_frac 2.0: must be <= 1"),
    (train_sft, ["--teacher", "nobody"], "--teacher 'nobody': use one of flawed, gold"),
    (train_sft, ["--early_stop", "maybe"], "argument --early_stop: expected true or false"),
    (train_sft, ["--threads", "0"], "argument --threads: must be >= 1"),
    (train_sft, ["--init", "no/such.pt"], "--init no/such.pt: no such file"),
    (train_base, ["--n_head", "3"], "--n_head 3 must divide --n_embd 128"),
    (train_base, ["--max_seq_len", "0"], "--max_seq_len 0: must be >= 1"),
    (train_grpo, ["--temperature", "-1"], "--temperature -1.0: must be > 0"),
    (train_grpo, ["--kl_coef", "-0.1"], "--kl_coef -0.1: must be >= 0"),
    (train_grpo, ["--minibatches", "65"], "--minibatches 65 exceeds the 64 rollouts of a step"),
    (train_grpo, ["--out", "/proc/nope"], "--out /proc/nope/logs/stage.jsonl cannot be written"),
])
def test_stage_cli_refuses_bad_arguments_before_training(monkeypatch, capsys, tmp_path, module, argv, message):
    monkeypatch.chdir(tmp_path)  # --init/--pairs defaults point into checkpoints/: make them exist
    (tmp_path / "checkpoints" / "logs").mkdir(parents=True)
    for name in ("base_pretrained.pt", "sft.pt", "logs/preference_pairs.jsonl"):
        (tmp_path / "checkpoints" / name).write_text("")
    monkeypatch.setattr("sys.argv", ["train", *argv])
    def never(*a):
        raise AssertionError("training started")
    with pytest.raises(SystemExit) as e:
        stage_cli(CONFIG_OF[module](), never, "doc")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_stage_cli_accepts_the_defaults(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "base_pretrained.pt").write_text("")
    monkeypatch.setattr("sys.argv", ["train"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave the test process's threads alone
    seen = {}
    stage_cli(SFTConfig(), lambda cfg, out, use_wandb: seen.update(cfg=cfg, out=out, wandb=use_wandb) or {"ok": 1}, "doc")
    assert seen["cfg"] == SFTConfig() and seen["out"].name == "checkpoints" and seen["wandb"] is False


# ---------------------------------------------------------------- --use_wandb (the seed's metrics flag)

def _tiny_base_cfg(**extra):
    from lessons_lib import pipeline, train_base
    return train_base.BaseConfig(**{**pipeline.MICRO["base_pretrained"], "steps": 3, "log_every": 1, **extra})


def test_use_wandb_mirrors_every_logged_line_to_wandb(tmp_path, monkeypatch):
    import types
    from lessons_lib import train_base
    from lessons_lib.metrics import read_metrics
    calls = {"log": [], "finished": 0}

    class Run:
        def log(self, values, step):
            calls["log"].append({"step": step, **values})

        def finish(self):
            calls["finished"] += 1

    def init(project, name, config, mode):
        calls.update(project=project, name=name, config=config, mode=mode)
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))  # a stand-in module
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train_base.train(_tiny_base_cfg(), tmp_path, progress=False, use_wandb=True)
    assert calls["log"] == read_metrics(tmp_path / "logs" / "base_pretrained.jsonl")  # the same numbers
    assert calls["mode"] == "offline" and calls["name"] == "base_pretrained" and calls["finished"] == 1
    assert "use_wandb" not in calls["config"] and calls["config"]["steps"] == 3
    assert "use_wandb" not in load_checkpoint(tmp_path / "base_pretrained.pt").meta["training"]


def test_use_wandb_without_wandb_says_so_and_trains_on(tmp_path, monkeypatch, capsys):
    from lessons_lib import train_base
    from lessons_lib.metrics import read_metrics
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    train_base.train(_tiny_base_cfg(), tmp_path, progress=False, use_wandb=True)
    assert "wandb is not installed" in capsys.readouterr().err
    assert len(read_metrics(tmp_path / "logs" / "base_pretrained.jsonl")) == 3
    assert (tmp_path / "base_pretrained.pt").exists()


def test_pipeline_passes_the_seed_to_every_stage_and_keeps_use_wandb_out_of_the_recipe(tmp_path):
    from dataclasses import fields
    from lessons_lib import pipeline
    cfgs = pipeline.stage_configs(tmp_path, micro=True, seed=2)
    assert all(c.seed == 2 and "use_wandb" not in {f.name for f in fields(c)} for c in cfgs.values())


def test_first_lane_rerun_is_bit_identical(tmp_path):
    """Base and SFT train on FIRST_LANE_THREADS threads: a rerun must give the same weights. (At this size;
    full-size reruns were checked by hand, see docs/pipeline_experiments.md.)"""
    from lessons_lib.pipeline import FIRST_LANE_THREADS
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(FIRST_LANE_THREADS)
        states = []
        for run in ("a", "b"):
            train_base.train(_tiny_base_cfg(n_embd=64, n_head=4, n_layer=2, steps=4), tmp_path / run, progress=False)
            states.append(load_checkpoint(tmp_path / run / "base_pretrained.pt").state_dict())
    finally:
        torch.set_num_threads(threads)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
