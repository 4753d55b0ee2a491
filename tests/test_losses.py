"""Each loss checked on small tensors whose answer is computed by hand."""
import math

import pytest
import torch

from lessons_lib.losses import (bradley_terry_loss, dpo_loss, gae, group_advantages, kl_k3,
                                masked_mean, ppo_clipped_loss, token_logprobs, value_loss)


def test_masked_mean_ignores_masked_and_handles_empty():
    x = torch.tensor([[1.0, 2.0, 100.0]])
    assert masked_mean(x, torch.tensor([[1, 1, 0]])).item() == pytest.approx(1.5)
    assert masked_mean(x, torch.zeros(1, 3)).item() == 0.0


def test_token_logprobs_uniform():
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens
    lp = token_logprobs(logits, torch.tensor([[0, 3]]))
    assert torch.allclose(lp, torch.full((1, 2), -math.log(4)))


def test_bradley_terry_value_and_direction():
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-2))))
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2))
    r_c = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(r_c, torch.tensor([0.0])).backward()
    assert r_c.grad.item() < 0  # gradient descent raises the chosen score


def test_dpo_loss_beta_and_sign():
    # policy moved +2 nats toward chosen, -1 on rejected, relative to the reference
    pc, pr, rc, rr = map(torch.tensor, ([-3.0], [-6.0], [-5.0], [-5.0]))
    loss, r_c, r_r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert r_c.item() == pytest.approx(1.0) and r_r.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))
    # at the reference the loss is log 2 whatever beta is
    assert dpo_loss(rc, rr, rc, rr, beta=3.0)[0].item() == pytest.approx(math.log(2))
    # preferring the rejected answer is penalised more than log 2
    assert dpo_loss(pr, pc, rc, rr, beta=0.5)[0].item() > math.log(2)
    # larger beta sharpens: same log-ratio margin -> lower loss when it is in the right direction
    assert dpo_loss(pc, pr, rc, rr, beta=1.0)[0] < dpo_loss(pc, pr, rc, rr, beta=0.1)[0]


def test_group_advantages_normalised_and_zero_spread():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0,   1.2, 1.2, 1.2, 1.2,   0.0, 0.0, 0.0, 0.0])
    adv = group_advantages(rewards, group_size=4)
    assert torch.allclose(adv[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)  # mean .5, std .5
    assert torch.equal(adv[4:], torch.zeros(8))  # all-right and all-wrong groups: no signal


def test_group_advantages_one_right_of_four():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4)
    std = math.sqrt(0.1875)  # mean .25; population variance (.75^2 + 3*.25^2)/4
    assert adv[0].item() == pytest.approx(0.75 / std, rel=1e-5)
    assert adv[1].item() == pytest.approx(-0.25 / std, rel=1e-5)


def test_ppo_clipping_by_hand():
    logp_old = torch.zeros(1, 4)
    logp_new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5]]))  # ratios
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clip_frac = ppo_clipped_loss(logp_new, logp_old, adv, torch.ones(1, 4), clip_eps=0.2)
    # terms: min(1.5, 1.2)=1.2 ; min(.5,.8)=.5 ; min(-1.1,-1.1)=-1.1 ; min(-1.5,-1.2)=-1.5
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 1.1 - 1.5) / 4, rel=1e-5)
    assert clip_frac.item() == pytest.approx(0.25)  # only the first token was clipped


def test_ppo_sequence_advantage_broadcast_and_mask():
    logp = torch.zeros(2, 3)
    loss, _ = ppo_clipped_loss(logp, logp, torch.tensor([2.0, -1.0]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert loss.item() == pytest.approx(-(2 + 2 - 1) / 3)


def test_ppo_gradient_zero_when_clipped():
    logp_new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _ = ppo_clipped_loss(logp_new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    loss.backward()
    assert logp_new.grad.item() == 0.0  # past 1+eps with A>0: no further push


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])  # the last value is padding and must be ignored
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.7                 # terminal: no bootstrap
    d1 = 0.0 + 0.7 - 0.6
    d0 = 0.0 + 0.6 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2, 0.0]]), atol=1e-6)
    assert torch.allclose(ret[0, :3], adv[0, :3] + values[0, :3])


def test_gae_lambda_one_gives_monte_carlo_return():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 0.9]])
    _, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(ret, torch.ones(1, 3))


def test_value_loss():
    v = torch.tensor([[1.0, 3.0, 7.0]])
    assert value_loss(v, torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1, 1, 0]])).item() == pytest.approx(0.5 * (1 + 4) / 2)


def test_kl_k3_by_hand_and_nonnegative():
    assert kl_k3(torch.tensor(0.3), torch.tensor(0.3)).item() == 0.0
    logp, ref = torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25))
    assert kl_k3(logp, ref).item() == pytest.approx(0.5 - math.log(0.5) - 1, rel=1e-5)
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert (kl_k3(x, torch.randn(100, generator=torch.Generator().manual_seed(1))) >= 0).all()


def test_kl_k3_is_unbiased_for_true_kl():
    p = torch.tensor([0.7, 0.2, 0.1]); q = torch.tensor([0.4, 0.4, 0.2])
    true_kl = (p * (p / q).log()).sum()
    expected_k3 = (p * kl_k3(p.log(), q.log())).sum()  # exact expectation over x ~ p
    assert expected_k3.item() == pytest.approx(true_kl.item(), rel=1e-5)
