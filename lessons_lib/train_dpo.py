"""Stage -- dpo: Direct Preference Optimization (Rafailov et al. 2023) from SFT.

No reward model and no sampling during training: DPO turns the preference pairs built from SFT
samples (chosen = correct, rejected = incorrect, same prompt; see `train_reward_model.build_pairs`)
into a classification loss on log-probability *ratios* against the frozen SFT reference:

    loss = -log sigmoid( beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))] )

plus `nll_coef` x the chosen answer's per-token NLL (prototype lesson: pure DPO at lr 1e-4 or 3e-5
collapsed -- it can lower both answers' probabilities; lr 1e-5 with 0.5 x NLL on chosen helped).
Log-probs sum over the tokens the model chose (calculator-forced tokens excluded), on the very token
ids SFT sampled (each pair keeps them, see `train_reward_model.answer`); chosen and rejected are both
finished answers, so the end-of-turn token is in both and is never a cue by itself.
"""
import copy
import json
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from lessons_lib.config import StageConfig, knob, text
from lessons_lib.losses import dpo_loss
from lessons_lib.stages import stage
from lessons_lib.train_reward_model import pair_tensors
from lessons_lib.training import (Timer, collate, evaluate, load_trainable, save_stage, seed_everything,
                                  sequence_logprobs, stage_cli, stage_logger, synthetic_pairs, user_prompt)


@dataclass
class DPOConfig(StageConfig):
    """The shipped recipe: 60 steps of 16 pairs at lr 2e-5, beta 0.1, plus half the chosen answer's NLL."""
    seed: int = knob(0, lo=0)
    init: str = text("checkpoints/sft.pt", help="the policy to train (and the frozen reference)")
    pairs: str = text("checkpoints/logs/preference_pairs.jsonl", help="written by the reward-model stage")
    steps: int = knob(60, lo=1)
    batch_size: int = knob(16, lo=1)
    lr: float = knob(2e-5, lo=0, above=True)
    beta: float = knob(0.1, lo=0, above=True, help="strength of the pull towards the reference")
    nll_coef: float = knob(0.5, lo=0, help="weight of the chosen answer's per-token NLL")
    log_every: int = knob(5, lo=1)
    dev_acc_n: int = knob(200, lo=1)
    max_new_tokens: int = knob(160, lo=1)


def policy_mask(prompt_len: int, answer: dict) -> list[int]:
    """1 on the answer's tokens the model chose; 0 on the prompt and where the calculator forced one."""
    forced = set(answer["forced"])
    return [0] * prompt_len + [0 if i in forced else 1 for i in range(len(answer["ids"]))]


def batch_logps(model, pairs):
    """Summed chosen/rejected log-probs and the chosen per-token NLL for a batch of pairs."""
    seqs, masks = [], []
    for p in pairs:
        n = len(user_prompt(p["question"]))
        for s, side in zip(pair_tensors(p), ("chosen", "rejected")):
            seqs.append(s); masks.append(policy_mask(n, p[side]))
    idx, mask = collate(seqs, masks)
    mask = mask[:, 1:]
    logp = sequence_logprobs(model, idx) * mask
    sums = logp.sum(dim=1)
    chosen_nll = -(logp[0::2].sum() / mask[0::2].sum())
    return sums[0::2], sums[1::2], chosen_nll


def train(cfg: DPOConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """DPO from cfg.init on cfg.pairs; write out_dir/dpo.pt and logs/dpo.jsonl."""
    seed_everything(cfg.seed)
    timer = Timer()
    with open(cfg.pairs) as f:
        pairs = [json.loads(line) for line in f]
    if not pairs:
        raise ValueError(f"{cfg.pairs} has no preference pairs; run train_reward_model first")
    model = load_trainable(cfg.init)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(cfg.seed)
    with stage_logger(out_dir, "dpo", cfg, use_wandb) as log:
        for step in tqdm(range(cfg.steps), desc="dpo", disable=not progress):
            batch = rng.sample(pairs, min(cfg.batch_size, len(pairs)))
            with torch.no_grad():
                ref_c, ref_r, _ = batch_logps(ref, batch)
            pol_c, pol_r, nll = batch_logps(model, batch)
            loss, r_c, r_r = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=cfg.beta)
            opt.zero_grad(set_to_none=True)
            (loss + cfg.nll_coef * nll).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                log.log(step, loss=loss.item(), chosen_nll=nll.item(), implicit_acc=(r_c > r_r).float().mean().item(),
                        margin=(r_c - r_r).mean().item(), chosen_reward=r_c.mean().item(), rejected_reward=r_r.mean().item())
        dev_acc = evaluate(model, synthetic_pairs("dev", cfg.dev_acc_n), cfg.max_new_tokens)
        log.log(cfg.steps, dev_acc=dev_acc)
    save_stage(out_dir, "dpo", model, parent=stage("dpo").parent, training={**cfg.to_dict(), "seconds": timer.seconds})
    return {"stage": "dpo", "seconds": timer.seconds, "dev_acc": dev_acc}


if __name__ == "__main__":
    stage_cli(DPOConfig(), train, __doc__.splitlines()[0])
