"""batched_generate: exact across strategies and batch sizes, stops at EOT, forces calculator results."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lessons_lib.calculator import calculator_forced_byte_mask
from lessons_lib.data import load_qa_pairs
from lessons_lib.generation import Generation, batched_generate, plan_batches
from lessons_lib.model import GPT, GPTConfig
from lessons_lib.tokenizer import EOT, encode, encode_prompt

SFT = Path(__file__).resolve().parent.parent / "checkpoints" / "sft.pt"
QUESTIONS = [  # varied lengths, some equal (so buckets have more than one prompt)
    "What is 2+3?", "What is 4+5?", "Tom has 5 apples and eats 2. How many are left?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
    "hi", "ho", "Sam buys 3 packs of 12 pens and gives away 7. How many pens does he keep?",
    "Each of 4 boxes holds 6 eggs; 5 eggs break. How many are whole?", "x", "Why?",
    "Lena reads 20 pages a day for a week, then 35 pages on Sunday. Total pages?", "1+1",
]
STRATEGY_RUNS = [("sequential", 1), ("bucket", 64), ("bucket", 2), ("pad", 64), ("pad", 5)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small-batch decoding of a tiny model gains nothing from a 2nd thread, and on a busy machine
    the threads' synchronisation makes it ~100x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_model(dtype=torch.float32, scale=5.0, seed=0):
    """A seeded random model. Weights are scaled up 5x so logits are spread out (std ~1 instead of
    ~0.2) and outputs vary from prompt to prompt, instead of a near-uniform model that echoes its input."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig()).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    return model.to(dtype)


def prompts_of(questions):
    return [encode_prompt([{"role": "user", "content": q}]) for q in questions]


def run_all(model, prompts, n, runs=STRATEGY_RUNS):
    return {(s, bs): [g.token_ids for g in batched_generate(model, prompts, n, strategy=s, batch_size=bs,
                                                             progress=False, return_details=True)]
            for s, bs in runs}


def top2_gap_where_they_diverge(model, prompt, ref, other) -> float:
    """Run the prompt alone up to the first differing token; how close were the two best logits?"""
    k = next(i for i, (a, b) in enumerate(zip(ref, other)) if a != b)
    with torch.inference_mode():
        logits = model.double()(torch.tensor([prompt + ref[:k]]))[0, -1]
    model.float()
    top = logits.topk(2).values
    return (top[0] - top[1]).item()


def assert_exact_up_to_ties(model, prompts, outs, tol=1e-4):
    """Every strategy matches sequential; a float32 mismatch is tolerated only at a genuine argmax
    near-tie (top-2 logit gap < tol), where rounding in the last bits may legitimately decide."""
    ref = outs[("sequential", 1)]
    for key, got in outs.items():
        for i, (a, b) in enumerate(zip(ref, got)):
            if a != b:
                gap = top2_gap_where_they_diverge(model, prompts[i], a, b)
                assert gap < tol, f"{key} prompt {i} diverged at a non-tie (gap {gap:.2e})"


def test_plan_batches():
    assert plan_batches([3, 5, 3, 4], "sequential", 64) == [[0], [1], [2], [3]]
    assert plan_batches([3, 5, 3, 4], "bucket", 64) == [[0, 2], [3], [1]]
    assert plan_batches([3, 3, 3], "bucket", 2) == [[0, 1], [2]]
    assert plan_batches([3, 5, 3, 4], "pad", 3) == [[0, 2, 3], [1]]


def test_float64_greedy_is_identical_across_strategies_and_batch_sizes():
    """In float64, rounding differences (~1e-15) are far below any argmax gap: strict equality."""
    model, prompts = random_model(torch.float64), prompts_of(QUESTIONS)
    outs = run_all(model, prompts, 40)
    ref = outs[("sequential", 1)]
    assert len({tuple(r) for r in ref}) >= len(ref) // 2  # outputs really vary between prompts
    for key, got in outs.items():
        assert got == ref, key


def test_float32_greedy_matches_across_strategies_up_to_ties():
    model, prompts = random_model(), prompts_of(QUESTIONS)
    outs = run_all(model, prompts, 40)
    assert_exact_up_to_ties(model, prompts, outs)  # (on our machine: no mismatch at all)


