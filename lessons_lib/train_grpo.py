"""Stage -- grpo: Group Relative Policy Optimization (Shao et al. 2024) from SFT.

Each step: take P prompts, sample G answers to each at temperature T (with the calculator, as at test
time), score every answer with the verifiable reward (`rollout_reward`: `reward_gsm8k`, 1.0 correct +
0.2 well-formed, and nothing for an answer that ran out of tokens), and use the reward *relative to
its own group* as the advantage of every token of the answer:

    A_i = (r_i - mean(r_group)) / std(r_group)        (0 for a group where all rewards are equal)

No value network: the group is the baseline. Then `epochs` passes over the batch, each in
`minibatches` optimizer steps, on the clipped-ratio loss plus a k3 KL penalty towards the SFT
reference (Shao et al. 2024, eq. 3 and 4), aggregated over tokens as `loss_agg` says:

    seq-mean-token-mean       the paper: average each answer's tokens, then the answers
    token-mean                DAPO (Yu et al. 2025): average all tokens of the batch
    seq-mean-token-sum-norm   Dr. GRPO (Liu et al. 2025): each answer's token sum / max_new_tokens,
                              and advantages not divided by the group's std

Every log-prob (old, new, reference) is taken at the sampling temperature T, so the ratio compares
the policy with the one that drew the samples. Tokens the calculator forced are masked out of the
loss and of the KL (the policy never chose them).
"""
import copy
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer
from lessons_lib.config import StageConfig, choice, knob, text
from lessons_lib.losses import LOSS_AGGREGATIONS, aggregate, clipped_surrogate, group_advantages, kl_k3, masked_mean
from lessons_lib.stages import stage
from lessons_lib.training import (Timer, cycle_batches, evaluate, load_trainable, minibatch_schedule, rollout_batch,
                                  rollout_reward, sample_responses, save_stage, seed_everything, sequence_logprobs,
                                  stage_cli, stage_logger, synthetic_pairs, user_prompt)


@dataclass
class GRPOConfig(StageConfig):
    """The shipped recipe: 80 steps of 8 prompts x 8 sampled answers at T = 0.7."""
    seed: int = knob(0, lo=0)
    init: str = text("checkpoints/sft.pt", help="the policy to train (and the frozen reference)")
    stage: str = text("grpo", help="the checkpoint's name")
    prompt_offset: int = knob(1000, lo=0, help="where the RL prompts start in train (after SFT's pool)")
    prompt_pool: int = knob(4000, lo=1)
    steps: int = knob(80, lo=1, help="iterations, each on a fresh batch of rollouts")
    prompts_per_step: int = knob(8, lo=1)
    group_size: int = knob(8, lo=2, help="answers sampled per prompt (the group is the baseline)")
    minibatches: int = knob(2, lo=1, help="optimizer steps per pass over a batch")
    epochs: int = knob(2, lo=1, help="passes over each batch of rollouts (after the first, the ratio leaves 1)")
    loss_agg: str = choice("seq-mean-token-mean", LOSS_AGGREGATIONS, help="how per-token losses are averaged")
    lr: float = knob(1e-4, lo=0, above=True)
    kl_coef: float = knob(0.04, lo=0, help="weight of the k3 KL(policy || SFT) term in the loss")
    clip_eps: float = knob(0.2, lo=0, above=True, hi=1)
    temperature: float = knob(0.7, lo=0, above=True, help="sampling temperature of the rollouts")
    max_new_tokens: int = knob(160, lo=1)
    eval_every: int = knob(20, lo=1)
    dev_acc_n: int = knob(200, lo=1)

    def cross_field_problems(self):
        n = self.prompts_per_step * self.group_size
        return [f"--minibatches {self.minibatches} exceeds the {n} rollouts of a step"] if self.minibatches > n else []


def optimizer_steps_and_batch(cfg: GRPOConfig) -> tuple[int, int]:
    """How much GRPO trains: optimizer steps in all (every epoch over every batch), and sequences per
    optimizer step -- what the compute-matched control `sft_continued` is given."""
    return cfg.steps * cfg.epochs * cfg.minibatches, cfg.prompts_per_step * cfg.group_size // cfg.minibatches


def rollout(model, batch, cfg: GRPOConfig, generator):
    """Sample G answers per prompt; returns the batch tensors, rewards and the generations."""
    prompts = [user_prompt(q) for q, _ in batch for _ in range(cfg.group_size)]
    golds = [gsm8k_gold_answer(a) for _, a in batch for _ in range(cfg.group_size)]
    gens = sample_responses(model, prompts, cfg.max_new_tokens, cfg.temperature, generator)
    rewards = torch.tensor([rollout_reward(g, gold) for g, gold in zip(gens, golds)])
    idx, policy_mask, _ = rollout_batch(prompts, gens)
    return idx, policy_mask[:, 1:], rewards, gens


