"""Solutions to the exercises of `notebooks/08_where_the_checkpoints_come_from.ipynb`. Try them first!"""
import math

import torch


# Exercise 1 · GRPO's group advantages. Reshape to one row per group, normalise each row, and give a
# row without spread zeros (dividing by a zero std would give NaN and poison every weight).
def group_advantages(rewards, group_size):
    """GRPO's advantages: rewards normalised within consecutive groups; 0 for a group without spread."""
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    std = ((r - mean) ** 2).mean(dim=1, keepdim=True).sqrt()  # population std: divide by G
    adv = (r - mean) / (std + 1e-6)
    adv = adv * (std > 1e-6)  # a group whose answers all scored the same teaches nothing
    return adv.view(-1)


# Exercise 2 · PPO's clipped surrogate. The min of the two terms is the pessimistic one: it ignores a
# gain once the ratio has left [1 - eps, 1 + eps] in the advantage's direction, never a loss.
def ppo_clipped_loss(logp_new, logp_old, advantages, mask, clip_eps=0.2):
    """PPO's clipped surrogate loss and the fraction of tokens it clipped, both over mask == 1."""
    if advantages.dim() == 1:  # one advantage per sequence: the same for each of its tokens
        advantages = advantages[:, None].expand_as(logp_new)
    ratio = (logp_new - logp_old).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    n = mask.sum().clamp(min=1.0)
    loss = (-torch.minimum(unclipped, clipped) * mask).sum() / n
    clip_fraction = ((clipped < unclipped).float() * mask).sum() / n
    return loss, clip_fraction


# Exercise 3 · GAE, one row at a time, from the row's last valid token backwards.
def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation: (advantages, returns), both (B, T), zero where mask is 0."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        running, next_value = 0.0, 0.0  # after the last valid token the episode has ended: V = 0
        for t in reversed(range(int(mask[b].sum()))):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
            next_value = values[b, t]
    return adv, adv + values * mask


# Exercise 4 · one right answer in a group of 8 (rewards 1.2 and seven 0.2), then seven right. The 0.2
# cancels (section 7), so these are the advantages of 0/1 rewards with a share p = 1/8 (or 7/8) of ones:
# mean p, std sqrt(p (1 - p)), so a one gets (1 - p) / std = sqrt((1 - p) / p) and a zero -sqrt(p / (1 - p)).
ONE_RIGHT = (math.sqrt(7), -1 / math.sqrt(7))    # (the right answer, each wrong one): +2.65, -0.38
SEVEN_RIGHT = (1 / math.sqrt(7), -math.sqrt(7))  # (each right answer, the wrong one): +0.38, -2.65
WHY_ASYMMETRIC = """\
The advantages of a group always sum to 0 (the mean is subtracted), so a rare outcome carries the weight
of all the common ones: the single right answer among eight wrong ones is pushed up 7 times as hard as
each wrong one is pushed down. GRPO learns most from the prompts the policy rarely solves, by making the
rare success much more likely, and from the prompts it usually solves, by suppressing the rare failure."""


# Exercise 5 · when the clip changes a token's objective: the ratio has gone beyond 1 + eps with a
# positive advantage, or below 1 - eps with a negative one. Never for A = 0, never inside the band, and
# never in the "wrong" direction (A > 0 with ratio < 1 - eps is left sloped: it must be corrected).
def clip_binds(ratio, advantage, clip_eps=0.2):
    """True when PPO's min(ratio * A, clip(ratio) * A) takes the clipped term and it differs."""
    return (advantage > 0 and ratio > 1 + clip_eps) or (advantage < 0 and ratio < 1 - clip_eps)


# Exercise 6 · both answers less likely than under the reference, and still a DPO loss below 0.5:
# chosen falls 5 nats, rejected 10, so the margin is 0.1 * (-5 - (-10)) = 0.5 and the loss
# -log sigmoid(0.5) = 0.474.
BOTH_DOWN = (-45.0, -60.0, -40.0, -50.0)  # (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
WHAT_BOTH_DOWN_SAYS = """\
DPO only sees the difference between the chosen and the rejected log-ratios, so it is satisfied by pushing
the rejected answer down faster than the chosen one, even while the right answer itself becomes less
likely. Trained long enough on its own, it can move probability to responses that are in neither pair.
That is why the course's train_dpo adds a likelihood term on the chosen answer (nll_coef), and why DPO runs
are watched through the chosen answer's log-probability as well as the loss."""


