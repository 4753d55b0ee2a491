"""The RL stages against their references (issue: post-training as the papers define it).

Each objective is checked on toy numbers worked out by hand, with the equation it implements:
- GRPO's loss aggregation: Shao et al. (2024) eq. 3 (seq-mean-token-mean), DAPO (Yu et al. 2025,
  token-level loss: token-mean), Dr. GRPO (Liu et al. 2025: seq-mean-token-sum-norm, advantages
  not divided by the group std);
- PPO: Schulman et al. (2017) eq. 7 per token, K epochs over each batch (Algorithm 1), the critic's
  clipped regression (OpenAI Baselines' PPO2 / TRL's cliprange_value), k1 in the reward (Ouyang et
  al. 2022, eq. 2) over the same tokens as the loss;
- every RL log-prob at the sampling temperature: the trainer's log-prob of a sampled token equals
  the sampler's;
- unfinished rollouts earn nothing; preference pairs keep their sampled ids, both sides finished.
"""
import math

import pytest
import torch

from lessons_lib import train_grpo, train_ppo, train_reward_model
from lessons_lib.generation import Generation, batched_generate
from lessons_lib.losses import (LOSS_AGGREGATIONS, aggregate, group_advantages, kl_k1, kl_k3,
                                ppo_clipped_loss, value_loss)
from lessons_lib.model import GPT, GPTConfig
from lessons_lib.tokenizer import EOT, encode, encode_prompt
from lessons_lib.training import (minibatch_schedule, rollout_batch, rollout_reward, sequence_logprobs,
                                  user_prompt)

# The toy batch: two answers, ratio 1 everywhere, lengths 2 and 10, advantages +1 and -1.
# Per-token loss = -ratio * A = -A: -1 on the 2 tokens of the first answer, +1 on the 10 of the second.
TOY_LOSS = torch.tensor([[-1.0] * 2 + [0.0] * 8, [1.0] * 10])
TOY_MASK = torch.tensor([[1.0] * 2 + [0.0] * 8, [1.0] * 10])


def test_token_mean_is_dapos_aggregation():
    # (sum of all token losses) / (number of tokens) = (-2 + 10) / 12
    assert aggregate(TOY_LOSS, TOY_MASK, "token-mean").item() == pytest.approx(8 / 12)


def test_seq_mean_token_mean_is_grpo_eq3():
    # 1/G sum_i 1/|o_i| sum_t: (-2/2 + 10/10) / 2 = 0 -- each answer counts once, whatever its length
    assert aggregate(TOY_LOSS, TOY_MASK, "seq-mean-token-mean").item() == pytest.approx(0.0)


def test_seq_mean_token_sum_norm_is_dr_grpo():
    # 1/G sum_i (sum_t) / L with a constant L = 10: (-2/10 + 10/10) / 2 = 0.4, and it does not
    # depend on how the batch happens to be padded
    assert aggregate(TOY_LOSS, TOY_MASK, "seq-mean-token-sum-norm", norm=10).item() == pytest.approx(0.4)
    padded = (torch.cat([TOY_LOSS, torch.zeros(2, 5)], 1), torch.cat([TOY_MASK, torch.zeros(2, 5)], 1))
    assert aggregate(*padded, "seq-mean-token-sum-norm", norm=10).item() == pytest.approx(0.4)


def test_the_three_aggregations_through_ppo_clipped_loss():
    logp = torch.zeros(2, 10)  # ratio 1
    adv = torch.tensor([1.0, -1.0])
    got = {m: ppo_clipped_loss(logp, logp, adv, TOY_MASK, loss_agg=m, norm=10)[0].item() for m in LOSS_AGGREGATIONS}
    assert got == pytest.approx({"token-mean": 8 / 12, "seq-mean-token-mean": 0.0, "seq-mean-token-sum-norm": 0.4})


