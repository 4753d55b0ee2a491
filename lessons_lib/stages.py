"""The stage registry: which stages exist, what trains each, which it starts from, what it is compared with.

One list, imported everywhere a stage is named (the pipeline, `make table`, the seeds table, the
notebooks): adding a stage is one line here plus its trainer. Order is the table's order.

    name             trainer module       parent (paired test)   control (paired test)
    base_pretrained  train_base           -                      -
    sft              train_sft            base_pretrained        -
    dpo              train_dpo            sft                    sft_continued
    ppo              train_ppo            sft                    sft_continued
    ppo_rm           train_ppo            sft                    sft_continued   (PPO on the reward model)
    grpo             train_grpo           sft                    sft_continued
    sft_continued    train_sft            sft                    -      (the control itself)

`reward_model` is trained too (preference pairs for DPO, the learned reward of `ppo_rm`), but it is not a
policy, so it has no row in the table: it is listed in `TRAINED_STEPS` only. A stage trained by another
stage's module (`ppo_rm` by `train_ppo`) gets its recipe from that module's `--stage` preset.
"""
from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class Stage:
    name: str
    trainer: str              # lessons_lib module whose `train(cfg, out_dir)` makes <name>.pt
    parent: str | None        # the checkpoint it starts from: its paired test in the table
    control: str | None = None  # the compute-matched control it is also pair-tested against
    is_control: bool = False  # a control, not a stage of the pipeline (drawn hatched, marked "(control)")

    def train_module(self):
        return import_module(f"lessons_lib.{self.trainer}")


STAGES = (
    Stage("base_pretrained", "train_base", parent=None),
    Stage("sft", "train_sft", parent="base_pretrained"),
    Stage("dpo", "train_dpo", parent="sft", control="sft_continued"),
    Stage("ppo", "train_ppo", parent="sft", control="sft_continued"),
    Stage("ppo_rm", "train_ppo", parent="sft", control="sft_continued"),
    Stage("grpo", "train_grpo", parent="sft", control="sft_continued"),
    Stage("sft_continued", "train_sft", parent="sft", is_control=True),
)
REWARD_MODEL = Stage("reward_model", "train_reward_model", parent="sft")
TRAINED_STEPS = STAGES + (REWARD_MODEL,)  # everything `make checkpoints` trains

STAGE_NAMES = [s.name for s in STAGES]
BY_NAME = {s.name: s for s in TRAINED_STEPS}
PARENT = {s.name: s.parent for s in STAGES if s.parent}
CONTROL = {s.name: s.control for s in STAGES if s.control}
CONTROLS = [s.name for s in STAGES if s.is_control]


def stage(name: str) -> Stage:
    """The registry entry of `name` (a KeyError names the known stages)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; the stages are {', '.join(BY_NAME)}") from None
