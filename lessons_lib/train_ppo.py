"""Stage -- ppo: Proximal Policy Optimization (Schulman et al. 2017) with a value head, from SFT.

The RLHF recipe (Ouyang et al. 2022), with the verifiable reward instead of a learned one:
- reward: `rollout_reward` of the finished answer (`reward_gsm8k`: 1.0 correct + 0.2 well-formed;
  0 for an answer that ran out of tokens) at its last token, minus a per-token KL penalty
  `kl_coef * (log pi - log ref)` (the k1 estimate, Ouyang et al. eq. 2) on the tokens the policy
  chose. The stage `ppo_rm` is the same algorithm rewarded by the learned reward model instead
  (`--reward reward_model`): what RLHF does when there is no verifier, and where it goes wrong.
- critic: a linear value head on the policy's final hidden states (`return_hidden=True`), trained
  to predict the return, its update clipped like the policy's; GAE (gamma=1, lambda=1) turns rewards
  and values into per-token advantages, whitened over the batch. Why lambda = 1: with lambda < 1 an
  early token's advantage leans on the critic's values of the tokens after it (A_t = sum_l
  (gamma lambda)^l delta_{t+l}), and only the part of the final reward the critic has not yet learned
  to predict reaches it directly, shrunk by lambda^(distance). A trained critic carries the credit
  back; our critic starts at zero and sees 40 batches, so with lambda = 0.95 and ~90-token answers
  the first tokens got ~1% of the reward and PPO was nearly blind where the choices are made.
- update: `epochs` passes over each batch of rollouts, `minibatches` steps each, on the clipped
  ratio objective over the tokens the policy chose (calculator-forced ones masked). All log-probs
  (old, new, reference) at the sampling temperature.
"""
import copy
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer
from lessons_lib.config import StageConfig, choice, knob, text
from lessons_lib.losses import gae, kl_k1, masked_mean, ppo_clipped_loss, value_loss
from lessons_lib.stages import stage
from lessons_lib.training import (Timer, cycle_batches, evaluate, load_trainable, minibatch_schedule, rollout_batch,
                                  rollout_reward, sample_responses, save_stage, seed_everything, sequence_logprobs,
                                  stage_cli, stage_logger, synthetic_pairs, user_prompt)


@dataclass
class PPOConfig(StageConfig):
    """The shipped recipe: 40 steps of 32 prompts x 2 sampled answers at T = 0.7, a linear critic."""
    seed: int = knob(0, lo=0)
    init: str = text("checkpoints/sft.pt", help="the policy to train (and the frozen reference)")
    stage: str = text("ppo", help="the checkpoint's name")
    reward: str = choice("verifier", ("verifier", "reward_model"),
                         help="who scores a rollout: the exact checker, or the learned reward model (ppo_rm)")
    reward_model: str = text("checkpoints/reward_model.pt", help="the reward of --reward reward_model; with the "
                             "verifier its score is only logged beside the verifier's (the proxy-vs-gold curves); '' = none")
    prompt_offset: int = knob(1000, lo=0, help="where the RL prompts start in train (after SFT's pool)")
    prompt_pool: int = knob(4000, lo=1)
    steps: int = knob(40, lo=1, help="iterations, each on a fresh batch of rollouts")
    prompts_per_step: int = knob(32, lo=1)
    samples_per_prompt: int = knob(2, lo=1)
    minibatches: int = knob(2, lo=1, help="optimizer steps per pass over a batch")
    epochs: int = knob(2, lo=1, help="passes over each batch of rollouts (after the first, the ratio leaves 1)")
    lr: float = knob(1e-4, lo=0, above=True)
    value_lr: float = knob(1e-3, lo=0, above=True, help="learning rate of the critic's head")
    kl_coef: float = knob(0.04, lo=0, help="per-token KL penalty in the reward")
    clip_eps: float = knob(0.2, lo=0, above=True, hi=1)
    value_clip: float = knob(0.2, lo=0, above=True, help="how far one update may move the critic's values")
    gamma: float = knob(1.0, lo=0, hi=1)
    lam: float = knob(1.0, lo=0, hi=1, help="GAE's lambda")
    value_coef: float = knob(0.5, lo=0)
    temperature: float = knob(0.7, lo=0, above=True, help="sampling temperature of the rollouts")
    max_new_tokens: int = knob(160, lo=1)
    eval_every: int = knob(10, lo=1)
    dev_acc_n: int = knob(200, lo=1)
    curve_prompts: int = knob(128, lo=1, help="dev prompts sampled at each eval for the proxy/gold/KL curve")

    def cross_field_problems(self):
        n = self.prompts_per_step * self.samples_per_prompt
        problems = [f"--minibatches {self.minibatches} exceeds the {n} rollouts of a step"] if self.minibatches > n else []
        if self.reward == "reward_model" and not self.reward_model:
            problems.append("--reward reward_model needs --reward_model PATH (train_reward_model writes reward_model.pt)")
        return problems


