"""Stage -- reward model: preference pairs from SFT samples, and a Bradley-Terry scorer on them.

1. Preference pairs. For each prompt, sample several SFT answers; a pair is (chosen = a correct
   answer, rejected = an incorrect one) *to the same prompt*. The verifier labels them, so the
   pairs are exact -- in RLHF a human would. DPO trains on the same pairs (`preference_pairs.jsonl`).
2. Reward model: the SFT network with a scalar head on the final hidden state of the last token,
   trained so that P(chosen beats rejected) = sigmoid(r_chosen - r_rejected) is high. We log its
   accuracy on held-out pairs (prompts it never trained on).

The course's PPO uses the exact verifier reward rather than this learned one; the reward model is
here to show what RLHF does when no verifier exists, and how well it can learn one (its accuracy).
"""
import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer, is_correct
from lessons_lib.config import StageConfig, knob, text
from lessons_lib.losses import bradley_terry_loss
from lessons_lib.tokenizer import EOT, encode
from lessons_lib.training import (Timer, collate, load_trainable, sample_responses, seed_everything, sft_target,
                                  stage_cli, stage_logger, synthetic_pairs, user_prompt)


@dataclass
class RewardModelConfig(StageConfig):
    """The shipped recipe: 4 SFT samples of each of 1024 train prompts, pairs of a right and a wrong
    answer, half the prompts held out to measure the reward model's accuracy."""
    seed: int = knob(0, lo=0)
    init: str = text("checkpoints/sft.pt", help="the policy that samples the answers (and the trunk)")
    prompt_offset: int = knob(5000, lo=0, help="where these prompts start in train (disjoint from SFT's and RL's)")
    prompts: int = knob(1024, lo=1)
    samples: int = knob(4, lo=2, help="answers sampled per prompt")
    pairs_per_prompt: int = knob(2, lo=1)
    temperature: float = knob(1.0, lo=0, above=True)
    max_new_tokens: int = knob(160, lo=1)
    heldout_frac: float = knob(0.5, lo=0, hi=1, help="share of prompts whose pairs are held out")
    gold_fallback: bool = False  # micro config only: an untrained model is never right
    steps: int = knob(40, lo=1)
    batch_size: int = knob(16, lo=1)
    lr: float = knob(3e-4, lo=0, above=True)
    log_every: int = knob(5, lo=1)


def build_pairs(model, pairs, cfg: RewardModelConfig, generator) -> list[dict]:
    """Sample `samples` answers per question; pair correct (chosen) with incorrect (rejected)."""
    prompts = [user_prompt(q) for q, _ in pairs for _ in range(cfg.samples)]
    gens = sample_responses(model, prompts, cfg.max_new_tokens, cfg.temperature, generator)
    out = []
    for i, (q, a) in enumerate(pairs):
        gold = gsm8k_gold_answer(a)
        group = gens[i * cfg.samples:(i + 1) * cfg.samples]
        good = [g.text for g in group if g.finished and is_correct(g.text, gold)]
        bad = [g for g in group if not is_correct(g.text, gold)]
        if not good and cfg.gold_fallback:  # micro config: an untrained model is never right
            good = [sft_target(a)]
        for c, r in list(zip(good, bad))[:cfg.pairs_per_prompt]:
            out.append({"question": q, "gold": gold, "chosen": c, "rejected": r.text,
                        "rejected_finished": r.finished})
    return out


def pair_tensors(pair: dict):
    """(chosen ids, rejected ids) = prompt + reply (+ EOT if the reply finished)."""
    prompt = user_prompt(pair["question"])
    chosen = prompt + encode(pair["chosen"]) + [EOT]
    rejected = prompt + encode(pair["rejected"]) + ([EOT] if pair["rejected_finished"] else [])
    return chosen, rejected


class RewardModel(torch.nn.Module):
    """GPT trunk + linear head: the score of a sequence is head(hidden state of its last token)."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt, self.head = gpt, torch.nn.Linear(gpt.config.n_embd, 1)

    def forward(self, seqs: list[list[int]]) -> torch.Tensor:
        idx, mask = collate(seqs, [[1] * len(s) for s in seqs])
        _, hidden = self.gpt(idx, return_hidden=True)
        last = mask.sum(dim=1).long() - 1
        return self.head(hidden[torch.arange(len(seqs)), last]).squeeze(-1)


@torch.no_grad()
def preference_accuracy(rm, pairs) -> float:
    """Share of pairs where the reward model scores chosen above rejected."""
    rm.eval()
    hits = 0
    for s in range(0, len(pairs), 16):
        batch = [pair_tensors(p) for p in pairs[s:s + 16]]
        scores = rm([c for c, _ in batch] + [r for _, r in batch])
        hits += (scores[:len(batch)] > scores[len(batch):]).sum().item()
    rm.train()
    return hits / max(1, len(pairs))


def save_pairs(path, pairs):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")


def train(cfg: RewardModelConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """Build pairs from cfg.init (SFT), save them, train and evaluate the reward model."""
    seed_everything(cfg.seed)
    timer = Timer()
    sft = load_trainable(cfg.init)
    pairs = build_pairs(sft, synthetic_pairs("train", cfg.prompts, offset=cfg.prompt_offset), cfg,
                        torch.Generator().manual_seed(cfg.seed))
    save_pairs(f"{out_dir}/logs/preference_pairs.jsonl", pairs)
    questions = sorted({p["question"] for p in pairs})
    held = set(random.Random(cfg.seed).sample(questions, int(len(questions) * cfg.heldout_frac)))
    train_pairs = [p for p in pairs if p["question"] not in held]
    test_pairs = [p for p in pairs if p["question"] in held]
    rm = RewardModel(copy.deepcopy(sft))
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng, acc = random.Random(cfg.seed), None
    with stage_logger(out_dir, "reward_model", cfg, use_wandb) as log:
        for step in tqdm(range(cfg.steps), desc="reward_model", disable=not progress):
            batch = [pair_tensors(p) for p in rng.sample(train_pairs, min(cfg.batch_size, len(train_pairs)))]
            scores = rm([c for c, _ in batch] + [r for _, r in batch])
            n = len(batch)
            loss = bradley_terry_loss(scores[:n], scores[n:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                acc = preference_accuracy(rm, test_pairs)
                log.log(step, loss=loss.item(), train_batch_acc=(scores[:n] > scores[n:]).float().mean().item(),
                        heldout_pref_acc=acc)
    return {"stage": "reward_model", "seconds": timer.seconds, "pairs": len(pairs),
            "heldout_pairs": len(test_pairs), "heldout_pref_acc": acc}


if __name__ == "__main__":
    stage_cli(RewardModelConfig(), train, __doc__.splitlines()[0])
