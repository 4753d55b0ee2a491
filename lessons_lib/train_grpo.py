"""Stage -- grpo: Group Relative Policy Optimization (Shao et al. 2024) from SFT.

Each step: take P prompts, sample G answers to each (with the calculator, as at test time), score
every answer with the verifiable reward `reward_gsm8k` (1.0 correct + 0.2 well-formed), and use
the reward *relative to its own group* as the advantage:

    A_i = (r_i - mean(r_group)) / std(r_group)        (0 for a group where all rewards are equal)

No value network: the group is the baseline. The policy is pushed up on better-than-its-siblings
answers with PPO's clipped ratio, and held near the SFT reference by a k3 KL penalty. Tokens the
calculator forced are masked out of the loss (the policy never chose them).
"""
import copy
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer, reward_gsm8k
from lessons_lib.config import StageConfig, knob, text
from lessons_lib.losses import group_advantages, kl_k3, masked_mean, ppo_clipped_loss
from lessons_lib.stages import stage
from lessons_lib.training import (Timer, cycle_batches, evaluate, load_trainable, rollout_batch, sample_responses,
                                  save_stage, seed_everything, sequence_logprobs, stage_cli, stage_logger,
                                  synthetic_pairs, user_prompt)


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
    """How much GRPO trains: optimizer steps in all, and sequences per optimizer step (what the
    compute-matched control `sft_continued` is given)."""
    return cfg.steps * cfg.minibatches, cfg.prompts_per_step * cfg.group_size // cfg.minibatches


def rollout(model, batch, cfg: GRPOConfig, generator):
    """Sample G answers per prompt; returns the batch tensors, rewards and the generations."""
    prompts = [user_prompt(q) for q, _ in batch for _ in range(cfg.group_size)]
    golds = [gsm8k_gold_answer(a) for _, a in batch for _ in range(cfg.group_size)]
    gens = sample_responses(model, prompts, cfg.max_new_tokens, cfg.temperature, generator)
    rewards = torch.tensor([reward_gsm8k(g.text, gold) for g, gold in zip(gens, golds)])
    idx, policy_mask, _ = rollout_batch(prompts, gens)
    return idx, policy_mask[:, 1:], rewards, gens


def update(model, ref, opt, idx, mask, adv, cfg):
    """PPO-style clipped update on minibatches of one rollout; returns mean KL and clip fraction."""
    with torch.no_grad():
        old_logp, ref_logp = sequence_logprobs(model, idx), sequence_logprobs(ref, idx)
    kls, clips = [], []
    for mb in torch.arange(len(idx)).chunk(cfg.minibatches):
        logp = sequence_logprobs(model, idx[mb])
        pg_loss, clip_frac = ppo_clipped_loss(logp, old_logp[mb], adv[mb], mask[mb], cfg.clip_eps)
        kl = masked_mean(kl_k3(logp, ref_logp[mb]), mask[mb])
        opt.zero_grad(set_to_none=True)
        (pg_loss + cfg.kl_coef * kl).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        kls.append(kl.item()); clips.append(clip_frac.item())
    return sum(kls) / len(kls), sum(clips) / len(clips)


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
    G, dev_acc = cfg.group_size, None
    with stage_logger(out_dir, cfg.stage, cfg, use_wandb) as log:
        log.log(0, dev_acc=evaluate(model, dev, cfg.max_new_tokens))
        for step in tqdm(range(1, cfg.steps + 1), desc=cfg.stage, disable=not progress):
            idx, mask, rewards, gens = rollout(model, next(prompts), cfg, generator)
            adv = group_advantages(rewards, G)
            kl, clip_frac = update(model, ref, opt, idx, mask, adv, cfg)
            spread = (rewards.view(-1, G).std(dim=1) > 0).float().mean().item()
            metrics = dict(reward=rewards.mean().item(), correct=(rewards >= 1.0).float().mean().item(),
                           kl=kl, clip_frac=clip_frac, groups_with_spread=spread,
                           response_tokens=sum(len(g.token_ids) for g in gens) / len(gens))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics["dev_acc"] = dev_acc = evaluate(model, dev, cfg.max_new_tokens)
            log.log(step, **metrics)
    save_stage(out_dir, cfg.stage, model, parent=stage("grpo").parent,
               training={**cfg.to_dict(), "seconds": timer.seconds, "final_kl": kl})
    return {"stage": cfg.stage, "seconds": timer.seconds, "final_kl": round(kl, 5), "dev_acc": dev_acc}


if __name__ == "__main__":
    stage_cli(GRPOConfig(), train, __doc__.splitlines()[0])