def advantages(rewards, cfg: GRPOConfig):
    """Group-relative advantages; Dr. GRPO's aggregation comes with its unscaled advantage."""
    return group_advantages(rewards, cfg.group_size, scale=cfg.loss_agg != "seq-mean-token-sum-norm")


def grpo_loss(logp, old_logp, ref_logp, adv, mask, cfg: GRPOConfig):
    """Eq. 3 of Shao et al. (2024) as a loss: per token, the clipped surrogate plus kl_coef x k3 KL,
    aggregated as cfg.loss_agg says. Returns (loss, per-token k3, per-token clipped indicator)."""
    surrogate, clipped = clipped_surrogate(logp, old_logp, adv, cfg.clip_eps)
    kl = kl_k3(logp, ref_logp)
    loss = aggregate(surrogate + cfg.kl_coef * kl, mask, cfg.loss_agg, norm=cfg.max_new_tokens)
    return loss, kl, clipped


def update(model, ref, opt, idx, mask, adv, cfg, shuffle) -> dict:
    """cfg.epochs passes over one batch of rollouts in cfg.minibatches steps each; returns the mean
    penalised KL (k3 over the policy's tokens), the clip fraction, how far the ratio left 1, and the
    policy's entropy on its own samples (all at the sampling temperature)."""
    T = cfg.temperature
    with torch.no_grad():
        old_logp, entropy = sequence_logprobs(model, idx, T, return_entropy=True)
        ref_logp = sequence_logprobs(ref, idx, T)
    kls, clips, ratios = [], [], []
    for _, mb in minibatch_schedule(len(idx), cfg.minibatches, cfg.epochs, shuffle):
        logp = sequence_logprobs(model, idx[mb], T)
        loss, kl, clipped = grpo_loss(logp, old_logp[mb], ref_logp[mb], adv[mb], mask[mb], cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        kls.append(masked_mean(kl, mask[mb]).item()); clips.append(masked_mean(clipped, mask[mb]).item())
        ratios.append(masked_mean((logp.detach() - old_logp[mb]).exp().sub(1).abs(), mask[mb]).item())
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return dict(kl=mean(kls), clip_frac=mean(clips), ratio_dev=mean(ratios), entropy=masked_mean(entropy, mask).item())


def train(cfg: GRPOConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """GRPO from cfg.init; write out_dir/<stage>.pt and logs/<stage>.jsonl."""
    seed_everything(cfg.seed)
    timer = Timer()
    model = load_trainable(cfg.init)
    ref = copy.deepcopy(model).eval().requires_grad_(False)  # the frozen SFT reference
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    prompts = cycle_batches(synthetic_pairs("train", cfg.prompt_pool, offset=cfg.prompt_offset),
                            cfg.prompts_per_step, random.Random(cfg.seed))
    dev = synthetic_pairs("dev", cfg.dev_acc_n)
    generator = torch.Generator().manual_seed(cfg.seed)
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order: its own stream, so sampling is unchanged
    G, dev_acc, clip_fracs = cfg.group_size, None, []
    with stage_logger(out_dir, cfg.stage, cfg, use_wandb) as log:
        log.log(0, dev_acc=evaluate(model, dev, cfg.max_new_tokens))
        for step in tqdm(range(1, cfg.steps + 1), desc=cfg.stage, disable=not progress):
            idx, mask, rewards, gens = rollout(model, next(prompts), cfg, generator)
            stats = update(model, ref, opt, idx, mask, advantages(rewards, cfg), cfg, shuffle)
            kl = stats["kl"]; clip_fracs.append(stats["clip_frac"])
            spread = (rewards.view(-1, G).std(dim=1) > 0).float().mean().item()
            metrics = dict(reward=rewards.mean().item(), correct=(rewards >= 1.0).float().mean().item(),
                           **stats, groups_with_spread=spread, unfinished=sum(not g.finished for g in gens) / len(gens),
                           response_tokens=sum(len(g.token_ids) for g in gens) / len(gens))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics["dev_acc"] = dev_acc = evaluate(model, dev, cfg.max_new_tokens)
            log.log(step, **metrics)
    mean_clip = sum(clip_fracs) / len(clip_fracs)
    save_stage(out_dir, cfg.stage, model, parent=stage("grpo").parent,
               training={**cfg.to_dict(), "seconds": timer.seconds, "final_kl": kl, "mean_clip_frac": mean_clip})
    return {"stage": cfg.stage, "seconds": timer.seconds, "final_kl": round(kl, 5),
            "mean_clip_frac": round(mean_clip, 5), "dev_acc": dev_acc}


if __name__ == "__main__":
    stage_cli(GRPOConfig(), train, __doc__.splitlines()[0])
