"""Stage 1 -- base_pretrained: next-token prediction on plain problem text (no chat template).

Each training document is one problem written out as plain text, question then worked answer:

    [BOS] Mia bakes 3 dozen cookies. ... How many cookies are left?\\n3*12 = <<3*12=36>>36 ...\\n#### 20

A document is one whole sequence starting at position 0, so the model sees every position a
prompt + answer will ever use (a model pretrained on short windows produces garbage past them).
The base model never sees the chat tokens (USER, ASSISTANT), so asked in chat format it scores ~0%:
it knows the *language* of the task, not how to answer a question. That is SFT's job.
"""
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from lessons_lib.config import StageConfig, knob
from lessons_lib.tokenizer import BOS, EOT, encode
from lessons_lib.training import (Timer, collate, cycle_batches, lm_loss, lr_at, new_model, save_stage,
                                  seed_everything, stage_cli, stage_logger, synthetic_pairs)


@dataclass
class BaseConfig(StageConfig):
    """The shipped recipe: ~1.0M parameters, 600 steps on 8000 plain-text documents."""
    seed: int = knob(0, lo=0)
    n_layer: int = knob(4, lo=1, help="transformer blocks")
    n_head: int = knob(4, lo=1, help="attention heads (must divide n_embd)")
    n_embd: int = knob(128, lo=1, help="model width")
    max_seq_len: int = knob(1280, lo=1, help="positions: the longest real GSM8K question + 256 new tokens")
    docs: int = knob(8000, lo=1, help="training documents (synthetic train problems)")
    doc_offset: int = knob(2000, lo=0, help="skip the first problems of train (SFT's pool)")
    steps: int = knob(600, lo=1)
    batch_size: int = knob(16, lo=1)
    lr: float = knob(6e-3, lo=0, above=True)
    warmup: int = knob(20, lo=0)
    log_every: int = knob(10, lo=1)

    def cross_field_problems(self):
        return [f"--n_head {self.n_head} must divide --n_embd {self.n_embd}"] if self.n_embd % self.n_head else []


def document(question: str, answer: str) -> list[int]:
    """One plain-text document: BOS, question, newline, worked answer, EOT (the end-of-text)."""
    return [BOS] + encode(question + "\n" + answer) + [EOT]


def train(cfg: BaseConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """Pretrain from random weights; write out_dir/base_pretrained.pt and logs/base_pretrained.jsonl."""
    seed_everything(cfg.seed)
    timer = Timer()
    docs = [document(q, a) for q, a in synthetic_pairs("train", cfg.docs, offset=cfg.doc_offset)]
    examples = [(d, [1] * len(d)) for d in docs]  # every token is a target (except the first)
    model = new_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    batches = cycle_batches(examples, cfg.batch_size, random.Random(cfg.seed))
    with stage_logger(out_dir, "base_pretrained", cfg, use_wandb) as log:
        for step in tqdm(range(1, cfg.steps + 1), desc="base_pretrained", disable=not progress):
            for group in opt.param_groups:  # decay to 10% over the whole run: pretraining can afford to anneal
                group["lr"] = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, decay_end=cfg.steps, floor=0.1)
            idx, mask = collate(*zip(*next(batches)))
            loss = lm_loss(model, idx, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % cfg.log_every == 0 or step == cfg.steps:
                log.log(step, loss=loss.item(), lr=opt.param_groups[0]["lr"])
    save_stage(out_dir, "base_pretrained", model, parent=None, training={**cfg.to_dict(), "seconds": timer.seconds})
    return {"stage": "base_pretrained", "seconds": timer.seconds, "final_loss": round(loss.item(), 4),
            "params": model.num_params()}


if __name__ == "__main__":
    stage_cli(BaseConfig(), train, __doc__.splitlines()[0])
