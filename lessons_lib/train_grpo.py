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

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from rewards import gsm8k_gold_answer, reward_gsm8k
from lessons_lib.losses import group_advantages, kl_k3, masked_mean, ppo_clipped_loss
from lessons_lib.training import (Timer, evaluate, load_trainable, prompt_stream, qa, rollout_batch, sample,
                                  save_stage, seed_everything, sequence_logprobs, stage_cli, stage_logger,
                                  user_prompt)

DEFAULTS = dict(seed=0, init="checkpoints/sft.pt", stage="grpo", prompt_offset=1000, prompt_pool=4000,
                steps=60, prompts_per_step=8, group_size=8, minibatches=2, lr=1e-4, kl_coef=0.04,
                clip_eps=0.2, temperature=1.0, max_new_tokens=256, eval_every=20, dev_acc_n=200)


def rollout(model, batch, cfg, generator):
    """Sample G answers per prompt; returns the batch tensors, rewards and the generations."""
    prompts = [user_prompt(q) for q, _ in batch for _ in range(cfg["group_size"])]
    golds = [gsm8k_gold_answer(a) for _, a in batch for _ in range(cfg["group_size"])]
    gens = sample(model, prompts, cfg, generator)
    rewards = torch.tensor([reward_gsm8k(g.text, gold) for g, gold in zip(gens, golds)])
    idx, policy_mask, _ = rollout_batch(prompts, gens)
    return idx, policy_mask[:, 1:], rewards, gens


def update(model, ref, opt, idx, mask, adv, cfg):
    """PPO-style clipped update on minibatches of one rollout; returns mean KL and clip fraction."""
    with torch.no_grad():
        old_logp, ref_logp = sequence_logprobs(model, idx), sequence_logprobs(ref, idx)
    kls, clips = [], []
    for mb in torch.arange(len(idx)).chunk(cfg["minibatches"]):
        logp = sequence_logprobs(model, idx[mb])
        pg_loss, clip_frac = ppo_clipped_loss(logp, old_logp[mb], adv[mb], mask[mb], cfg["clip_eps"])
        kl = masked_mean(kl_k3(logp, ref_logp[mb]), mask[mb])
        opt.zero_grad(set_to_none=True)
        (pg_loss + cfg["kl_coef"] * kl).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        kls.append(kl.item()); clips.append(clip_frac.item())
    return sum(kls) / len(kls), sum(clips) / len(clips)


def train(cfg: dict, out_dir, progress: bool = True) -> dict:
    """GRPO from cfg["init"]; write out_dir/<stage>.pt and logs/<stage>.jsonl."""
    seed_everything(cfg["seed"])
    timer = Timer()
    model = load_trainable(cfg["init"])
    ref = copy.deepcopy(model).eval().requires_grad_(False)  # the frozen SFT reference
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.95), weight_decay=0.0)
    prompts = prompt_stream(qa("train", cfg["prompt_pool"], offset=cfg["prompt_offset"]),
                            cfg["prompts_per_step"], cfg["seed"])
    dev = qa("dev", cfg["dev_acc_n"])
    generator = torch.Generator().manual_seed(cfg["seed"])
    G, dev_acc = cfg["group_size"], None
    with stage_logger(out_dir, cfg["stage"], cfg) as log:
        log.log(0, dev_acc=evaluate(model, dev, cfg["max_new_tokens"]))
        for step in tqdm(range(1, cfg["steps"] + 1), desc=cfg["stage"], disable=not progress):
            idx, mask, rewards, gens = rollout(model, next(prompts), cfg, generator)
            adv = group_advantages(rewards, G)
            kl, clip_frac = update(model, ref, opt, idx, mask, adv, cfg)
            spread = (rewards.view(-1, G).std(dim=1) > 0).float().mean().item()
            metrics = dict(reward=rewards.mean().item(), correct=(rewards >= 1.0).float().mean().item(),
                           kl=kl, clip_frac=clip_frac, groups_with_spread=spread,
                           response_tokens=sum(len(g.token_ids) for g in gens) / len(gens))
            if step % cfg["eval_every"] == 0 or step == cfg["steps"]:
                metrics["dev_acc"] = dev_acc = evaluate(model, dev, cfg["max_new_tokens"])
            log.log(step, **metrics)
    save_stage(out_dir, cfg["stage"], model, parent="sft",
               training={**cfg, "seconds": timer.seconds, "final_kl": kl})
    return {"stage": cfg["stage"], "seconds": timer.seconds, "final_kl": round(kl, 5), "dev_acc": dev_acc}


if __name__ == "__main__":
    stage_cli("grpo", DEFAULTS, train, __doc__.splitlines()[0])
