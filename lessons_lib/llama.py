"""A Llama-family model in the course's engine: what a real small model (SmolLM2, Llama 3, ...) adds
to the course's GPT (`model.py`), each in a few lines:

    tokens -> token embedding                                       (no position embedding: RoPE below)
           -> n_layer x [ x + Attention(RMSNorm(x)) ; x + SwiGLU(RMSNorm(x)) ]
           -> final RMSNorm -> head (tied to the embedding, or its own) -> logits

* RMSNorm instead of LayerNorm: divide by the root mean square, no mean subtracted, no bias.
* Rotary position embeddings (RoPE): positions enter attention by rotating each query and key, pair
  of dimensions by pair, by an angle proportional to the position; q.k then depends only on the
  *distance* between two tokens.
* Grouped-query attention (GQA): fewer key/value heads than query heads (SmolLM2-135M: 9 and 3),
  each key/value head shared by a group of query heads; the KV cache holds only the key/value heads.
* SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases anywhere.

The batch machinery is the GPT's, imported from `attention.py`: the same `KVCache`, the same padding
mask, per-row positions (here they set the rotation angles). So `batched_generate` runs this model
unchanged; `model.tokenizer` (a `bpe.ChatTokenizer`, set by the loader in `llama_weights.py`) tells
it the pad id, the end-of-turn ids and how to read ids back as text.

Every operation follows transformers' `LlamaForCausalLM` in the same order and precision (RMSNorm and
the rotation angles in float32), so the two give the same logits on the same weights.
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache, step_inputs


@dataclass
class LlamaConfig:
    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    intermediate_size: int
    max_seq_len: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True
    head_dim: int | None = None  # None: n_embd // n_head

    def __post_init__(self):
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.n_kv_head}")

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        h = x.float()  # float32 as in transformers, whatever the weights' dtype
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_angles(positions, head_dim, theta, dtype):
    """cos, sin (B, 1, T, head_dim) for `positions` (B, T): angle = position * theta^(-2i/head_dim),
    each frequency used for two dimensions (the halves that `rotate_half` pairs up)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate(x, cos, sin):
    """Rotate each pair (x[i], x[i + D/2]) by its angle: Llama's (and transformers') pairing."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, c.head_dim
        self.q_proj = nn.Linear(c.n_embd, c.n_head * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.n_embd, c.n_kv_head * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.n_embd, c.n_kv_head * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_head * c.head_dim, c.n_embd, bias=False)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, layer=0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # positions enter here, before the cache
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)  # the cache holds the n_kv_head heads only
            k, v = k.to(q.dtype), v.to(q.dtype)
        groups = self.n_head // self.n_kv_head  # each key/value head serves this many query heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.n_embd, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.n_embd, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.n_embd, c.rms_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.n_embd, c.rms_eps)
        self.mlp = SwiGLU(c)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Parameter names follow transformers' (`model.layers.0.self_attn.q_proj.weight` ...), so a
    Hugging Face checkpoint loads with `load_state_dict` as it is."""
    calculator = False  # the calculator reads bytes: a BPE model never uses it

    def __init__(self, config: LlamaConfig, tokenizer=None):
        super().__init__()
        self.config = c = config
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c.vocab_size, c.n_embd)
        self.model.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.model.norm = RMSNorm(c.n_embd, c.rms_eps)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.tokenizer = tokenizer  # a bpe.ChatTokenizer: prompts in, text out (batched_generate reads it)
        self.meta = {}

    def new_kv_cache(self, batch_size, max_len=None, device=None, dtype=torch.float32) -> KVCache:
        c = self.config
        device = device or self.lm_head.weight.device
        return KVCache(batch_size, max_len or c.max_seq_len, c.n_layer, c.n_kv_head, c.head_dim, device, dtype)

    def forward(self, idx, positions=None, attn_mask=None, kv_cache=None):
        """idx (B, T) -> logits (B, T, V) float32; the arguments mean what they mean for `GPT.forward`."""
        positions, mask = step_inputs(idx, positions, attn_mask, kv_cache, self.config.max_seq_len)
        x = self.model.embed_tokens(idx)
        cos, sin = rope_angles(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin, mask, kv_cache, i)
        if kv_cache is not None:
            kv_cache.length += idx.shape[1]
        return self.lm_head(self.model.norm(x)).float()
