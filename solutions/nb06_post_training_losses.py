"""Solutions to the exercises of `notebooks/06_post_training_losses.ipynb`. Try them first!"""
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
# cancels (section 7 of the notebook), so these are the advantages of 0/1 rewards with a share p = 1/8 (or 7/8) of ones:
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
