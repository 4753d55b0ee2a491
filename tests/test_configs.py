"""One source of truth for the recipe: a stage's own command trains exactly what the pipeline trains.

Each stage's config dataclass carries the shipped recipe as its defaults, and its bounds on its fields.
`make checkpoints` (the pipeline) and `python -m lessons_lib.train_<stage>` with no flags must build
identical configs; the micro preset is the only override.
"""
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from lessons_lib import pipeline, stages
from lessons_lib.checkpoint import load_checkpoint
from lessons_lib.cli import UsageError
from lessons_lib.config import StageConfig
from lessons_lib.training import stage_cli

REPO = Path(__file__).resolve().parent.parent
CLI_STAGE = {"sft_continued": ["--stage", "sft_continued"], "ppo_rm": ["--stage", "ppo_rm"]}  # presets of a trainer


def config_of_command(name, monkeypatch) -> StageConfig:
    """The config `python -m lessons_lib.<trainer>` would train with (training itself replaced)."""
    module = stages.stage(name).train_module()
    config_cls = next(v for v in vars(module).values()
                      if isinstance(v, type) and issubclass(v, StageConfig) and v is not StageConfig
                      and v.__module__ == module.__name__)
    presets = getattr(module, "PRESETS", None)
    seen = {}
    monkeypatch.setattr(sys, "argv", [module.__name__, *CLI_STAGE.get(name, [])])
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)
    stage_cli(config_cls(), lambda cfg, out, use_wandb: seen.setdefault("cfg", cfg) and {}, "doc", presets=presets)
    return seen["cfg"]


@pytest.mark.parametrize("name", [s.name for s in stages.TRAINED_STEPS])
def test_a_stages_own_command_builds_the_pipelines_config(name, monkeypatch):
    monkeypatch.chdir(REPO)  # the commands' defaults point into checkpoints/, as the pipeline's --out does
    sft_best = load_checkpoint(REPO / "checkpoints" / "sft.pt", device="cpu").meta["training"]["best_step"]
    from_pipeline = pipeline.stage_configs(Path("checkpoints"), sft_best_step=sft_best)[name]
    assert config_of_command(name, monkeypatch) == from_pipeline


def test_every_stage_in_the_registry_has_a_config_and_a_trainer():
    cfgs = pipeline.stage_configs(Path("checkpoints"))
    assert set(cfgs) == {s.name for s in stages.TRAINED_STEPS}
    for s in stages.TRAINED_STEPS:
        assert callable(s.train_module().train)
        assert s.parent is None or s.parent in stages.STAGE_NAMES


def test_the_micro_preset_only_overrides_fields_that_exist():
    for name, overrides in pipeline.MICRO.items():
        if name != "test_n":
            assert set(overrides) <= {f.name for f in fields(pipeline.CONFIGS[name]())}, name


@pytest.mark.parametrize("name, change, message", [
    ("grpo", dict(steps=0), "--steps 0: must be >= 1"),
    ("grpo", dict(temperature=0.0), "--temperature 0.0: must be > 0"),
    ("grpo", dict(clip_eps=1.5), "--clip_eps 1.5: must be <= 1"),
    ("sft", dict(teacher="nobody"), "--teacher 'nobody': use one of flawed, gold"),
    ("base_pretrained", dict(n_head=3), "--n_head 3 must divide --n_embd 128"),
    ("ppo", dict(lam=1.5), "--lam 1.5: must be <= 1"),
    ("dpo", dict(beta=float("inf")), "--beta inf: must be a finite number"),
])
def test_bounds_live_on_the_fields(name, change, message):
    cfg = pipeline.CONFIGS[name]().updated(**change)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        cfg.validate()


def test_an_unknown_field_is_refused():
    with pytest.raises(UsageError, match="no field"):
        pipeline.CONFIGS["grpo"]().updated(stepz=3)
