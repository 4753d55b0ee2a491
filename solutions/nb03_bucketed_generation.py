"""Solutions to the exercises of `notebooks/03_bucketed_generation.ipynb`. Try them first!"""
import torch

from lessons_lib.tokenizer import PAD


# Exercise 1 · left padding, with a key-padding mask and per-row positions.
def left_pad(prompts, pad=PAD):
    """Prompts (lists of ids) -> (ids, mask, positions), each a list of rows of the longest length.

    mask is True on real tokens; it comes from the lengths, not from the ids, because a prompt may
    itself contain the pad id. positions count from each row's first real token; pads get 0.
    """
    width = max(len(p) for p in prompts)
    ids, mask, positions = [], [], []
    for p in prompts:
        n_pad = width - len(p)
        ids.append([pad] * n_pad + list(p))
        mask.append([False] * n_pad + [True] * len(p))
        positions.append([0] * n_pad + list(range(len(p))))
    return ids, mask, positions


# Exercise 2 · the attention mask of one forward call: T new queries meet past_len cached keys.
def attention_mask(key_mask, T, past_len):
    """key_mask (B, S) bool, S = past_len + T -> allowed (B, T, S): causal, no pad keys, and every
    query always sees itself (so no row of the softmax is empty)."""
    key_mask = torch.as_tensor(key_mask, dtype=torch.bool)
    S = past_len + T
    query_at = torch.arange(past_len, S).view(T, 1)  # where each new query sits in the cache
    key_at = torch.arange(S).view(1, S)
    allowed = (key_at <= query_at) & key_mask.view(-1, 1, S)
    return allowed | (key_at == query_at)


# Exercise 3 · the KV cache: rows x layers x 2 (keys and values) x positions x width x bytes.
def kv_cache_mib(config, rows=64, positions=1280, bytes_per_value=4):
    return rows * config.n_layer * 2 * positions * config.n_embd * bytes_per_value / 2**20


# Exercise 4 · right padding.
WHY_LEFT_PADDING = """\
Right-padded, [21, 22, PAD, PAD] has its newest real token in column 1, while a row with no padding has
its newest token in column 3. The next token of the first row belongs in column 2, of the second in
column 4: each row would write to its own position in the cache at every step, and the pads would sit
between the prompt and the answer. Left padding puts every row's newest token in the last column, so
one decoding step appends one column for all rows."""

# Exercise 5 · expressions the calculator refuses: powers (not in its grammar), division by zero,
# e-notation. No token is forced; the model writes the result itself and carries on.
REFUSED_EXPRESSIONS = ["2**8", "7/0", "1e3"]
