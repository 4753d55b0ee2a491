"""Stage -- reward model: preference pairs from SFT samples, and a Bradley-Terry scorer on them.

1. Preference pairs. For each prompt, sample several SFT answers; a pair is (chosen = a correct
   answer, rejected = an incorrect one) *to the same prompt*, both finished (so that "is it cut
   off?" is never a free cue). The verifier labels them, so the pairs are exact -- in RLHF a human
   would. Each answer keeps the token ids it was sampled as and which of them the calculator forced,
   so DPO and the reward model train on exactly what the policy produced (decoding and re-encoding
   text is not guaranteed to give the same ids). DPO trains on the same pairs (`preference_pairs.jsonl`).
2. Reward model: the SFT network with a scalar head on the final hidden state of the last token,
   trained so that P(chosen beats rejected) = sigmoid(r_chosen - r_rejected) is high. We log its
   accuracy on held-out pairs (prompts it never trained on) and save it as `reward_model.pt`.

The course's PPO uses the exact verifier reward rather than this learned one; the stage `ppo_rm` is
PPO rewarded by this model instead, to show what RLHF does when no verifier exists.
"""
import copy
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer, is_correct
from lessons_lib.calculator import calculator_forced_byte_mask
from lessons_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lessons_lib.config import StageConfig, knob, text
from lessons_lib.jsonl import write_jsonl
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


def answer(generation) -> dict:
    """A sampled answer as a pair keeps it: its text (to read), its token ids (to train on) and the
    positions the calculator forced (no loss there: the policy did not choose them)."""
    return {"text": generation.text, "ids": generation.token_ids,
            "forced": [i for i, f in enumerate(generation.forced) if f]}


def gold_answer(answer_field: str) -> dict:
    """The gold solution as an answer (micro config only: an untrained model is never right)."""
    text = sft_target(answer_field)
    forced = calculator_forced_byte_mask(text)
    return {"text": text, "ids": encode(text) + [EOT], "forced": [i for i, f in enumerate(forced) if f]}


def build_pairs(model, pairs, cfg: RewardModelConfig, generator) -> list[dict]:
    """Sample `samples` answers per question; pair finished correct (chosen) with finished incorrect
    (rejected) answers to the same question."""
    prompts = [user_prompt(q) for q, _ in pairs for _ in range(cfg.samples)]
    gens = sample_responses(model, prompts, cfg.max_new_tokens, cfg.temperature, generator)
    out = []
    for i, (q, a) in enumerate(pairs):
        gold = gsm8k_gold_answer(a)
        group = [g for g in gens[i * cfg.samples:(i + 1) * cfg.samples] if g.finished]
        good = [answer(g) for g in group if is_correct(g.text, gold)]
        bad = [answer(g) for g in group if not is_correct(g.text, gold)]
        if not good and cfg.gold_fallback:
            good = [gold_answer(a)]
        for c, r in list(zip(good, bad))[:cfg.pairs_per_prompt]:
            out.append({"question": q, "gold": gold, "chosen": c, "rejected": r})
    return out


def pair_tensors(pair: dict):
    """(chosen ids, rejected ids) = prompt + the answer's sampled ids (EOT included)."""
    prompt = user_prompt(pair["question"])
    return prompt + pair["chosen"]["ids"], prompt + pair["rejected"]["ids"]


class RewardModel(torch.nn.Module):
    """GPT trunk + linear head: the score of a sequence is head(hidden state of its last token).
    `score` is the standardised score an RL trainer uses as its reward: (raw - mean) / std over the
    held-out pairs' answers, so that 0 is a typical SFT answer and 1 is one spread above it."""

    def __init__(self, gpt, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.gpt, self.head = gpt, torch.nn.Linear(gpt.config.n_embd, 1)
        self.mean, self.std = mean, std

    def forward(self, seqs: list[list[int]]) -> torch.Tensor:
        idx, mask = collate(seqs, [[1] * len(s) for s in seqs])
        _, hidden = self.gpt(idx, return_hidden=True)
        last = mask.sum(dim=1).long() - 1
        return self.head(hidden[torch.arange(len(seqs)), last]).squeeze(-1)

    @torch.no_grad()
    def score(self, seqs: list[list[int]], batch_size: int = 64) -> torch.Tensor:
        """Standardised scores of full sequences (prompt + answer ids), in batches."""
        raw = torch.cat([self(seqs[s:s + batch_size]) for s in range(0, len(seqs), batch_size)])
        return (raw - self.mean) / self.std


def save_reward_model(path, rm: RewardModel, meta: dict):
    """reward_model.pt: a course checkpoint of the trunk; the head and the standardisation ride in its
    meta as plain numbers (a checkpoint holds a GPT; the head is 1 x n_embd + 1 numbers)."""
    head = {"weight": rm.head.weight.detach().view(-1).tolist(), "bias": rm.head.bias.item()}
    return save_checkpoint(path, rm.gpt, {**meta, "stage": "reward_model", "calculator": True,
                                          "reward_head": head, "score_mean": rm.mean, "score_std": rm.std})


def load_reward_model(path) -> RewardModel:
    """The reward model saved by `train`, on CPU, in eval mode."""
    gpt = load_checkpoint(path, device="cpu")
    head = gpt.meta.get("reward_head")
    if not isinstance(head, dict) or len(head.get("weight", [])) != gpt.config.n_embd:
        raise CheckpointError(f"{path} is a course checkpoint but not a reward model (no 'reward_head' in its meta); "
                              f"train one with `python -m lessons_lib.train_reward_model`")
    rm = RewardModel(gpt, gpt.meta["score_mean"], gpt.meta["score_std"])
    with torch.no_grad():
        rm.head.weight.copy_(torch.tensor(head["weight"]).view(1, -1))
        rm.head.bias.fill_(head["bias"])
    return rm.eval()


@torch.no_grad()
def score_stats(rm, pairs) -> tuple[float, float]:
    """Mean and std of the raw scores of every answer in `pairs` (what `score` standardises by)."""
    rm.eval()
    seqs = [s for p in pairs for s in pair_tensors(p)]
    raw = torch.cat([rm(seqs[s:s + 64]) for s in range(0, len(seqs), 64)])
    rm.train()
    return raw.mean().item(), max(raw.std().item(), 1e-6)


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
    write_jsonl(path, pairs, compact=True)


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
    rm.mean, rm.std = score_stats(rm, test_pairs or train_pairs)
    save_reward_model(f"{out_dir}/reward_model.pt", rm, {"parent": "sft", "training": {
        **cfg.to_dict(), "seconds": timer.seconds, "heldout_pref_acc": acc}})
    return {"stage": "reward_model", "seconds": timer.seconds, "pairs": len(pairs),
            "heldout_pairs": len(test_pairs), "heldout_pref_acc": acc}


if __name__ == "__main__":
    stage_cli(RewardModelConfig(), train, __doc__.splitlines()[0])