def test_real_gsm8k_prompts_match_across_strategies():
    questions = [q for q, _ in load_qa_pairs("gsm8k", "test", limit=16)]  # shipped with the course
    model, prompts = random_model(), prompts_of(questions)
    outs = run_all(model, prompts, 24, [("sequential", 1), ("bucket", 64), ("pad", 64), ("pad", 3)])
    assert_exact_up_to_ties(model, prompts, outs)


def test_a_repeated_prompt_is_prefilled_once_with_the_same_result():
    model = random_model()
    distinct = prompts_of(QUESTIONS[:3])
    group = [p for p in distinct for _ in range(4)]  # GRPO: 4 samples of each prompt
    prefills = []
    real_forward = model.forward
    model.forward = lambda idx, *a, **k: (prefills.append(idx.shape[1]) if idx.shape[1] > 1 else None,
                                          real_forward(idx, *a, **k))[1]
    outs = batched_generate(model, group, max_new_tokens=12, strategy="pad", batch_size=64, progress=False)
    assert len(prefills) == len(distinct)  # one prompt pass per distinct prompt, not per row
    model.forward = real_forward
    alone = batched_generate(model, distinct, max_new_tokens=12, strategy="sequential", progress=False)
    assert outs == [o for o in alone for _ in range(4)]


@pytest.mark.skipif(not SFT.exists(), reason="checkpoints/sft.pt not built yet (make checkpoints)")
def test_trained_checkpoint_matches_across_strategies():
    from lessons_lib.checkpoint import load_checkpoint
    model = load_checkpoint(SFT, device="cpu")
    prompts = prompts_of(QUESTIONS)
    outs = run_all(model, prompts, 96, [("sequential", 1), ("bucket", 64), ("pad", 64), ("pad", 5)])
    assert_exact_up_to_ties(model, prompts, outs)


class ScriptedGPT(GPT):
    """A fake 'model' whose greedy choice at position p is script[p + 1]: lets tests drive the engine
    (EOT, calculator) deterministically through the real batching, padding and cache code."""

    def __init__(self, script):
        super().__init__(GPTConfig(n_layer=1, n_head=1, n_embd=8, max_seq_len=len(script) - 1))
        self.script = torch.tensor(script)

    def forward(self, idx, positions=None, attn_mask=None, kv_cache=None, return_hidden=False):
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if positions is None:
            positions = torch.arange(past, past + T).expand(B, T)
        if kv_cache is not None:
            kv_cache.length += T
        return F.one_hot(self.script[positions + 1], self.config.vocab_size).float() * 100


def script_from(pos: int, text: str, total=64):
    """Filler up to position `pos`, then `text`'s bytes (special ids allowed), padded with 'z'."""
    ids = [ord(".")] * pos + [t if isinstance(t, int) else ord(t) for t in text]
    return ids + [ord("z")] * (total - len(ids))


def test_rows_stop_at_eot_and_finished_rows_leave_the_batch():
    # absolute positions 10..: "ab<EOT>": a 4-token prompt starts generating at 4, an 8-token one at 8
    script = script_from(4, ["a", "b", "c", "d", "e", "f", "g", EOT])
    model = ScriptedGPT(script)
    prompts = [[1] * 4, [1] * 8, [1] * 6]
    for strategy in ("pad", "bucket", "sequential"):
        outs = batched_generate(model, prompts, 20, strategy=strategy, progress=False, return_details=True)
        assert [g.text for g in outs] == ["abcdefg", "efg", "cdefg"]  # input order, EOT not in text
        assert all(g.finished and g.token_ids[-1] == EOT for g in outs)
        assert batched_generate(model, prompts, 2, strategy=strategy, progress=False) == ["ab", "ef", "cd"]