def test_aggregate_skips_rows_without_tokens_and_refuses_unknown_modes():
    loss, mask = torch.tensor([[2.0, 4.0], [9.0, 9.0]]), torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)  # not (3 + 0) / 2
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(loss, mask, "sum")
    with pytest.raises(ValueError, match="norm"):
        aggregate(loss, mask, "seq-mean-token-sum-norm")


def test_dr_grpo_advantages_are_not_divided_by_the_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])  # mean .25, population std sqrt(.1875)
    assert group_advantages(rewards, 4, scale=False).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    assert group_advantages(rewards, 4)[0].item() == pytest.approx(0.75 / math.sqrt(0.1875), rel=1e-5)
    cfg = train_grpo.GRPOConfig(group_size=4, loss_agg="seq-mean-token-sum-norm")
    assert train_grpo.advantages(rewards, cfg).tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_grpo_loss_puts_the_kl_inside_the_same_aggregation():
    # eq. 3: per token (surrogate + beta * KL), then 1/|o_i| and 1/G. Ratio 1, ref log-prob log(0.5)
    # against the policy's log(0.25): k3 = 2 - log 2 - 1 on every token.
    cfg = train_grpo.GRPOConfig(kl_coef=0.5, loss_agg="seq-mean-token-mean")
    logp = torch.full((2, 10), math.log(0.25))
    loss, kl, clipped = train_grpo.grpo_loss(logp, logp, torch.full((2, 10), math.log(0.5)),
                                             torch.tensor([1.0, -1.0]), TOY_MASK, cfg)
    k3 = 2 - math.log(2) - 1
    assert kl[0, 0].item() == pytest.approx(k3, rel=1e-5)
    assert loss.item() == pytest.approx(0.0 + 0.5 * k3, rel=1e-5)
    assert clipped.sum().item() == 0  # ratio 1: nothing clipped


def test_value_loss_clipped_like_the_policy():
    # old V = 0, new V = 1, return 0.5, clip 0.2: unclipped err (1 - .5)^2 = .25, clipped V = .2 gives
    # (.2 - .5)^2 = .09; the loss keeps the larger: 0.5 * .25. With return 2: (1-2)^2 = 1 vs (.2-2)^2 = 3.24.
    v, old, mask = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.ones(1, 1)
    assert value_loss(v, torch.tensor([[0.5]]), mask, old, clip=0.2).item() == pytest.approx(0.125)
    assert value_loss(v, torch.tensor([[2.0]]), mask, old, clip=0.2).item() == pytest.approx(0.5 * 3.24)
    assert value_loss(v, torch.tensor([[2.0]]), mask).item() == pytest.approx(0.5)  # unclipped as before


def test_k1_by_hand_and_k3s_gradient_is_the_other_kls():
    assert kl_k1(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))).item() == pytest.approx(math.log(2))
    # The exact expectation over x ~ p of k3's gradient, used as a loss on p's own samples (the
    # sampling weights are not differentiated): it is the gradient of KL(q || p), not of the
    # KL(p || q) whose value k3 estimates without bias. Checked against autograd in float64.
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p = torch.softmax(theta, 0)
    w = p.detach()  # the sampling distribution: not differentiated (samples are given)
    grad_k3 = torch.autograd.grad((w * kl_k3(p.log(), q.log())).sum(), theta, retain_graph=True)[0]
    grad_forward = torch.autograd.grad((q * (q / p).log()).sum(), theta, retain_graph=True)[0]   # KL(q || p)
    grad_reverse = torch.autograd.grad((p * (p / q).log()).sum(), theta)[0]                      # KL(p || q)
    assert torch.allclose(grad_k3, grad_forward, atol=1e-12)
    assert not torch.allclose(grad_k3, grad_reverse, atol=1e-3)


def test_minibatch_schedule_covers_every_rollout_once_per_epoch():
    steps = list(minibatch_schedule(10, minibatches=2, epochs=3, generator=torch.Generator().manual_seed(0)))
    assert [e for e, _ in steps] == [0, 0, 1, 1, 2, 2]
    for epoch in range(3):
        rows = torch.cat([mb for e, mb in steps if e == epoch])
        assert sorted(rows.tolist()) == list(range(10))
    assert [mb.tolist() for _, mb in steps[:2]] != [mb.tolist() for _, mb in steps[2:4]]  # reshuffled


