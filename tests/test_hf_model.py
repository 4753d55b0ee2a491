"""lessons_lib/hf_model.py: a real-architecture model (tiny, random, built offline) through the scorer.

Every test loads a Qwen2 model saved with `save_pretrained` to a temporary folder, exactly as `--hf`
loads a real one. Its weights are random, so its answers are noise: the tests check the machinery —
prompts, padding, stopping, greedy decoding, rows, records, torchrun — not accuracy.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers  # in the dev extra: these tests must run in `make test`, not skip

from lessons_lib import hf_model
from lessons_lib.data import load_qa_pairs, shipped_file
from lessons_lib.generation import batched_generate
from lessons_lib.hf_model import (FEWSHOT_STOP, HFUnavailableError, cut_at_stop, fewshot_examples, fewshot_prompt,
                                  generate_ids, gpt2_from_course, load_hf_model, resolve_dtype, save_tiny_model)
from lessons_lib.model import GPT, GPTConfig
from lessons_lib.scoring import gsm8k_accuracy, score_model
from lessons_lib.jsonl import read_jsonl
from lessons_lib.stage_table import file_sha256, read_rows
from lessons_lib.tokenizer import EOT, PAD, encode_prompt

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "eval_post_training.py"
_spec = importlib.util.spec_from_file_location("eval_post_training", SCRIPT)
evalpt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evalpt)

QUESTIONS = [q for q, _ in load_qa_pairs("gsm8k", "test", limit=12)]  # real lengths: 30..90 tokens here


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("hf") / "tiny-qwen2")


@pytest.fixture(scope="module")
def hf64(tiny_dir):
    """float64: batched vs alone must then agree exactly (float32 may flip a near-tied argmax)."""
    return load_hf_model(tiny_dir, dtype="float64", device="cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()  # the script sets torch's thread count (--threads); undo it
    yield
    torch.set_num_threads(before)


def _ids(hf, questions, n=24, **kw):
    prompts = [hf.encode_question(q) for q in questions]
    return hf.batched_generate(prompts, max_new_tokens=n, return_details=True, progress=False, **kw)


# ---------------------------------------------------------------------------------------------
# loading and prompts

def test_missing_transformers_gives_the_install_line(monkeypatch, tiny_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(HFUnavailableError, match=r'pip install -e "\.\[hf\]"'):
        load_hf_model(tiny_dir)
    with pytest.raises(SystemExit) as e:
        evalpt.main(["--hf", str(tiny_dir), "--limit", "1", "--append", str(tmp_path / "t.jsonl"), "--no_progress"])
    message = capsys.readouterr().err
    assert e.value.code == 1 and message.startswith("error: ") and "pip install" in message
    assert message.count("\n") == 1  # one line
    assert not (tmp_path / "t.jsonl").exists()


def test_loads_as_the_real_architecture_and_tokenizer(tiny_dir):
    hf = load_hf_model(tiny_dir, device="cpu")
    assert type(hf.model).__name__ == "Qwen2ForCausalLM" and next(hf.model.parameters()).dtype == torch.float32
    assert type(hf.tokenizer).__name__.startswith("Qwen2Tokenizer")  # transformers' own class for this model type
    from tokenizers import Tokenizer
    saved = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    assert all(hf.tokenizer(q)["input_ids"] == saved.encode(q).ids for q in QUESTIONS)  # loads as it was built
    end_of_turn, eos = (hf.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    assert set(hf.eos_ids) == {end_of_turn, eos} and hf.prompt_format == "chat" and hf.stop_strings == ()
    assert hf.info["hf_model"] == str(tiny_dir) and hf.info["dtype"] == "float32" and hf.name == "tiny-qwen2"
    assert hf.weights == tiny_dir / "model.safetensors"


def test_dtype_choice():
    assert resolve_dtype("auto", "cuda") == torch.bfloat16 and resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float64", "cpu") == torch.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8", "cpu")


def test_chat_prompt_is_the_models_own_template(hf64):
    q = QUESTIONS[0]
    assert hf64.prompt_text(q) == f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    templated = hf64.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                   tokenize=True, return_dict=True)["input_ids"]
    assert hf64.encode_question(q) == templated  # what transformers itself would feed the model


def test_fewshot_prompt_is_lm_eval_harness_gsm8k_format():
    shots = [("What is 1+1?", "1+1=2\n#### 2"), ("What is 2*3?", "2*3=6\n#### 6")]
    assert fewshot_prompt("What is 5-4?", shots) == ("Question: What is 1+1?\nAnswer: 1+1=2\n#### 2\n\n"
                                                     "Question: What is 2*3?\nAnswer: 2*3=6\n#### 6\n\n"
                                                     "Question: What is 5-4?\nAnswer:")
    assert fewshot_prompt("q", []) == "Question: q\nAnswer:"
    assert FEWSHOT_STOP == ("Question:", "</s>", "<|im_end|>")


def test_fewshot_examples_are_the_first_of_train(gsm8k_dir, monkeypatch):
    lines = (gsm8k_dir / "train.jsonl").read_bytes().splitlines(keepends=True)
    assert shipped_file("fewshot_train.jsonl").read_bytes() == b"".join(lines[:8])  # byte-identical
    from_train = fewshot_examples(5)  # GSM8K_DIR is set: read from train.jsonl
    monkeypatch.delenv("GSM8K_DIR")
    monkeypatch.setitem(sys.modules, "datasets", None)  # offline: the shipped copy must be enough
    assert fewshot_examples(5) == from_train and from_train[0][0].startswith("Natalia sold clips")
    assert all("####" in a for _, a in from_train)  # the full worked solution, as the harness shows it


@pytest.mark.parametrize("prompt_format", ["chat", "fewshot", "plain"])
def test_what_the_model_receives(tiny_dir, prompt_format, monkeypatch):
    """Spy on transformers' generate: each row is the prompt text's tokens, left-padded, masked."""
    hf = load_hf_model(tiny_dir, device="cpu", prompt_format=prompt_format, fewshot_k=2)
    text = {"chat": lambda q: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
            "fewshot": lambda q: fewshot_prompt(q, fewshot_examples(2)), "plain": lambda q: q}[prompt_format]
    seen = []
    real_generate = hf.model.generate
    monkeypatch.setattr(hf.model, "generate", lambda **kw: seen.append(kw) or real_generate(**kw))
    gsm8k_accuracy(hf, load_qa_pairs("gsm8k", "test", limit=3), max_new_tokens=2, progress=False)
    [call] = seen
    ids, mask = call["input_ids"], call["attention_mask"]
    for q in QUESTIONS[:3]:
        p = hf.tokenizer(text(q), add_special_tokens=False)["input_ids"]  # this tokenizer adds no BOS
        row = next(r for r in range(3) if int(mask[r].sum()) == len(p))
        assert ids[row, -len(p):].tolist() == p and mask[row, -len(p):].all()  # right-aligned: left padding
        assert not mask[row, :ids.shape[1] - len(p)].any() and (ids[row, :ids.shape[1] - len(p)] == hf.pad_id).all()


# ---------------------------------------------------------------------------------------------
# generation

def test_batched_equals_one_at_a_time_float64(hf64):
    alone = [g.token_ids for g in _ids(hf64, QUESTIONS, strategy="sequential")]
    assert len({len(hf64.encode_question(q)) for q in QUESTIONS}) > 5  # many lengths: real padding
    for strategy, batch_size in [("pad", 64), ("pad", 5), ("bucket", 64)]:
        assert [g.token_ids for g in _ids(hf64, QUESTIONS, strategy=strategy, batch_size=batch_size)] == alone


def test_batched_equals_one_at_a_time_float32(tiny_dir):
    hf = load_hf_model(tiny_dir, device="cpu")
    alone = [g.token_ids for g in _ids(hf, QUESTIONS, strategy="sequential")]
    assert [g.token_ids for g in _ids(hf, QUESTIONS)] == alone  # no near-tie on these; float64 is the strict test


def test_left_padding_changes_nothing_and_the_mask_matters(hf64):
    short, long = QUESTIONS[0], "Please read carefully. " * 20 + QUESTIONS[1]
    alone = _ids(hf64, [short])[0].token_ids
    assert _ids(hf64, [short, long])[0].token_ids == alone  # padded by 100+ tokens: same answer
    prompts = [hf64.encode_question(q) for q in (short, long)]
    ids, _ = hf_model.left_pad(prompts, hf64.pad_id)
    unmasked = hf64.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=24, pad_token_id=hf64.pad_id, eos_token_id=hf64.eos_ids)
    assert unmasked[0, ids.shape[1]:].tolist()[:len(alone)] != alone  # the test can fail: pads seen = new answer


def test_greedy_is_argmax_whatever_the_generation_config_says(hf64):
    own = hf64.model.generation_config
    assert own.do_sample and own.repetition_penalty == 1.1  # saved like an instruct model's
    prompt = hf64.encode_question(QUESTIONS[2])
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(16):  # no cache, no padding, no processors: plain argmax
            ids.append(int(hf64.model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] in hf64.eos_ids:
                break
    [g] = hf64.batched_generate([prompt], max_new_tokens=16, return_details=True, progress=False)
    assert g.token_ids == ids[len(prompt):]
    assert hf64.model.generation_config is own  # set aside while decoding, then restored


def test_stop_token_ends_a_response(tiny_dir):
    hf = load_hf_model(tiny_dir, dtype="float64", device="cpu")
    free = _ids(hf, QUESTIONS)
    ended = [g for g in free if g.finished]
    assert ended and all(g.token_ids[-1] in hf.eos_ids and len(g.token_ids) < 24 for g in ended)  # its own EOS
    i = next(i for i, g in enumerate(free) if not g.finished and len(g.token_ids) == 24)
    stop = free[i].token_ids[6]
    first = free[i].token_ids.index(stop)
    hf.eos_ids = hf.eos_ids + [stop]  # as if the model had emitted its end-of-turn token there
    g = _ids(hf, QUESTIONS[i:i + 1])[0]
    assert g.token_ids == free[i].token_ids[:first + 1] and g.finished
    free = free[i]
    assert g.text == hf.tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)  # the stop token is not text


def test_stop_string_ends_a_response_and_is_cut(tiny_dir):
    hf = load_hf_model(tiny_dir, dtype="float64", device="cpu", prompt_format="fewshot", fewshot_k=1)
    assert hf.stop_strings == FEWSHOT_STOP and hf.info["fewshot_k"] == 1
    free = _ids(hf, QUESTIONS[:2], n=32)
    text = free[0].text
    stop = next(text[i:i + 3] for i in range(8, len(text)) if text[i:i + 3].strip() == text[i:i + 3])
    hf.stop_strings = (stop,)  # a string this random model will write (its "Question:")
    g = _ids(hf, QUESTIONS[:2], n=32)
    assert g[0].text == text[:text.find(stop)] and g[0].finished
    assert g[0].token_ids == free[0].token_ids[:len(g[0].token_ids)] and len(g[0].token_ids) < 32
    assert g[1].token_ids == free[1].token_ids[:len(g[1].token_ids)]  # the other row: unaffected until its stop


def test_cut_at_stop():
    assert cut_at_stop("5 apples.\n#### 5\n\nQuestion: next", FEWSHOT_STOP) == "5 apples.\n#### 5\n\n"
    assert cut_at_stop("a</s>b Question: c", FEWSHOT_STOP) == "a"
    assert cut_at_stop("no stop", FEWSHOT_STOP) == "no stop"


def test_course_gpt_is_gpt2_same_weights_same_outputs():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, max_seq_len=512)).double().eval()
    with torch.no_grad():
        for p in gpt.parameters():
            if p.dim() > 1:
                p.mul_(5.0)  # varied outputs, as in the generation tests
    hf = gpt2_from_course(gpt)
    assert type(hf).__name__ == "GPT2LMHeadModel" and sum(p.numel() for p in hf.parameters()) == gpt.num_params()
    x = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        assert torch.allclose(gpt(x, return_hidden=True)[1], hf.transformer(x).last_hidden_state, atol=1e-12)
    prompts = [encode_prompt([{"role": "user", "content": q}]) for q in QUESTIONS[:6]]
    course = [g.token_ids for g in batched_generate(gpt, prompts, 20, calculator=False, progress=False,
                                                    return_details=True)]
    assert [ids for ids, _ in generate_ids(hf, prompts, 20, PAD, [EOT], progress=False)] == course


# ---------------------------------------------------------------------------------------------
# the scorer, the rows, the table, torchrun

def test_scorer_takes_a_real_model(hf64, monkeypatch):
    pairs = load_qa_pairs("gsm8k", "test", limit=4)
    accuracy, records = score_model(hf64, pairs, max_new_tokens=8, progress=False)
    assert len(records) == 4 and all(r["n_tokens"] <= 8 and "finished" in r for r in records)
    assert accuracy == sum(r["correct"] for r in records) / 4
    texts = [g.text for g in _ids(hf64, [q for q, _ in pairs], n=8)]
    assert [r["response"] for r in records] == texts  # the records hold what batched_generate wrote
    room = sorted(len(hf64.encode_question(q)) for q, _ in pairs)[1]  # the two shortest prompts fit
    monkeypatch.setattr(hf64.model.config, "max_position_embeddings", room + 8)  # a short context
    with pytest.warns(UserWarning, match=rf"2 of 4 prompts are longer than {room} tokens \(context {room + 8}"):
        _, short = score_model(hf64, pairs, max_new_tokens=8, progress=False)
    skipped = [r.get("skipped") is not None for r in short]
    assert any(skipped) and not all(skipped)
    assert all(r["response"] == "" and not r["correct"] for r, s in zip(short, skipped) if s)
    assert [r["response"] for r, s in zip(short, skipped) if not s] == [t for t, s in zip(texts, skipped) if not s]


def test_score_model_on_a_course_gpt_is_gsm8k_accuracy():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=512))
    pairs = load_qa_pairs("gsm8k", "test", limit=3)
    assert score_model(gpt, pairs, max_new_tokens=6, progress=False) == gsm8k_accuracy(gpt, pairs, max_new_tokens=6,
                                                                                        progress=False)


def _score_hf(folder, table, label, *extra, limit=5):
    return evalpt.main(["--hf", str(folder), "--label", label, "--limit", str(limit), "--append", str(table),
                        "--max_new_tokens", "8", "--device", "cpu", "--no_progress", *extra])


def test_cli_scores_a_real_model_and_the_table_pairs_it(tiny_dir, tmp_path, capsys):
    table = tmp_path / "real.jsonl"
    _score_hf(tiny_dir, table, "chat")
    _score_hf(tiny_dir, table, "fewshot", "--prompt_format", "fewshot", "--fewshot_k", "2", "--parent", "chat")
    chat, fewshot = read_rows(table)
    assert (chat["hf_model"], chat["prompt_format"], chat["dtype"], chat["fewshot_k"]) == (str(tiny_dir), "chat",
                                                                                           "float32", None)
    assert chat["ckpt_sha256"] == file_sha256(tiny_dir / "model.safetensors") and chat["n"] == 5
    assert chat["transformers_version"] == transformers.__version__ and "hf_commit" in chat
    assert (fewshot["prompt_format"], fewshot["fewshot_k"]) == ("fewshot", 2)
    assert [r["index"] for r in read_jsonl(fewshot["records"])] == list(range(5))
    capsys.readouterr()
    evalpt.main(["--table", str(table)])
    assert "vs chat" in capsys.readouterr().out  # paired McNemar test between two real-model rows


def test_cli_hf_flags_need_hf(capsys):
    for argv in (["--ckpt", "x.pt", "--dtype", "float32"], ["--ckpt", "x.pt", "--hf", "y"]):
        with pytest.raises(SystemExit) as e:
            evalpt.parse_args(argv)
        assert e.value.code == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evalpt.parse_args(["--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--hf", "--revision", "--dtype", "--prompt_format", "--fewshot_k"))


def test_torchrun_two_processes_match_one_process(tiny_dir, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    _score_hf(tiny_dir, one, "tiny")  # 5 questions over 2 ranks: uneven shards (3 + 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "--hf", str(tiny_dir), "--label", "tiny", "--limit", "5", "--append", str(two),
           "--max_new_tokens", "8", "--device", "cpu", "--no_progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    [row1], [row2] = read_rows(one), read_rows(two)  # rank 0 wrote exactly one row
    assert (row2["world_size"], row1["world_size"]) == (2, 1) and row2["prompt_format"] == "chat"
    keep = ("index", "question", "response", "extracted", "gold", "correct", "reward", "n_tokens", "finished")
    strip = lambda recs: [{k: r[k] for k in keep} for r in recs]
    assert strip(read_jsonl(row2["records"])) == strip(read_jsonl(row1["records"]))