def ppo_rm_config(**changes) -> PPOConfig:
    """The shipped recipe of `ppo_rm`: PPO rewarded by the reward model, with a small KL coefficient
    and twice the budget, so that it can travel far from SFT (where over-optimisation would show)."""
    return PPOConfig(stage="ppo_rm", reward="reward_model", steps=80, kl_coef=0.01).updated(**changes)


PRESETS = {"ppo": PPOConfig, "ppo_rm": ppo_rm_config}  # --stage NAME: the recipes this module trains


def token_rewards(rewards, kl, response_mask, kl_coef):
    """Per-token reward: -kl_coef * kl (the penalty, already 0 where the policy did not choose the
    token) on every generated token, plus the task reward on the last one (the answer is only
    judged when it is finished)."""
    r = -kl_coef * kl * response_mask
    last = (response_mask * torch.arange(response_mask.shape[1])).argmax(dim=1)  # last generated token
    r[torch.arange(len(r)), last] += rewards
    return r


def whiten(x, mask):
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + 1e-6)


def update(model, head, ref, opt, idx, policy_mask, response_mask, rewards, cfg, shuffle) -> dict:
    """One PPO iteration over a rollout: the KL penalty and GAE with the critic as it is now, then
    cfg.epochs x cfg.minibatches clipped steps of policy and critic. Returns the KL that was
    penalised (k1, per token the policy chose), clip fraction, value loss, ratio drift and entropy."""
    T = cfg.temperature
    with torch.no_grad():
        old_logp, hidden, entropy = sequence_logprobs(model, idx, T, return_hidden=True, return_entropy=True)
        ref_logp = sequence_logprobs(ref, idx, T)
        old_values = head(hidden).squeeze(-1) * response_mask
        kl = kl_k1(old_logp, ref_logp) * policy_mask  # the penalty covers exactly the tokens the loss does
        adv, returns = gae(token_rewards(rewards, kl, response_mask, cfg.kl_coef), old_values, response_mask,
                           cfg.gamma, cfg.lam)
        adv = whiten(adv, policy_mask)
    stats = []
    for _, mb in minibatch_schedule(len(idx), cfg.minibatches, cfg.epochs, shuffle):
        logp, hidden = sequence_logprobs(model, idx[mb], T, return_hidden=True)
        pg_loss, clip_frac = ppo_clipped_loss(logp, old_logp[mb], adv[mb], policy_mask[mb], cfg.clip_eps)
        values = head(hidden.detach()).squeeze(-1)  # the critic learns from its own loss only
        v_loss = value_loss(values, returns[mb], response_mask[mb], old_values[mb], cfg.value_clip)
        opt.zero_grad(set_to_none=True)
        (pg_loss + cfg.value_coef * v_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)  # the critic is clipped like the policy
        opt.step()
        drift = masked_mean((logp.detach() - old_logp[mb]).exp().sub(1).abs(), policy_mask[mb])
        stats.append((clip_frac.item(), v_loss.item(), drift.item()))
    clip_frac, v_loss, drift = (sum(s) / len(s) for s in zip(*stats))
    return dict(kl=masked_mean(kl, policy_mask).item(), clip_frac=clip_frac, value_loss=v_loss, ratio_dev=drift,
                entropy=masked_mean(entropy, policy_mask).item())


def score_rollouts(gens, prompt_ids, golds, cfg, reward_model) -> torch.Tensor:
    """Each rollout's reward: the verifier's, or the reward model's (standardised) score. Either way an
    answer that ran out of tokens earns `rollout_reward`'s no-credit 0."""
    if cfg.reward == "verifier":
        return torch.tensor([rollout_reward(g, gold) for g, gold in zip(gens, golds)])
    scores = reward_model.score([p + g.token_ids for p, g in zip(prompt_ids, gens)])
    return torch.where(torch.tensor([g.finished for g in gens]), scores, torch.zeros_like(scores))