def test_unfinished_rollouts_earn_nothing():
    right = Generation("so <answer>12</answer>", [1], [False], finished=True)
    cut = Generation("so <answer>12</answer> and", [1], [False], finished=False)
    assert rollout_reward(right, "12") == pytest.approx(1.2)
    assert rollout_reward(cut, "12") == 0.0


def test_token_rewards_by_hand():
    # the penalty arrives masked by the policy mask: a forced token (mask 0) costs nothing; the task
    # reward sits on the last generated token
    kl = torch.tensor([[0.5, 0.5, 0.5, 0.0]]) * torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    r = train_ppo.token_rewards(torch.tensor([1.0]), kl, torch.tensor([[1.0, 1.0, 1.0, 0.0]]), kl_coef=0.1)
    assert r[0].tolist() == pytest.approx([-0.05, 0.0, 1.0 - 0.05, 0.0])


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, max_seq_len=256)).eval()
    model.calculator = True
    return model


def test_trainer_logprobs_equal_the_samplers_at_the_sampling_temperature(small_model):
    prompts = [user_prompt(q) for q in ("What is 2+3?", "Tom has 4 apples and buys 5 more. How many?", "7*8=")]
    gens = batched_generate(small_model, prompts, max_new_tokens=24, greedy=False, temperature=0.7,
                            generator=torch.Generator().manual_seed(1), return_details=True, progress=False)
    idx, policy_mask, _ = rollout_batch(prompts, gens)
    at_t, at_one = sequence_logprobs(small_model, idx, 0.7), sequence_logprobs(small_model, idx, 1.0)
    for row, (p, g) in enumerate(zip(prompts, gens)):
        for i, lp in enumerate(g.logprobs):
            if lp is None:
                continue  # forced by the calculator: not sampled
            assert at_t[row, len(p) - 1 + i].item() == pytest.approx(lp, abs=1e-4)
    chosen = policy_mask[:, 1:].bool()
    assert (at_t[chosen] - at_one[chosen]).abs().max() > 0.01  # T = 1 would be another policy


def _rollout(model, epochs, minibatches, lr=1e-2):
    cfg = train_grpo.GRPOConfig(group_size=4, prompts_per_step=2, epochs=epochs, minibatches=minibatches,
                                max_new_tokens=16, lr=lr)
    torch.manual_seed(0)
    policy = GPT(model.config); policy.load_state_dict(model.state_dict()); policy.calculator = True
    ref = GPT(model.config); ref.load_state_dict(model.state_dict()); ref.eval()
    batch = [("What is 2+3?", "#### 5"), ("What is 4+4?", "#### 8")]
    idx, mask, _, gens = train_grpo.rollout(policy, batch, cfg, torch.Generator().manual_seed(3))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 2)  # any non-zero advantages: the rewards of a random model are 0
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    return train_grpo.update(policy, ref, opt, idx, mask, adv, cfg, torch.Generator().manual_seed(4))


def test_one_minibatch_one_epoch_is_on_policy_and_later_epochs_are_not(small_model):
    on_policy = _rollout(small_model, epochs=1, minibatches=1)
    assert on_policy["ratio_dev"] == 0.0 and on_policy["clip_frac"] == 0.0  # the ratio is exactly 1
    several = _rollout(small_model, epochs=3, minibatches=2)
    assert several["ratio_dev"] > 0.01  # after the first step the policy has moved: the ratio leaves 1
    assert several["clip_frac"] > 0.0   # ... far enough, at this lr, for the clip to act


