"""Solutions to the exercises of `notebooks/07_one_rl_step.ipynb`. Try them first!"""
import math

import torch


# Exercise 1 · PPO's per-token reward. The KL penalty is paid on every generated token (the caller has
# already zeroed the KL where the policy did not choose the token); the verifier's reward is paid once,
# on the last generated token of each row: the answer is only judged when it is finished.
def token_rewards(rewards, kl, response_mask, kl_coef):
    """PPO's per-token reward: -kl_coef * kl on each generated token, plus the answer's reward on its last one."""
    r = -kl_coef * kl * response_mask
    for i in range(len(r)):
        positions = response_mask[i].nonzero()
        last = int(positions[-1]) if len(positions) else 0  # (a row without tokens: the library uses position 0)
        r[i, last] = r[i, last] + rewards[i]
    return r


# Exercise 2 · the three aggregations of a per-token loss (notebook 06, end of section 7).
def aggregate(per_token, mask, mode, norm=None):
    """A scalar from a (B, T) per-token loss, as GRPO, DAPO or Dr. GRPO average it."""
    mask = mask.to(per_token.dtype)
    if mode == "token-mean":  # every token of the batch weighs the same
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    tokens = mask.sum(dim=1)
    sums = (per_token * mask).sum(dim=1)
    if mode == "seq-mean-token-mean":  # each answer's mean, then the mean over answers (GRPO, eq. 3)
        per_seq = sums / tokens.clamp(min=1.0)
    elif mode == "seq-mean-token-sum-norm":  # each answer's sum over a constant (Dr. GRPO)
        per_seq = sums / norm
    else:
        raise ValueError(mode)
    rows = tokens > 0  # answers without a trainable token are left out
    return per_seq[rows].sum() / rows.sum().clamp(min=1)


# Exercise 3 · eq. 3 on a first pass, with answers of different lengths.
EQ3_FIRST_PASS_LOSS = 0.0
EQ3_FIRST_PASS = """\
Yes, still 0. On the first pass every ratio is 1 and k3 is 0, so each token's loss is -A_i, the same for
all tokens of answer i; eq. 3 first averages each answer over its own tokens (giving -A_i whatever its
length) and then averages the answers: -mean(A) = 0, because the advantages of every group sum to 0.
Token-mean is not 0 then: it weighs each answer by its number of tokens, -sum(A_i |o_i|) / sum(|o_i|), so
with a short right answer (A > 0) and long wrong ones the loss is positive. The loss value is 0 but its
gradient is not: d loss / d logp of a token of answer i is -A_i / (G |o_i|), which raises the
positive-advantage answers' tokens and lowers the others (and, under eq. 3, the short answers' tokens
the most)."""


# Exercise 4 · log-probs at T = 1 for samples drawn at T = 0.7.
WRONG_TEMPERATURE = """\
The ratio on the first minibatch would be pi_1(token) / pi_0.7(token) instead of exactly 1: for a token
the policy is sure of (p near 1 at both temperatures) about 1, but for the tokens that matter, where the
choice was open, far from it (section 2 prints the difference), and most of all on unlikely tokens,
whose probability is larger at T = 1. A token
whose "ratio" is already below 0.8 with a negative advantage, or above 1.2 with a positive one, is
clipped before the policy has moved at all: the clip would bind on a policy nobody sampled from, the
gradient of those tokens would be lost, and the KL to the reference would compare two T = 1 policies
rather than the one that produced the data."""


# Exercise 5 · DPO's first loss, and a pair of identical answers.
DPO_FIRST_LOSS = math.log(2)
DPO_FIRST_STEP = """\
Before the first step the policy is the reference, so both implicit rewards beta * (log pi - log ref) are
0 and the loss is -log sigmoid(0) = log 2 = 0.693 for any pair. With identical chosen and rejected
answers the two log-ratios are always equal: the margin is 0 whatever the weights, the loss stays at
log 2 and its gradient is exactly 0 (the chosen and rejected terms cancel). Pure DPO would not move; it
only learns from what differs between the two answers (in the course's pairs, the step where the
teacher's misreading and the right reading part)."""
