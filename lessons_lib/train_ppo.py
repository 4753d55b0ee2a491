"""Stage -- ppo: Proximal Policy Optimization (Schulman et al. 2017) with a value head, from SFT.

The RLHF recipe (Ouyang et al. 2022), with the verifiable reward instead of a learned one:
- reward: `reward_gsm8k` of the finished answer (1.0 correct + 0.2 well-formed) at its last token,
  minus a per-token KL penalty `kl_coef * (log pi - log ref)` that keeps the policy near SFT.
  (Not blended with the reward model: the verifier is exact, the reward model is not.)
- critic: a linear value head on the policy's final hidden states (`return_hidden=True`),
  trained to predict the return; GAE (gamma=1, lambda=1) turns rewards and values into
  per-token advantages, whitened over the batch. (lambda=0.95 was tried first: with ~90-token
  answers, a reward at the end reaches the first tokens as 0.95^90 ~ 1%, and the early tokens are
  where the choices are made; with a freshly initialised critic that left PPO nearly blind.)
- update: the clipped ratio objective on the tokens the policy chose (calculator-forced ones masked).
"""
import copy
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer, reward_gsm8k
from lessons_lib.config import StageConfig, knob, text
from lessons_lib.losses import gae, kl_k3, masked_mean, ppo_clipped_loss, value_loss
from lessons_lib.stages import stage
from lessons_lib.training import (Timer, cycle_batches, evaluate, load_trainable, rollout_batch, sample_responses,
                                  save_stage, seed_everything, sequence_logprobs, stage_cli, stage_logger,
                                  synthetic_pairs, user_prompt)


@dataclass
class PPOConfig(StageConfig):
    """The shipped recipe: 40 steps of 32 prompts x 2 sampled answers at T = 0.7, a linear critic."""
    seed: int = knob(0, lo=0)
    init: str = text("checkpoints/sft.pt", help="the policy to train (and the frozen reference)")
    stage: str = text("ppo", help="the checkpoint's name")
    prompt_offset: int = knob(1000, lo=0, help="where the RL prompts start in train (after SFT's pool)")
    prompt_pool: int = knob(4000, lo=1)
    steps: int = knob(40, lo=1, help="iterations, each on a fresh batch of rollouts")
    prompts_per_step: int = knob(32, lo=1)
    samples_per_prompt: int = knob(2, lo=1)
    minibatches: int = knob(2, lo=1, help="optimizer steps per pass over a batch")
    lr: float = knob(1e-4, lo=0, above=True)
    value_lr: float = knob(1e-3, lo=0, above=True, help="learning rate of the critic's head")
    kl_coef: float = knob(0.04, lo=0, help="per-token KL penalty in the reward")
    clip_eps: float = knob(0.2, lo=0, above=True, hi=1)
    gamma: float = knob(1.0, lo=0, hi=1)
    lam: float = knob(1.0, lo=0, hi=1, help="GAE's lambda")
    value_coef: float = knob(0.5, lo=0)
    temperature: float = knob(0.7, lo=0, above=True, help="sampling temperature of the rollouts")
    max_new_tokens: int = knob(160, lo=1)
    eval_every: int = knob(10, lo=1)
    dev_acc_n: int = knob(200, lo=1)

    def cross_field_problems(self):
        n = self.prompts_per_step * self.samples_per_prompt
        return [f"--minibatches {self.minibatches} exceeds the {n} rollouts of a step"] if self.minibatches > n else []


def token_rewards(rewards, logp, ref_logp, response_mask, kl_coef):
    """Per-token reward: -kl_coef * (logp - ref_logp) on every generated token, plus the task
    reward on the last one (the answer is only judged when it is finished)."""
    r = -kl_coef * (logp - ref_logp) * response_mask
    last = (response_mask * torch.arange(response_mask.shape[1])).argmax(dim=1)  # last generated token
    r[torch.arange(len(r)), last] += rewards
    return r


def whiten(x, mask):
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + 1e-6)