def test_calculator_forces_the_result_and_records_it():
    script = script_from(3, "so <<48/2=??????, <<1/0=77>> <<5/2=?????", total=80)
    model = ScriptedGPT(script)
    prompts = [[1, 2, 3], [1, 2, 3, 4, 5, 6, 7]]  # the second row starts mid-script, at '<48/2='
    out = batched_generate(model, prompts, 50, calculator=True, progress=False, return_details=True)
    for strategy in ("bucket", "sequential"):  # per-row queues work in every strategy
        other = batched_generate(model, prompts, 50, calculator=True, strategy=strategy, progress=False,
                                 return_details=True)
        assert other == out
    assert out[0].text.startswith("so <<48/2=24>>??, <<1/0=77>> <<5/2=2.5>>z")  # forced replaces, by position
    forced = bytes(t for t, f in zip(out[0].token_ids, out[0].forced) if f)
    assert forced == b"24>>2.5>>"  # 1/0: no result, the model goes on
    assert out[0].forced == calculator_forced_byte_mask(out[0].text)  # same rule as SFT's loss mask
    assert out[1].text.startswith("<48/2=??????")  # only one '<' in its output: not an annotation
    assert bytes(t for t, f in zip(out[1].token_ids, out[1].forced) if f) == b"2.5>>"
    plain = batched_generate(model, prompts, 50, calculator=False, progress=False, return_details=True)
    assert plain[0].text.startswith("so <<48/2=??????") and not any(plain[0].forced)


def test_calculator_default_follows_the_model():
    model = ScriptedGPT(script_from(1, "<<2*3=x"))
    assert batched_generate(model, [[1]], 8, progress=False) == ["<<2*3=xz"]
    model.calculator = True
    assert batched_generate(model, [[1]], 8, progress=False) == ["<<2*3=6>"]  # forced tokens count
    assert batched_generate(model, [[1]], 8, calculator=False, progress=False) == ["<<2*3=xz"]


def test_calculator_works_while_sampling():
    model = ScriptedGPT(script_from(1, "<<7*6=..."))
    g = torch.Generator().manual_seed(0)
    out = batched_generate(model, [[1], [1]], 10, greedy=False, generator=g, calculator=True,
                           progress=False, return_details=True)
    assert all(o.text.startswith("<<7*6=42>>") for o in out)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model, prompts = random_model(), prompts_of(QUESTIONS[:6])
    def sample(seed, **kw):
        return batched_generate(model, prompts, 16, greedy=False, progress=False,
                                generator=torch.Generator().manual_seed(seed), **kw)
    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert sample(3, top_k=1) == batched_generate(model, prompts, 16, progress=False)
    cold = sample(4, temperature=1e-4)
    assert cold == batched_generate(model, prompts, 16, progress=False)


def test_returns_strings_by_default_and_details_on_request():
    model, prompts = random_model(), prompts_of(QUESTIONS[:3])
    texts = batched_generate(model, prompts, 8, progress=False)
    details = batched_generate(model, prompts, 8, progress=False, return_details=True)
    assert all(isinstance(t, str) for t in texts)
    assert all(isinstance(d, Generation) and len(d.token_ids) == len(d.forced) == 8 for d in details)
    assert [d.text for d in details] == texts
    assert batched_generate(model, [], 8, progress=False) == []


def test_clear_errors():
    model = random_model()
    with pytest.raises(ValueError, match="max_seq_len=1280"):
        batched_generate(model, [encode("x" * 1200)], 100, progress=False)
    with pytest.raises(ValueError, match="strategy"):
        batched_generate(model, [[1]], 4, strategy="fast", progress=False)
    with pytest.raises(ValueError, match="empty"):
        batched_generate(model, [[]], 4, progress=False)
    with pytest.raises(ValueError, match="token ids"):
        batched_generate(model, [[1, 999]], 4, progress=False)


def test_generation_does_not_change_training_mode():
    model = random_model().train()
    batched_generate(model, [[1, 2]], 2, progress=False)
    assert model.training


def test_finished_rows_are_dropped_from_the_cache(monkeypatch):
    from lessons_lib.model import KVCache
    sizes = []
    original = KVCache.select
    def spy(self, rows):
        original(self, rows)
        sizes.append(self.batch_size)
    monkeypatch.setattr(KVCache, "select", spy)
    model = ScriptedGPT(script_from(4, ["a", "b", "c", "d", "e", "f", "g", EOT]))
    batched_generate(model, [[1] * 4, [1] * 8, [1] * 6], 20, strategy="pad", progress=False)
    assert sizes == [2, 1]  # the 8-token prompt finishes first, then the 6-token one


def test_bfloat16_weights_generate():
    """The cache follows the weights' dtype (on CUDA: bf16 autocast); nothing breaks in low precision."""
    model = random_model(torch.bfloat16)
    outs = batched_generate(model, prompts_of(QUESTIONS[:4]), 8, progress=False, return_details=True)
    assert all(len(g.token_ids) == 8 for g in outs)
