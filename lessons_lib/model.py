"""A small pre-LN GPT with a KV cache, a key-padding mask and per-row positions.

The whole model in one file, read top to bottom:

    tokens -> token embedding + learned position embedding
           -> n_layer x [ x + Attention(LayerNorm(x)) ; x + MLP(LayerNorm(x)) ]   (pre-LN blocks)
           -> final LayerNorm -> linear head tied to the token embedding -> logits

Three extras make fast *and exact* batched generation possible (see `generation.py`); they live in
`attention.py`, shared with the Llama-family model (`llama.py`):

* `KVCache` — keys/values of every token seen so far, preallocated per layer with a length pointer,
  so each new token costs one position of work instead of re-running the whole sequence.
* `attn_mask` (B, T_keys) bool, True = real token — lets prompts of different lengths share a batch
  via left padding: real tokens never attend to pad tokens.
* `positions` (B, T) — each row counts positions from its own first real token, so a left-padded
  prompt sees exactly the position embeddings it would see alone.
"""
from dataclasses import dataclass, asdict
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache, attention_mask, build_attention_mask, check_length, step_inputs  # noqa: F401 (re-exported)
from .tokenizer import BYTES, VOCAB_SIZE


@dataclass
class GPTConfig:
    vocab_size: int = VOCAB_SIZE
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    max_seq_len: int = 1280  # the longest GSM8K test question (~1,000 bytes) + ~256 new tokens
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x, mask=None, kv_cache=None, layer=0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # now (B, H, cache_len + T, D)
            k, v = k.to(q.dtype), v.to(q.dtype)
        p = self.dropout if self.training else 0.0
        if mask is None:  # plain causal (or a single new token, which may see everything)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=p)
        else:  # mask (B, 1, T, S): True = may attend
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.attn, self.mlp = CausalSelfAttention(config), MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, mask=None, kv_cache=None, layer=0):
        x = x + self.drop(self.attn(self.ln1(x), mask, kv_cache, layer))  # pre-LN: normalise the input
        return x + self.drop(self.mlp(self.ln2(x)))  # of each sublayer, keep the residual path clean


class GPT(nn.Module):
    tokenizer = BYTES  # how its prompts are written and its ids read back (generation.py needs both)

    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        self.config = config = config or GPTConfig()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.max_seq_len, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one byte table for reading and writing
        self.calculator = False  # set from checkpoint meta: was this model trained with the calculator?
        self.meta = {}
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self, batch_size, max_len=None, device=None, dtype=torch.float32) -> KVCache:
        """An empty cache for `batch_size` rows and up to `max_len` positions (default: max_seq_len)."""
        c = self.config
        max_len = max_len or c.max_seq_len
        device = device or self.wte.weight.device
        return KVCache(batch_size, max_len, c.n_layer, c.n_head, c.n_embd // c.n_head, device, dtype)

    def forward(self, idx, positions=None, attn_mask=None, kv_cache=None, return_hidden=False):
        """idx (B, T) -> logits (B, T, V) float32 [, hidden (B, T, C) after the final LayerNorm].

        positions (B, T): each token's position; None -> 0.. (offset by what the cache holds).
        attn_mask (B, cache_len + T) bool, True = real token; None -> no padding anywhere.
        kv_cache: a `KVCache`; this call appends its keys/values and advances the length.
        """
        positions, mask = step_inputs(idx, positions, attn_mask, kv_cache, self.config.max_seq_len)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, mask, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += idx.shape[1]
        hidden = self.ln_f(x)
        logits = self.lm_head(hidden).float()
        return (logits, hidden) if return_hidden else logits