@torch.no_grad()
def proxy_gold_curve(model, ref, reward_model, dev, cfg, generator) -> dict:
    """On fixed dev prompts, one sampled answer each: the reward model's mean score (the proxy), the
    verifier's accuracy (the gold) and the KL from SFT, sum over the answer of log pi - log ref
    (its square root is the x-axis of Gao et al. 2023)."""
    from rewards import is_correct
    prompt_ids = [user_prompt(q) for q, _ in dev]
    gens = sample_responses(model, prompt_ids, cfg.max_new_tokens, cfg.temperature, generator)
    idx, policy_mask, _ = rollout_batch(prompt_ids, gens)
    kl = ((sequence_logprobs(model, idx, cfg.temperature) - sequence_logprobs(ref, idx, cfg.temperature))
          * policy_mask[:, 1:]).sum(dim=1).mean().item()
    out = {"curve_gold": sum(is_correct(g.text, gsm8k_gold_answer(a)) for g, (_, a) in zip(gens, dev)) / len(dev),
           "curve_kl": kl}
    if reward_model is not None:
        out["curve_proxy"] = reward_model.score([p + g.token_ids for p, g in zip(prompt_ids, gens)]).mean().item()
    return out


def train(cfg: PPOConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """PPO from cfg.init; write out_dir/<stage>.pt and logs/<stage>.jsonl."""
    from lessons_lib.train_reward_model import load_reward_model
    seed_everything(cfg.seed)
    timer = Timer()
    model = load_trainable(cfg.init)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    reward_model = load_reward_model(cfg.reward_model) if cfg.reward_model else None
    head = torch.nn.Linear(model.config.n_embd, 1)  # the critic: V(prefix) from the policy's features
    torch.nn.init.zeros_(head.weight); torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": cfg.lr},
                             {"params": head.parameters(), "lr": cfg.value_lr}], betas=(0.9, 0.95), weight_decay=0.0)
    prompts = cycle_batches(synthetic_pairs("train", cfg.prompt_pool, offset=cfg.prompt_offset),
                            cfg.prompts_per_step, random.Random(cfg.seed))
    dev = synthetic_pairs("dev", cfg.dev_acc_n)
    generator = torch.Generator().manual_seed(cfg.seed)
    shuffle = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order: its own stream
    curve_sampler = torch.Generator().manual_seed(cfg.seed + 2)  # the curve's samples don't move the training's
    k, dev_acc, clip_fracs = cfg.samples_per_prompt, None, []
    with stage_logger(out_dir, cfg.stage, cfg, use_wandb) as log:
        log.log(0, dev_acc=evaluate(model, dev, cfg.max_new_tokens),
                **proxy_gold_curve(model, ref, reward_model, dev[:cfg.curve_prompts], cfg, curve_sampler))
        for step in tqdm(range(1, cfg.steps + 1), desc=cfg.stage, disable=not progress):
            batch = next(prompts)
            prompt_ids = [user_prompt(q) for q, _ in batch for _ in range(k)]
            golds = [gsm8k_gold_answer(a) for _, a in batch for _ in range(k)]
            gens = sample_responses(model, prompt_ids, cfg.max_new_tokens, cfg.temperature, generator)
            rewards = score_rollouts(gens, prompt_ids, golds, cfg, reward_model)
            idx, policy_mask, response_mask = rollout_batch(prompt_ids, gens)
            stats = update(model, head, ref, opt, idx, policy_mask[:, 1:], response_mask[:, 1:], rewards, cfg, shuffle)
            kl = stats["kl"]; clip_fracs.append(stats["clip_frac"])
            correct = [rollout_reward(g, gold) >= 1.0 for g, gold in zip(gens, golds)]
            metrics = dict(reward=rewards.mean().item(), correct=sum(correct) / len(correct), **stats,
                           unfinished=sum(not g.finished for g in gens) / len(gens),
                           response_tokens=sum(len(g.token_ids) for g in gens) / len(gens))
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics["dev_acc"] = dev_acc = evaluate(model, dev, cfg.max_new_tokens)
                metrics.update(proxy_gold_curve(model, ref, reward_model, dev[:cfg.curve_prompts], cfg, curve_sampler))
            log.log(step, **metrics)
    mean_clip = sum(clip_fracs) / len(clip_fracs)
    save_stage(out_dir, cfg.stage, model, parent=stage("ppo").parent,  # ppo_rm too starts from sft
               training={**cfg.to_dict(), "seconds": timer.seconds, "final_kl": kl, "mean_clip_frac": mean_clip})
    return {"stage": cfg.stage, "seconds": timer.seconds, "final_kl": round(kl, 5),
            "mean_clip_frac": round(mean_clip, 5), "dev_acc": dev_acc}


if __name__ == "__main__":
    stage_cli(PPOConfig(), train, __doc__.splitlines()[0], presets=PRESETS)
