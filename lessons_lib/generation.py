"""Batched generation: many prompts at once, exactly as if each were generated alone.

Generating one prompt at a time wastes the hardware: each decoding step is a tiny matrix-vector
product. Batching B prompts turns it into a matrix-matrix product at almost the same cost per step.
The catch: prompts have different lengths. Three strategies, same greedy outputs:

* "sequential" — one prompt at a time. The reference: slow but obviously right.
* "bucket"     — the seed's method: group prompts of *equal* token length and decode each group
                 together. No padding, so no mask is needed — but real questions have many distinct
                 lengths, so buckets are small.
* "pad"        — left-pad any prompts into one batch, with a key-padding mask (real tokens never
                 attend to pads) and per-row positions (each row counts from its own first token).
                 Each prompt is prefilled alone (no work wasted on pads), then all rows decode
                 together. Full batches whatever the lengths. The default: the fastest exact strategy.

Rows stop at end-of-turn (`model.tokenizer.stop_ids`: EOT for the byte tokenizer, a real model's own
end-of-turn ids for the Llama model); finished rows are dropped from the batch and its KV cache, so a
long answer doesn't make everyone else's finished rows keep costing compute. `model.tokenizer` also
gives the pad id and how ids read back as text: nothing else here depends on the model's kind.

The calculator (GSM8K's `<<48/2=24>>` annotations): when a row has just written `<<EXPR=` and EXPR
evaluates, the result and `>>` are queued as that row's next tokens and *forced* — sampled tokens
are ignored while the row's queue is non-empty. `Generation.forced` records which tokens were forced
so RL can leave them out of the loss (the policy didn't choose them).

Exactness: greedy outputs are identical across strategies and batch sizes. "pad" prefills each
prompt on its own (unless the whole batch has one length), so a row's cache of its prompt is
bit-for-bit what sequential decoding computes. The decoding steps are not bitwise equal: float sums run in a different order
when the batch shape or padding changes, so logits differ in the last bits (measured: <= 3e-6 on
the course-size model). Greedy notices only at an argmax near-tie; in the benchmark's 38,400 float32
steps on real GSM8K the smallest top-2 gap was 4.5e-6 and every output matched — rare, but not
impossible. The tests therefore demand strict equality in float64 (`model.double()`; the cache
follows the weights' dtype) and, in float32, allow a mismatch only where it starts at a near-tie.
On CUDA we use bf16 autocast for speed; ties are then far more common, so compare strategies in
float32 on CPU if you need identical outputs.
"""
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from tqdm import tqdm  # plain text bars: no ipywidgets warning inside notebooks

from .attention import left_pad as _left_pad  # the name notebook 03 shows
from .calculator import MAX_EXPR_CHARS, pending_result

STRATEGIES = ("bucket", "pad", "sequential")
DEFAULT_STRATEGY = "pad"  # measured fastest on both real GSM8K and short synthetic prompts
_EQUALS = ord("=")


@dataclass
class Generation:
    """One response: `text` (decoded, without EOT), the generated `token_ids` (with the final EOT if
    emitted), `forced[i]` True if token i was forced by the calculator, `finished` if EOT was emitted.
    When sampled, `logprobs[i]` is log p(token i) under the distribution the sampler drew it from
    (logits / temperature, after top-k), None for a forced token: what an RL trainer's log-probs must
    reproduce, so the importance ratio is taken against the policy that produced the sample."""
    text: str
    token_ids: list[int] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    finished: bool = False
    logprobs: list[float] | None = None  # sampling only: log p(token) under the distribution it was drawn from


