"""Stage 2 -- sft: supervised fine-tuning on chat-formatted worked solutions.

    [BOS][USER] question [EOT][ASSISTANT] worked steps ... <answer>20</answer>[EOT]
                                          ^---------------- loss here only ----------------^

Loss is on the assistant's reply only (the question is given, not predicted), and not on the
characters the calculator forces (`36>>` after `<<3*12=`), which the model never writes itself.

SFT must *settle* before RL is compared to it: we train on a fixed pool of demonstrations and stop
early when the loss on the dev split stops improving (the best dev-loss weights are kept). The test
split is never looked at here. The same module also trains the control `sft_continued`: the SFT
model trained further on the same pool for as long as GRPO trained (`--init checkpoints/sft.pt
--stage sft_continued --early_stop false`), so RL's gain can be measured against "just more SFT".
"""
import copy
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from lessons_lib.config import StageConfig, choice, knob, text
from lessons_lib.synthetic import TEACHER_MISTAKE_RATE, TEACHER_SAMPLES, TEACHERS, teacher_qa_pairs
from lessons_lib.training import (Timer, collate, cycle_batches, dataset_loss, evaluate, lm_loss, load_trainable, lr_at,
                                  save_stage, seed_everything, sft_example, stage_cli, stage_logger, synthetic_pairs)


@dataclass
class SFTConfig(StageConfig):
    """The shipped recipe: 4 flawed-teacher demonstrations of each of 1000 problems, early stopping on
    the teacher's held-out dev loss, at most 2400 steps."""
    seed: int = knob(0, lo=0)
    init: str = text("checkpoints/base_pretrained.pt", help="the checkpoint to fine-tune")
    stage: str = text("sft", help="the checkpoint's name (sft_continued: the control)")
    parent: str = text("base_pretrained", help="the stage it starts from (recorded for the paired test)")
    teacher: str = choice("flawed", TEACHERS, help="who writes the demonstrations (gold: the ablation)")
    teacher_rate: float = knob(TEACHER_MISTAKE_RATE, lo=0, hi=1, help="P(a trap demonstration is flawed)")
    teacher_samples: int = knob(TEACHER_SAMPLES, lo=1, help="demonstrations per problem")
    pool: int = knob(1000, lo=1, help="training problems")
    steps: int = knob(2400, lo=1, help="step budget (early stopping usually ends sooner)")
    decay_steps: int = knob(1800, lo=1, help="the cosine decay ends here; the rate then holds at its floor")
    batch_size: int = knob(16, lo=1)
    lr: float = knob(3e-3, lo=0, above=True)
    min_lr_frac: float = knob(0.1, lo=0, hi=1, help="the floor, as a fraction of lr (1: constant)")
    warmup: int = knob(20, lo=0)
    eval_every: int = knob(50, lo=1, help="steps between dev-loss evaluations (early stopping)")
    acc_every: int = knob(400, lo=1, help="steps between dev-accuracy evaluations (generation: slow)")
    patience: int = knob(6, lo=1, help="evaluations without a better dev loss before stopping")
    early_stop: bool = True
    dev_loss_n: int = knob(200, lo=1)
    dev_acc_n: int = knob(100, lo=1)
    max_new_tokens: int = knob(160, lo=1, help="generation budget of the dev-accuracy evaluations")


