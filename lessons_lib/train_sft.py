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
import math
import random

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from lessons_lib.synthetic import TEACHER_MISTAKE_RATE, TEACHER_SAMPLES, teacher_qa_pairs
from lessons_lib.training import (Timer, collate, cycle_batches, dataset_loss, evaluate, lm_loss,
                                  load_trainable, qa, save_stage, seed_everything, sft_example, stage_cli,
                                  stage_logger)

DEFAULTS = dict(seed=0, init="checkpoints/base_pretrained.pt", stage="sft", parent="base_pretrained",
                teacher="flawed", teacher_rate=TEACHER_MISTAKE_RATE, teacher_samples=TEACHER_SAMPLES, pool=1000,
                steps=2400, decay_steps=1800, batch_size=16, lr=3e-3, min_lr_frac=0.1, warmup=20, eval_every=50, acc_every=400, patience=6,
                early_stop=True, dev_loss_n=200, dev_acc_n=100, max_new_tokens=256)


def lr_at(step: int, cfg: dict) -> float:
    """Linear warmup, then cosine decay from lr to min_lr_frac * lr by step `decay_steps` (at most
    `steps`), then flat at the floor. Ending the decay before the step budget lets SFT sit at a low
    rate where dev loss can settle, so early stopping stops on overfitting, not on the noise of a
    high rate. (Set min_lr_frac=1 for a constant rate, as the control `sft_continued` does.)"""
    if step < cfg["warmup"]:
        return cfg["lr"] * step / cfg["warmup"]
    decay = min(cfg.get("decay_steps", cfg["steps"]), cfg["steps"])
    progress = min(1.0, (step - cfg["warmup"]) / max(1, decay - cfg["warmup"]))
    return cfg["lr"] * (cfg["min_lr_frac"] + (1 - cfg["min_lr_frac"]) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: dict, out_dir, progress: bool = True) -> dict:
    """Fine-tune cfg["init"]; write out_dir/<stage>.pt and logs/<stage>.jsonl."""
    seed_everything(cfg["seed"])
    timer = Timer()
    demos = teacher_qa_pairs("train", cfg["pool"], cfg["teacher"], cfg["teacher_rate"],  # the fixed pool
                             cfg["teacher_samples"])
    pool = [sft_example(q, a) for q, a in demos]
    dev_pairs = qa("dev", cfg["dev_acc_n"])  # accuracy: against the gold answers
    dev = [sft_example(q, a) for q, a in  # loss: the teacher's held-out demonstrations, as in practice
           teacher_qa_pairs("dev", cfg["dev_loss_n"], cfg["teacher"], cfg["teacher_rate"])]
    gold_dev = [sft_example(q, a) for q, a in qa("dev", cfg["dev_loss_n"])]  # logged, never used to choose
    model = load_trainable(cfg["init"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    batches = cycle_batches(pool, cfg["batch_size"], random.Random(cfg["seed"]))
    best = {"dev_loss": dataset_loss(model, dev), "step": 0, "state": copy.deepcopy(model.state_dict())}
    bad_evals, train_losses = 0, []
    with stage_logger(out_dir, cfg["stage"], cfg) as log:
        log.log(0, dev_loss=best["dev_loss"])
        for step in tqdm(range(1, cfg["steps"] + 1), desc=cfg["stage"], disable=not progress):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss = lm_loss(model, *collate(*zip(*next(batches))))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            train_losses.append(loss.item())
            if step % cfg["eval_every"] and step != cfg["steps"]:
                continue
            dev_loss = dataset_loss(model, dev)  # cheap (no generation): the early-stopping signal
            extra = {}
            if step % cfg["acc_every"] == 0 or step == cfg["steps"]:  # generation is the expensive part
                extra["dev_acc"] = evaluate(model, dev_pairs[:cfg["dev_acc_n"]], cfg["max_new_tokens"])
            log.log(step, train_loss=sum(train_losses) / len(train_losses), dev_loss=dev_loss,
                    gold_dev_loss=dataset_loss(model, gold_dev), **extra)
            train_losses = []
            if dev_loss < best["dev_loss"] or not cfg["early_stop"]:
                best = {"dev_loss": dev_loss, "step": step, "state": copy.deepcopy(model.state_dict())}
                bad_evals = 0
                save_stage(out_dir, cfg["stage"], model, parent=cfg["parent"],  # a usable file even if stopped
                           training={**cfg, "best_step": step, "steps_run": step, "seconds": timer.seconds})
            else:
                bad_evals += 1
                if bad_evals >= cfg["patience"]:
                    break  # settled: dev loss stopped improving `patience` evals in a row
    model.load_state_dict(best["state"])
    save_stage(out_dir, cfg["stage"], model, parent=cfg["parent"],
               training={**cfg, "best_step": best["step"], "steps_run": step, "seconds": timer.seconds})
    return {"stage": cfg["stage"], "seconds": timer.seconds, "best_step": best["step"], "steps_run": step,
            "dev_loss": round(best["dev_loss"], 4)}


if __name__ == "__main__":
    stage_cli("sft", DEFAULTS, train, __doc__.splitlines()[0])