def update(model, head, ref, opt, idx, policy_mask, response_mask, rewards, cfg):
    """One PPO iteration over a rollout: GAE with the current critic, then clipped minibatch steps."""
    with torch.no_grad():
        old_logp, hidden = sequence_logprobs(model, idx, return_hidden=True)
        ref_logp = sequence_logprobs(ref, idx)
        values = head(hidden).squeeze(-1) * response_mask
        r = token_rewards(rewards, old_logp, ref_logp, response_mask, cfg.kl_coef)
        adv, returns = gae(r, values, response_mask, cfg.gamma, cfg.lam)
        adv = whiten(adv, policy_mask)
    stats = []
    for mb in torch.arange(len(idx)).chunk(cfg.minibatches):
        logp, hidden = sequence_logprobs(model, idx[mb], return_hidden=True)
        pg_loss, clip_frac = ppo_clipped_loss(logp, old_logp[mb], adv[mb], policy_mask[mb], cfg.clip_eps)
        v_loss = value_loss(head(hidden.detach()).squeeze(-1), returns[mb], response_mask[mb])  # critic only
        opt.zero_grad(set_to_none=True)
        (pg_loss + cfg.value_coef * v_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        kl = masked_mean(kl_k3(logp.detach(), ref_logp[mb]), policy_mask[mb])
        stats.append((kl.item(), clip_frac.item(), v_loss.item()))
    return [sum(s) / len(s) for s in zip(*stats)]


def train(cfg: PPOConfig, out_dir, progress: bool = True, use_wandb: bool = False) -> dict:
    """PPO from cfg.init; write out_dir/<stage>.pt and logs/<stage>.jsonl."""
    seed_everything(cfg.seed)
    timer = Timer()
    model = load_trainable(cfg.init)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    head = torch.nn.Linear(model.config.n_embd, 1)  # the critic: V(prefix) from the policy's features
    torch.nn.init.zeros_(head.weight); torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": cfg.lr},
                             {"params": head.parameters(), "lr": cfg.value_lr}], betas=(0.9, 0.95), weight_decay=0.0)
    prompts = cycle_batches(synthetic_pairs("train", cfg.prompt_pool, offset=cfg.prompt_offset),
                            cfg.prompts_per_step, random.Random(cfg.seed))
    dev = synthetic_pairs("dev", cfg.dev_acc_n)
    generator = torch.Generator().manual_seed(cfg.seed)
    k, dev_acc = cfg.samples_per_prompt, None
    with stage_logger(out_dir, cfg.stage, cfg, use_wandb) as log:
        log.log(0, dev_acc=evaluate(model, dev, cfg.max_new_tokens))
        for step in tqdm(range(1, cfg.steps + 1), desc=cfg.stage, disable=not progress):
            batch = next(prompts)
            prompt_ids = [user_prompt(q) for q, _ in batch for _ in range(k)]
            golds = [gsm8k_gold_answer(a) for _, a in batch for _ in range(k)]
            gens = sample_responses(model, prompt_ids, cfg.max_new_tokens, cfg.temperature, generator)
            rewards = torch.tensor([reward_gsm8k(g.text, gold) for g, gold in zip(gens, golds)])
            idx, policy_mask, response_mask = rollout_batch(prompt_ids, gens)
            kl, clip_frac, v_loss = update(model, head, ref, opt, idx, policy_mask[:, 1:], response_mask[:, 1:],
                                           rewards, cfg)
            metrics = dict(reward=rewards.mean().item(), correct=(rewards >= 1.0).float().mean().item(),
                           kl=kl, clip_frac=clip_frac, value_loss=v_loss)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics["dev_acc"] = dev_acc = evaluate(model, dev, cfg.max_new_tokens)
            log.log(step, **metrics)
    save_stage(out_dir, cfg.stage, model, parent=stage("ppo").parent,
               training={**cfg.to_dict(), "seconds": timer.seconds, "final_kl": kl})
    return {"stage": cfg.stage, "seconds": timer.seconds, "final_kl": round(kl, 5), "dev_acc": dev_acc}


if __name__ == "__main__":
    stage_cli(PPOConfig(), train, __doc__.splitlines()[0])
