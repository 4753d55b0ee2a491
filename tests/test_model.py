"""The GPT: shapes, KV cache == full forward, padding mask + positions == each row alone, no NaN."""
import pytest
import torch

from lessons_lib.generation import _left_pad
from lessons_lib.model import GPT, GPTConfig, build_attention_mask

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=32, max_seq_len=64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a 2nd thread only adds synchronisation (and stalls on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(SMALL).eval()


def test_default_config_is_the_course_size():
    c = GPTConfig()
    assert (c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.max_seq_len) == (264, 4, 4, 128, 1280)
    m = GPT()
    assert m.calculator is False and m.meta == {}
    assert m.lm_head.weight is m.wte.weight  # tied head


def test_shapes_and_hidden(model):
    idx = torch.randint(0, 264, (3, 7))
    logits, hidden = model(idx, return_hidden=True)
    assert logits.shape == (3, 7, 264) and logits.dtype == torch.float32
    assert hidden.shape == (3, 7, 32)
    assert torch.equal(model.lm_head(hidden), logits)


def test_kv_cache_one_token_at_a_time_matches_full_forward(model):
    idx = torch.randint(0, 264, (2, 12))
    full = model(idx)
    cache = model.new_kv_cache(2, 12)
    steps = torch.cat([model(idx[:, t:t + 1], kv_cache=cache) for t in range(12)], dim=1)
    assert cache.length == 12
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


def test_several_new_tokens_meet_a_cache(model):
    """The classic bug: with a cache, query length != key length, so the causal mask needs an offset."""
    idx = torch.randint(0, 264, (2, 12))
    full = model(idx)
    cache = model.new_kv_cache(2, 12)
    chunks = [model(idx[:, a:b], kv_cache=cache) for a, b in [(0, 5), (5, 9), (9, 12)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_left_padded_batch_matches_each_row_alone(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    idx, mask, pos = _left_pad(prompts, "cpu")
    batch = model(idx, pos, mask)
    for r, p in enumerate(prompts):
        alone = model(torch.tensor([p]))
        torch.testing.assert_close(batch[r, -len(p):], alone[0], rtol=1e-5, atol=1e-5)


def test_masked_keys_contribute_exact_zeros(model):
    """Whatever sits in pad positions, real tokens' outputs are bit-for-bit the same."""
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    idx, mask, pos = _left_pad(prompts, "cpu")
    other = idx.clone()
    other[1, :3] = torch.tensor([100, 200, 33])  # different junk under the padding
    a, b = model(idx, pos, mask), model(other, pos, mask)
    assert torch.equal(a[:, 3:], b[:, 3:])


def test_pad_rows_never_produce_nan_in_logits_or_cache(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8], [9]]
    idx, mask, pos = _left_pad(prompts, "cpu")
    cache = model.new_kv_cache(2, 12)
    logits = model(idx, pos, mask, kv_cache=cache)
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(k).all() and torch.isfinite(v).all() for k, v in zip(cache.k, cache.v))


def test_attention_mask_shape_and_diagonal():
    key_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    m = build_attention_mask(key_mask, T=2, past_len=2, device="cpu")
    assert m.shape == (2, 1, 2, 4)
    assert m[0, 0].tolist() == [[False, False, True, False], [False, False, True, True]]
    assert m[1, 0].tolist() == [[True, True, True, False], [True, True, True, True]]
    all_pad = build_attention_mask(torch.zeros(1, 3, dtype=torch.bool), T=3, past_len=0, device="cpu")
    assert all_pad.any(-1).all()  # every query can see something (itself)


def test_cache_select_keeps_rows(model):
    idx = torch.randint(0, 264, (3, 5))
    cache = model.new_kv_cache(3, 8)
    model(idx, kv_cache=cache)
    cache.select(torch.tensor([2, 0]))
    assert cache.batch_size == 2 and cache.length == 5
    nxt = torch.tensor([[7], [9]])
    got = model(nxt, kv_cache=cache)[:, -1]
    want = model(torch.cat([idx[[2, 0]], nxt], dim=1))[:, -1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_too_long_is_a_clear_value_error(model):
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_kv_cache(1, 4)
    with pytest.raises(ValueError, match="KV cache"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    m = GPT(SMALL)
    idx = torch.randint(0, 264, (4, 16))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(m(idx[:, :-1]).reshape(-1, 264), idx[:, 1:].reshape(-1))
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
