"""The losses of post-training, each a few lines of tensor code you can check by hand.

Shapes: B = sequences in the batch, T = tokens. Per-token quantities are (B, T) with a float `mask`
(1 = a token the model chose and we train on, 0 = prompt, padding, or a calculator-forced token).

- `token_logprobs`        log p(token) under the model, the building block of every loss below
- `bradley_terry_loss`    reward model: P(chosen > rejected) = sigmoid(r_c - r_r)
- `dpo_loss`              DPO (Rafailov et al. 2023, eq. 7): preference loss on policy/reference log-ratios
- `group_advantages`      GRPO (Shao et al. 2024, sec. 4.1.2): reward relative to its prompt's group
- `clipped_surrogate`     PPO (Schulman et al. 2017, eq. 7): the clipped ratio objective, per token
- `aggregate`             how per-token losses become one number: the three choices GRPO variants differ on
- `ppo_clipped_loss`      the two above together, + the fraction of tokens clipped
- `gae`, `value_loss`     PPO's critic: generalised advantage estimation and its (clipped) regression target
- `kl_k1`, `kl_k3`        two estimators of KL(policy || reference) from the policy's own samples
"""
import torch
import torch.nn.functional as F

# How a per-token loss l[i, t] becomes the number we differentiate (names as in verl's `loss_agg_mode`):
#   token-mean               sum_i sum_t l / sum_i |o_i|        DAPO (Yu et al. 2025): every token weighs the same
#   seq-mean-token-mean      1/G sum_i (1/|o_i| sum_t l)        GRPO (Shao et al. 2024, eq. 3): every answer weighs the same
#   seq-mean-token-sum-norm  1/G sum_i (sum_t l) / L            Dr. GRPO (Liu et al. 2025): a constant L, no length bias
LOSS_AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (0 if the mask is empty, not NaN)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              norm: float | None = None) -> torch.Tensor:
    """One scalar from a (B, T) per-token loss, as `mode` says (see LOSS_AGGREGATIONS above).

    The modes differ in how much a long answer counts. With token-mean a 10-token answer pulls five
    times as hard as a 2-token one; seq-mean-token-mean first averages inside each answer, so each
    counts once, but then a token of a short answer weighs more than one of a long answer (the length
    bias Dr. GRPO points out: a wrong answer is penalised less per token the longer it rambles);
    seq-mean-token-sum-norm divides every answer by the same constant `norm` (the generation budget),
    so no token weighs more than another and the loss does not change with the batch's lengths.
    Rows with no trainable token are left out of the sequence means."""
    mask = mask.to(per_token.dtype)
    if mode == "token-mean":
        return masked_mean(per_token, mask)
    per_seq = (per_token * mask).sum(dim=1)
    has_tokens = mask.sum(dim=1) > 0
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(dim=1).clamp(min=1.0)
    elif mode == "seq-mean-token-sum-norm":
        if not norm or norm <= 0:
            raise ValueError("seq-mean-token-sum-norm needs a positive constant `norm` (e.g. max_new_tokens)")
        per_seq = per_seq / norm
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; use one of {', '.join(LOSS_AGGREGATIONS)}")
    return per_seq[has_tokens].sum() / has_tokens.sum().clamp(min=1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits and (B, T) target ids -> (B, T) log-probabilities of the targets."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected): the reward model learns to score chosen above rejected.
    Only the *difference* matters, so rewards are defined up to a constant."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1):
    """DPO on summed sequence log-probs (each (B,)). Implicit reward r = beta * (log pi - log ref).

    loss = -log sigmoid(r_chosen - r_rejected). Returns (loss, r_chosen, r_rejected); the
    fraction of pairs with r_chosen > r_rejected is the "implicit-reward accuracy" we log.
    Larger beta = a stronger pull to stay near the reference."""
    r_chosen = beta * (policy_chosen - ref_chosen)
    r_rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(r_chosen - r_rejected).mean()
    return loss, r_chosen.detach(), r_rejected.detach()


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage for consecutive groups of `group_size`: (r - mean_group) / std_group.

    `scale=False` is Dr. GRPO's advantage, r - mean_group: dividing by the std makes a question that
    the group almost always gets right (small std) weigh as much as an open one; without it, a
    reward difference of 1 is worth the same everywhere. A group where every sample got the same
    reward (all right or all wrong) teaches nothing: its advantages are exactly 0 (not 0/0).
    std is the population std (divide by G)."""
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=False, keepdim=True)
    adv = (r - mean) / (std + eps) if scale else r - mean
    adv = torch.where(std > eps, adv, torch.zeros_like(adv))  # zero-spread group -> no signal
    return adv.view(-1)


def clipped_surrogate(logp_new, logp_old, advantages, clip_eps: float = 0.2):
    """PPO's per-token loss -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A), ratio = pi_new / pi_old,
    and a (B, T) indicator of where the clipped term was the smaller one (its gradient is then 0).
    `advantages` is (B, T) or (B,) (one per sequence, broadcast over its tokens)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(logp_new)
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped).float()


def ppo_clipped_loss(logp_new, logp_old, advantages, mask, clip_eps: float = 0.2, loss_agg: str = "token-mean",
                     norm: float | None = None):
    """The clipped surrogate aggregated over the batch (`aggregate`'s modes; PPO uses token-mean).
    Returns (loss, clip_fraction): the share of trainable tokens where clipping changed the objective."""
    per_token, clipped = clipped_surrogate(logp_new, logp_old, advantages, clip_eps)
    return aggregate(per_token, mask, loss_agg, norm), masked_mean(clipped, mask).detach()


def gae(rewards, values, mask, gamma: float = 1.0, lam: float = 0.95):
    """Generalised advantage estimation over (B, T) rewards and values, valid where mask is 1.

    delta_t = r_t + gamma * V_{t+1} - V_t (V after the last valid token is 0: the episode ends);
    A_t = delta_t + gamma * lam * A_{t+1}. Returns (advantages, returns = advantages + values).
    Tokens must be contiguous per row (a mask like 1 1 1 0 0), as in a generated response."""
    B, T = rewards.shape
    mask = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, dtype=rewards.dtype)
    next_value = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        adv[:, t] = next_adv
        next_value = values[:, t] * mask[:, t]  # becomes V_{t+1} for step t-1; 0 past the end
    return adv, adv + values * mask


def value_loss(values, returns, mask, old_values=None, clip: float | None = None) -> torch.Tensor:
    """0.5 * (V - return)^2 averaged over valid tokens: the critic regresses the returns.

    With `old_values` and `clip` the critic is clipped like the policy (OpenAI Baselines' PPO2,
    TRL's `cliprange_value`): V may move at most `clip` from the value it had when the rollout was
    scored, and the loss takes the worse of the clipped and unclipped errors, so one epoch over a
    batch cannot drag the critic far on a few noisy returns."""
    err = (values - returns) ** 2
    if clip is not None and old_values is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(policy || ref) from samples of the policy: log pi - log ref.
    Unbiased, but negative on some tokens and noisy; its sum over an answer is the answer's
    log-ratio, which is what PPO's reward is penalised by (Ouyang et al. 2022, eq. 2)."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || ref) from samples of the policy (Schulman 2020):
    exp(ref - logp) - (ref - logp) - 1. Unbiased, always >= 0, low variance. GRPO puts it in the
    loss (Shao et al. 2024, eq. 4). Unbiased as a *value*, but not as a gradient: differentiated as a
    loss on the policy's own samples, its expected gradient is E[(1 - ref/pi) grad log pi], which is the
    gradient of KL(ref || policy), the other direction, not of the KL(policy || ref) it estimates."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0
