"""What every course-engine model shares to decode many prompts at once, exactly: left padding, the
attention mask it needs, and the KV cache. The course's GPT (`model.py`) and the Llama-family model
(`llama.py`) both import these, so `batched_generate` drives either one the same way.

* `left_pad` — prompts of different lengths become one (B, P) batch, each prompt at the right end,
  with a key mask (True = real token) and per-row positions (0 at each row's first real token).
* `build_attention_mask` / `attention_mask` — the (B, 1, T, S) mask of one forward call: causal,
  offset by what the cache already holds, pad keys never seen.
* `KVCache` — keys/values of every token seen so far, preallocated per layer with a length pointer.
"""
import torch

from .tokenizer import PAD


def left_pad(prompts, device=None, pad_id=PAD):
    """Left-pad to a (B, P) batch: ids, key mask (True = real) and positions (0 at the first real token).

    The mask comes from the lengths, not the ids: a prompt may itself contain `pad_id`. Pads get
    position 0 (they are never attended to, so any value works; `pad_id` too: the byte tokenizer's
    PAD by default, a model's own pad id in `batched_generate`).
    """
    P = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    for r, p in enumerate(prompts):
        idx[r, P - len(p):] = torch.tensor(p, dtype=torch.long)
    starts = torch.tensor([P - len(p) for p in prompts]).view(-1, 1)
    mask = torch.arange(P).view(1, P) >= starts
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return idx.to(device), mask.to(device), positions.to(device)


class KVCache:
    """Preallocated keys and values, one (B, H, max_len, D) pair per layer, plus a length pointer.

    Layers write their new keys/values at [length, length + T) and read [0, length + T); the model
    advances `length` once after the last layer. `select(rows)` keeps only some batch rows, so
    finished rows stop costing memory and compute. H is the number of *key/value* heads (fewer than
    the query heads under grouped-query attention: that is what makes its cache small).
    """

    def __init__(self, batch_size, max_len, n_layer, n_head, head_dim, device=None, dtype=torch.float32):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len, self.length = max_len, 0

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's keys/values for `layer`; return all keys/values so far (views)."""
        start, end = self.length, self.length + k.shape[2]
        self.k[layer][:, :, start:end] = k  # dtype cast happens here (e.g. bf16 cache)
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (a 1-D index tensor), e.g. the rows still generating."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]


def build_attention_mask(attn_mask, T, past_len, device):
    """(B, S) key-padding mask -> (B, 1, T, S) attention mask, S = past_len + T.

    Query t sits at cache index past_len + t and may see key s if s <= past_len + t (causal — note
    the offset: with a cache, query and key lengths differ) and key s is a real token. Every query
    may also see *itself*, so a query at a pad position never has all keys masked (softmax over
    nothing is NaN, and a NaN would leak into the cache). Real queries never look at pad keys, so
    what pad positions compute is irrelevant.
    """
    S = past_len + T
    q_idx = torch.arange(past_len, S, device=device).view(T, 1)
    k_idx = torch.arange(S, device=device).view(1, S)
    causal = k_idx <= q_idx  # (T, S)
    allowed = causal & attn_mask.view(-1, 1, S)  # (B, T, S)
    allowed = allowed | (k_idx == q_idx)  # the diagonal: always see yourself
    return allowed.unsqueeze(1)


def attention_mask(attn_mask, B, T, past, device):
    """The mask one forward call needs, or None when plain `is_causal` attention is exact.

    attn_mask (B, past + T) bool, True = real token, or None (no padding anywhere). Without padding
    a mask is still needed when several new tokens meet a cache: the causal mask needs the offset.
    """
    if attn_mask is not None:
        return build_attention_mask(attn_mask.bool(), T, past, device)
    if past > 0 and T > 1:
        return build_attention_mask(torch.ones(B, past + T, dtype=torch.bool, device=device), T, past, device)
    return None


def check_length(past, T, max_seq_len, kv_cache):
    """One clear ValueError when the sequence outgrows the model's context or the cache."""
    if past + T > max_seq_len:
        raise ValueError(f"sequence of {past + T} tokens exceeds the model's max_seq_len="
                         f"{max_seq_len}; shorten the input or generate fewer tokens")
    if kv_cache is not None and past + T > kv_cache.max_len:
        raise ValueError(f"KV cache holds {kv_cache.max_len} positions, needs {past + T}; make a bigger cache")


def step_inputs(idx, positions, attn_mask, kv_cache, max_seq_len):
    """What one forward call of either model needs besides the tokens: each token's position (0, 1, ..
    after what the cache already holds, when not given) and the attention mask. Refuses, in one line, a
    sequence longer than the context or the cache."""
    B, T = idx.shape
    past = kv_cache.length if kv_cache is not None else 0
    check_length(past, T, max_seq_len, kv_cache)
    if positions is None:
        positions = torch.arange(past, past + T, device=idx.device).expand(B, T)
    return positions, attention_mask(attn_mask, B, T, past, idx.device)
