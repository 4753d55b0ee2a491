"""The losses of post-training, each a few lines of tensor code you can check by hand.

Shapes: B = sequences in the batch, T = tokens. Per-token quantities are (B, T) with a float `mask`
(1 = a token the model chose and we train on, 0 = prompt, padding, or a calculator-forced token).

- `token_logprobs`        log p(token) under the model, the building block of every loss below
- `bradley_terry_loss`    reward model: P(chosen > rejected) = sigmoid(r_c - r_r)
- `dpo_loss`              DPO (Rafailov et al. 2023): preference loss on policy/reference log-ratios
- `group_advantages`      GRPO (Shao et al. 2024): reward normalised within each prompt's group
- `ppo_clipped_loss`      PPO (Schulman et al. 2017): clipped surrogate, + the fraction clipped
- `gae`, `value_loss`     PPO's critic: generalised advantage estimation and its regression target
- `kl_k3`                 the k3 estimator of KL(policy || reference), >= 0 per token
"""
import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (0 if the mask is empty, not NaN)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


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


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: (r - mean_group) / std_group for consecutive groups of `group_size`.

    A group where every sample got the same reward (all right or all wrong) teaches nothing:
    its advantages are exactly 0 (not 0/0). std is the population std (divide by G)."""
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=False, keepdim=True)
    adv = (r - mean) / (std + eps)
    adv = torch.where(std > eps, adv, torch.zeros_like(adv))  # zero-spread group -> no signal
    return adv.view(-1)


def ppo_clipped_loss(logp_new, logp_old, advantages, mask, clip_eps: float = 0.2):
    """Clipped surrogate: -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A), masked mean over tokens.

    `advantages` is (B, T) or (B,) (one per sequence, broadcast over its tokens). Returns
    (loss, clip_fraction): the share of tokens where clipping changed the objective."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(logp_new)
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped < unclipped).float(), mask)  # min picked the clipped term
    return loss, clip_fraction.detach()


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


def value_loss(values, returns, mask) -> torch.Tensor:
    """0.5 * (V - return)^2 averaged over valid tokens: the critic regresses the returns."""
    return 0.5 * masked_mean((values - returns) ** 2, mask)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || ref) from samples of the policy (Schulman 2020):
    exp(ref - logp) - (ref - logp) - 1. Unbiased, always >= 0, low variance."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0