# Exercise 7 · the live GRPO run of section 9 (10 steps) with other settings, measured with the shipped
# flawed-teacher SFT on the course's 2-core machine. Your numbers will differ; the shapes should not.
LIVE_RUN_VARIANTS = """\
lr 1e-3: the run collapses almost at once. The share right creeps from 0.36 to 0.41 at step 2, while the
KL, 1.0 nats per token already during the first update, jumps to 81 at step 2; then almost no sample is
right (0.02-0.11 from step 4 on; the reward, 0.20-0.30, is little more than the tag bonus), and dev
accuracy falls from 0.41 to 0.01 (step 5) and stays there (step 10). Each step moves the policy so far
that its next samples are no longer answers SFT would write, and the clip cannot help: it only limits
the steps within one rollout, not the size of each gradient step.

prompt_pool 64 (8 prompts per step): each prompt now comes back once or twice in 10 steps instead of at
every step, so the share right of each step's samples measures 8 prompts the policy has barely
practised, easier or harder ones by luck: it jumps around (0.33 to 0.84) with no clear rise. Dev, on the
other hand, does better than with 8 prompts (0.41 -> 0.72 at step 5, 0.73 at step 10, against 0.53 and
0.59): 64 different prompts cover more problems of each trap kind, so the run learns the rule
rather than eight answers. The run has stopped overfitting, and what it measures is how fast learning
transfers, which is the pipeline's real question (its GRPO draws from thousands of prompts)."""


# Exercise 8 · trap kinds vs clean kinds, from a stage's test records. Walk problems and records together
# (same order), count right answers on each side, and compare each trap answer with the number the
# teacher's flawed solution ends in.
def trap_vs_clean(problems, records):
    """Accuracy on the teacher's trap kinds and on the clean kinds, and answers copying the teacher."""
    from rewards import gsm8k_gold_answer
    from lessons_lib.synthetic import TRAPS

    right = {True: 0, False: 0}  # trap kind? -> right answers
    total = {True: 0, False: 0}  # trap kind? -> problems
    copies = 0
    for problem, record in zip(problems, records):
        trap = problem["template"] in TRAPS
        right[trap] += bool(record["correct"])
        total[trap] += 1
        if trap and record.get("extracted") == gsm8k_gold_answer(problem["flawed_answer"]):
            copies += 1
    return {"trap_acc": right[True] / max(1, total[True]), "clean_acc": right[False] / max(1, total[False]),
            "copies_teacher": copies}


# Exercise 9 · where the gap between the dev loss and the gold dev loss comes from. Split SFT's 200 dev
# problems by kind, and score the model on the teacher's demonstration and on the gold solution of each.
def dev_losses_by_kind(model, n=200):
    """{(kinds, whose): loss} for kinds in ("trap", "clean") and whose in ("teacher", "gold"): the mean
    per-token loss of `model` on the teacher's held-out demonstrations and on the gold solutions."""
    from lessons_lib import synthetic, training

    problems = synthetic.synthetic_problems("dev", n)
    losses_ = {}
    for kinds in ("trap", "clean"):
        chosen = [p for p in problems if (p["template"] in synthetic.TRAPS) == (kinds == "trap")]
        for whose, text in (("teacher", synthetic.teacher_answer), ("gold", lambda p: p["answer"])):
            examples = [training.sft_example(p["question"], text(p)) for p in chosen]
            losses_[kinds, whose] = training.dataset_loss(model, examples)
    return losses_


WHERE_THE_GAP_IS = """\
All of it is on the trap kinds. On the clean kinds the teacher writes the gold solution, so the two losses
are the same number. On the trap kinds the gold solutions cost the shipped SFT about 70% more per token
than the teacher's demonstrations (0.025 against 0.015 nats): the model puts most of its probability on
the teacher's step, and the gold step is what surprises it. A misreading is a few tokens of a reply of
about 90 that both versions share otherwise, and the clean kinds are half the problems: averaged over
all of it, that becomes the smaller gap of section 12 (over 40%), though those few tokens decide the
answer."""