def plan_batches(lengths: list[int], strategy: str, batch_size: int) -> list[list[int]]:
    """Which prompt indices are decoded together.

    >>> plan_batches([3, 5, 3, 4], "bucket", 64)
    [[0, 2], [3], [1]]
    >>> plan_batches([3, 5, 3, 4], "pad", 2)
    [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))  # similar lengths together
    if strategy == "sequential":
        return [[i] for i in range(len(lengths))]
    if strategy == "pad":  # fewest pad tokens for a given batch size
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    buckets: dict[int, list[int]] = {}
    for i in order:
        buckets.setdefault(lengths[i], []).append(i)
    return [b[s:s + batch_size] for b in buckets.values() for s in range(0, len(b), batch_size)]


def sample_next(logits, greedy=True, temperature=1.0, top_k=None, generator=None, return_logprobs=False):
    """(B, V) logits -> (B,) token ids. Greedy = argmax (ties -> lowest id, deterministic).
    With `return_logprobs` (sampling only): also (B,) log p(token) under the sampled distribution."""
    if greedy:
        tokens = logits.argmax(dim=-1)
        return (tokens, None) if return_logprobs else tokens
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # keep the k most likely
    probs = torch.softmax(logits, dim=-1)
    if generator is not None:
        probs = probs.to(generator.device)  # a CPU generator can seed sampling for a GPU model
    tokens = torch.multinomial(probs, 1, generator=generator).view(-1).to(logits.device)
    if not return_logprobs:
        return tokens
    return tokens, torch.log_softmax(logits, dim=-1).gather(-1, tokens.view(-1, 1)).view(-1)


class _Row:
    """Per-prompt bookkeeping: generated ids, which were forced, the calculator's queue; `tokenizer`
    (the model's) says which ids end the answer and how the ids read as text."""

    def __init__(self, tokenizer):
        self.ids, self.forced, self.queue, self.tail, self.logprobs = [], [], deque(), bytearray(), []
        self.tokenizer = tokenizer

    def push(self, token: int, calculator: bool, logprob: float | None = None) -> int:
        """Record the next token (a queued forced token wins over the model's choice); return it."""
        forced = bool(self.queue)
        token = self.queue.popleft() if forced else token
        self.ids.append(token); self.forced.append(forced)
        self.logprobs.append(None if forced else logprob)
        if token < 256:
            self.tail = (self.tail + bytes([token]))[-(MAX_EXPR_CHARS + 3):]  # enough for `<<EXPR=`
        if calculator and token == _EQUALS and not forced:
            result = pending_result(self.tail.decode("latin-1"))  # 1 char per byte, like the byte mask
            if result is not None:
                self.queue.extend(result.encode("ascii"))
        return token

    def ended(self) -> bool:
        """Has the row ended: a stop id, or (few-shot prompts) a stop string at the end of its text?"""
        tok = self.tokenizer
        return bool(self.ids) and (self.ids[-1] in tok.stop_ids or bool(tok.stop_strings) and tok.stopped(self.ids))

    def result(self, sampled: bool = False) -> Generation:
        finished = self.ended()
        stop_id = finished and self.ids[-1] in self.tokenizer.stop_ids
        text = self.tokenizer.decode(self.ids[:-1] if stop_id else self.ids)  # the stop token is not text
        return Generation(text, self.ids, self.forced, finished, self.logprobs if sampled else None)


def _prefill_rows(model, prompts, cache, device, share=True):
    """Run each prompt alone and copy its keys/values into its left-padded slot of the batch cache.

    A prompt is already a matrix-matrix product on its own, so batching the prefill gains little,
    while padding it would waste work on pad tokens (real GSM8K lengths vary 77..852). Alone, each
    row's cache is also exactly what one-at-a-time decoding computes. A prompt that appears several
    times (GRPO samples a group of answers to one prompt) is run once and its cache copied to each row."""
    width = max(len(p) for p in prompts)
    last_logits, done = [], {}
    for r, p in enumerate(prompts):
        if tuple(p) not in done or not share:
            own = model.new_kv_cache(1, len(p), device, cache.k[0].dtype)
            done[tuple(p)] = own, model(torch.tensor([p], device=device), kv_cache=own)[:, -1]
        own, logits = done[tuple(p)]
        last_logits.append(logits)
        for layer in range(len(cache.k)):
            cache.k[layer][r, :, width - len(p):width] = own.k[layer][0]
            cache.v[layer][r, :, width - len(p):width] = own.v[layer][0]
    cache.length = width
    return torch.cat(last_logits)


@torch.inference_mode()
def _generate_batch(model, prompts, max_new_tokens, device, calculator, sampling, share_prefill=True) -> list[Generation]:
    tokenizer = model.tokenizer
    idx, key_mask, positions = _left_pad(prompts, device, tokenizer.pad_id)
    padded = len({len(p) for p in prompts}) > 1  # equal lengths: no mask needed (the seed's buckets)
    on_cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if on_cuda else next(model.parameters()).dtype
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else nullcontext()
    cache = model.new_kv_cache(len(prompts), idx.shape[1] + max_new_tokens, device, dtype)
    rows, active = [_Row(tokenizer) for _ in prompts], list(range(len(prompts)))
    next_pos = positions[:, -1] + 1
    with autocast:
        if padded:
            logits = _prefill_rows(model, prompts, cache, device, share_prefill)
        else:  # one rectangle, no padding: prefill together
            logits = model(idx, kv_cache=cache)[:, -1]
        for step in range(max_new_tokens):
            chosen, logprobs = sample_next(logits, **sampling, return_logprobs=True)
            logprobs = [None] * len(active) if logprobs is None else logprobs.tolist()
            tokens = [rows[r].push(t, calculator, lp) for r, t, lp in zip(active, chosen.tolist(), logprobs)]
            keep = [j for j, r in enumerate(active) if not rows[r].ended()]
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                sel = torch.tensor(keep, device=device)
                cache.select(sel)
                key_mask, next_pos = key_mask.index_select(0, sel), next_pos.index_select(0, sel)
                active, tokens = [active[j] for j in keep], [tokens[j] for j in keep]
            new = torch.tensor(tokens, device=device).view(-1, 1)
            key_mask = torch.cat([key_mask, torch.ones_like(key_mask[:, :1])], dim=1)
            logits = model(new, next_pos.view(-1, 1), key_mask if padded else None, cache)[:, -1]
            next_pos = next_pos + 1
    return [row.result(sampled=not sampling["greedy"]) for row in rows]


def _check_prompts(model, prompts, max_new_tokens):
    limit = model.config.max_seq_len - max_new_tokens
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; encode it with encode_prompt(...)")
        if len(p) > limit:
            raise ValueError(f"prompt {i} has {len(p)} tokens, but with max_new_tokens={max_new_tokens} the "
                             f"model's context (max_seq_len={model.config.max_seq_len}) allows at most {limit}. "
                             f"Shorten the prompt or lower max_new_tokens.")
        if min(p) < 0 or max(p) >= model.config.vocab_size:
            raise ValueError(f"prompt {i} has token ids outside 0..{model.config.vocab_size - 1}")


def batched_generate(model, prompts, max_new_tokens=256, device=None, greedy=True, temperature=1.0,
                     top_k=None, generator=None, strategy=None, batch_size=64, calculator=None,
                     return_details=False, progress=True, share_prefill=True):
    """Generate a response for each prompt (lists of token ids from `encode_prompt`).

    Returns decoded responses in input order, stopped at EOT (EOT not included), or with
    `return_details=True` a list of `Generation` (text, token_ids, forced, finished).

    greedy: argmax decoding (= top_k 1); else sample with `temperature`, `top_k`, `generator`.
    strategy: "pad" (default — left padding + mask + positions; fastest, exact), "bucket" (equal
      lengths only, the seed's method) or "sequential" (the one-at-a-time reference).
    batch_size: at most this many prompts decoded together (bounds memory).
    calculator: None -> follow `model.calculator` (set from the checkpoint); True/False overrides.
    device: None -> the model's own device (`load_checkpoint` already picked cuda/mps/cpu);
      otherwise the model is moved there. bf16 autocast on CUDA only.
    Sampling draws depend on which prompts share a batch; greedy outputs do not.
    share_prefill: run a prompt that appears several times in a batch once (GRPO's groups); the
      results are identical either way (False only to measure what sharing saves: `make bench`).
    """
    strategy = strategy or DEFAULT_STRATEGY
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    prompts = [list(p) for p in prompts]
    _check_prompts(model, prompts, max_new_tokens)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    was_training = model.training
    model.eval()
    calculator = bool(model.calculator if calculator is None else calculator)
    if calculator and not model.tokenizer.bytes_are_ids:
        raise ValueError("the calculator reads the bytes a model writes: it needs the byte tokenizer "
                         "(calculator=False for a model with its own tokenizer)")
    sampling = dict(greedy=greedy, temperature=temperature, top_k=top_k, generator=generator)
    results: list[Generation | None] = [None] * len(prompts)
    batches = plan_batches([len(p) for p in prompts], strategy, batch_size)
    for batch in tqdm(batches, desc=f"generate ({strategy})", disable=not progress, leave=False):
        outs = _generate_batch(model, [prompts[i] for i in batch], max_new_tokens, device, calculator, sampling,
                               share_prefill)
        for i, g in zip(batch, outs):
            results[i] = g
    model.train(was_training)
    return results if return_details else [g.text for g in results]