def control_config(sft: SFTConfig, best_step: int, steps: int, batch_size: int, init: str) -> SFTConfig:
    """The compute-matched control `sft_continued`: SFT trained on from the kept checkpoint (`init`),
    same demonstrations, for `steps` optimizer steps of `batch_size` (what GRPO trained for), at the
    learning rate SFT had at the step it kept, held constant, without early stopping."""
    return sft.updated(init=init, stage="sft_continued", parent="sft", early_stop=False, steps=steps,
                       batch_size=batch_size, lr=sft_lr(best_step, sft), min_lr_frac=1.0, warmup=1,
                       eval_every=max(1, steps // 4), acc_every=max(1, steps // 4))


def control_from_checkpoint(init: str = "checkpoints/sft.pt") -> SFTConfig:
    """The control's recipe as `python -m lessons_lib.train_sft --stage sft_continued` builds it: SFT's
    own config and kept step read from `init`, GRPO's shipped recipe for the amount of training."""
    from lessons_lib.checkpoint import load_checkpoint
    from lessons_lib.train_grpo import GRPOConfig, optimizer_steps_and_batch
    if not Path(init).is_file():
        from lessons_lib.cli import UsageError
        raise UsageError(f"--init {init}: no such file (the control starts from SFT: train it first)")
    training = dict(load_checkpoint(init, device="cpu").meta.get("training", {}))
    best_step = training.pop("best_step", None)
    for key in ("steps_run", "seconds"):
        training.pop(key, None)
    sft = SFTConfig.from_dict(training)
    steps, batch = optimizer_steps_and_batch(GRPOConfig())
    return control_config(sft, best_step or sft.steps, steps, batch, init)


def sft_lr(step: int, cfg: SFTConfig) -> float:
    """SFT's rate at optimizer step `step` (from 1): `training.lr_at` with warmup, then a cosine decay
    that ends at `decay_steps` (at most `steps`) and holds at `min_lr_frac * lr`, so that dev loss
    can settle and early stopping stops on overfitting, not on the noise of a high rate.
    (min_lr_frac = 1 is a constant rate, as the control `sft_continued` uses.)"""
    return lr_at(step, lr=cfg.lr, warmup=cfg.warmup, decay_end=min(cfg.decay_steps, cfg.steps), floor=cfg.min_lr_frac)


PRESETS = {"sft_continued": control_from_checkpoint}  # --stage sft_continued: the control's recipe


def train(cfg: SFTConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """Fine-tune cfg.init; write out_dir/<stage>.pt and logs/<stage>.jsonl."""
    seed_everything(cfg.seed)
    timer = Timer()
    demos = teacher_qa_pairs("train", cfg.pool, cfg.teacher, cfg.teacher_rate, cfg.teacher_samples)  # the fixed pool
    pool = [sft_example(q, a) for q, a in demos]
    dev_pairs = synthetic_pairs("dev", cfg.dev_acc_n)  # accuracy: against the gold answers
    dev = [sft_example(q, a) for q, a in  # loss: the teacher's held-out demonstrations, as in practice
           teacher_qa_pairs("dev", cfg.dev_loss_n, cfg.teacher, cfg.teacher_rate)]
    gold_dev = [sft_example(q, a) for q, a in synthetic_pairs("dev", cfg.dev_loss_n)]  # logged, never used to choose
    model = load_trainable(cfg.init)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    batches = cycle_batches(pool, cfg.batch_size, random.Random(cfg.seed))
    best = {"dev_loss": dataset_loss(model, dev), "step": 0, "state": copy.deepcopy(model.state_dict())}
    bad_evals, train_losses = 0, []
    with stage_logger(out_dir, cfg.stage, cfg, use_wandb) as log:
        log.log(0, dev_loss=best["dev_loss"])
        for step in tqdm(range(1, cfg.steps + 1), desc=cfg.stage, disable=not progress):
            for group in opt.param_groups:
                group["lr"] = sft_lr(step, cfg)
            loss = lm_loss(model, *collate(*zip(*next(batches))))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            train_losses.append(loss.item())
            if step % cfg.eval_every and step != cfg.steps:
                continue
            dev_loss = dataset_loss(model, dev)  # cheap (no generation): the early-stopping signal
            extra = {}
            if step % cfg.acc_every == 0 or step == cfg.steps:  # generation is the expensive part
                extra["dev_acc"] = evaluate(model, dev_pairs[:cfg.dev_acc_n], cfg.max_new_tokens)
            log.log(step, train_loss=sum(train_losses) / len(train_losses), dev_loss=dev_loss,
                    gold_dev_loss=dataset_loss(model, gold_dev), **extra)
            train_losses = []
            if dev_loss < best["dev_loss"] or not cfg.early_stop:
                best = {"dev_loss": dev_loss, "step": step, "state": copy.deepcopy(model.state_dict())}
                bad_evals = 0
                save_stage(out_dir, cfg.stage, model, parent=cfg.parent,  # a usable file even if stopped
                           training={**cfg.to_dict(), "best_step": step, "steps_run": step, "seconds": timer.seconds})
            else:
                bad_evals += 1
                if bad_evals >= cfg.patience:
                    break  # settled: dev loss stopped improving `patience` evals in a row
    model.load_state_dict(best["state"])
    save_stage(out_dir, cfg.stage, model, parent=cfg.parent,
               training={**cfg.to_dict(), "best_step": best["step"], "steps_run": step, "seconds": timer.seconds})
    return {"stage": cfg.stage, "seconds": timer.seconds, "best_step": best["step"], "steps_run": step,
            "dev_loss": round(best["dev_loss"], 4)}


if __name__ == "__main__":
    stage_cli(SFTConfig(), train, __doc__.splitlines()[0], presets=PRESETS)