def test_preference_pairs_keep_sampled_ids_and_both_sides_finished(monkeypatch):
    q, a = "What is 2+3?", "2+3=<<2+3=5>>5\n#### 5"
    gens = [Generation("<<2+3=5>>5 <answer>5</answer>", encode("<<2+3=5>>5 <answer>5</answer>") + [EOT],
                       [False] * 7 + [True] * 3 + [False] * 16 + [False], True),
            Generation("<answer>6</answer>", encode("<answer>6</answer>") + [EOT], [False] * 18, True),
            Generation("<answer>7", encode("<answer>7"), [False] * 9, False),  # cut off: never a rejected answer
            Generation("<answer>5</answer>", encode("<answer>5</answer>") + [EOT], [False] * 18, True)]
    monkeypatch.setattr(train_reward_model, "sample_responses", lambda *args, **kw: gens)
    cfg = train_reward_model.RewardModelConfig(samples=4, pairs_per_prompt=2)
    pairs = train_reward_model.build_pairs(None, [(q, a)], cfg, None)
    assert len(pairs) == 1  # two right answers, but only one finished wrong one
    pair = pairs[0]
    assert pair["chosen"]["ids"] == gens[0].token_ids and pair["rejected"]["ids"] == gens[1].token_ids
    assert pair["chosen"]["forced"] == [7, 8, 9]
    chosen, rejected = train_reward_model.pair_tensors(pair)
    assert chosen[-1] == EOT and rejected[-1] == EOT
    from lessons_lib.train_dpo import policy_mask
    n = len(encode_prompt([{"role": "user", "content": q}]))
    mask = policy_mask(n, pair["chosen"])
    assert mask[:n] == [0] * n and [i for i, m in enumerate(mask[n:]) if not m] == [7, 8, 9]


def test_reward_model_round_trip(tmp_path, small_model):
    rm = train_reward_model.RewardModel(small_model, mean=0.5, std=2.0)
    torch.nn.init.normal_(rm.head.weight, generator=torch.Generator().manual_seed(0))
    seqs = [encode("hello"), encode("a longer sequence")]
    train_reward_model.save_reward_model(tmp_path / "rm.pt", rm, {"parent": "sft"})
    loaded = train_reward_model.load_reward_model(tmp_path / "rm.pt")
    assert torch.allclose(loaded.score(seqs), rm.score(seqs), atol=1e-6)
    assert torch.allclose(rm.score(seqs), (rm(seqs) - 0.5) / 2.0)


def test_ppo_logs_the_kl_it_penalises_over_the_tokens_its_loss_covers(small_model):
    torch.manual_seed(1)
    policy = GPT(small_model.config); policy.load_state_dict(small_model.state_dict())
    ref = GPT(small_model.config); ref.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in
                                                        small_model.state_dict().items()}); ref.eval()
    prompts = [user_prompt("What is 2+3?")] * 2
    gens = [Generation("ab", [97, 98, EOT], [False, True, False], True), Generation("c", [99, EOT], [False, False], True)]
    idx, policy_mask, response_mask = rollout_batch(prompts, gens)
    pm, rm = policy_mask[:, 1:], response_mask[:, 1:]
    cfg = train_ppo.PPOConfig(minibatches=1, epochs=1, temperature=0.7, reward_model="")
    head = torch.nn.Linear(small_model.config.n_embd, 1)
    opt = torch.optim.AdamW(list(policy.parameters()) + list(head.parameters()), lr=1e-4)
    with torch.no_grad():
        k1 = kl_k1(sequence_logprobs(policy, idx, 0.7), sequence_logprobs(ref, idx, 0.7))
    stats = train_ppo.update(policy, head, ref, opt, idx, pm, rm, torch.tensor([1.0, 0.0]), cfg,
                             torch.Generator().manual_seed(0))
    expected = (k1 * pm).sum() / pm.sum()  # the forced token (97's successor 98) is left out
    assert stats["kl"] == pytest.approx(expected.item(), rel=1e-5)
    assert stats["kl"] != pytest.approx(((k1 * rm).sum() / rm.sum()).item(), rel=1e-3)
