"""gsm8k_accuracy: the seed's three lines as a function, returning accuracy and per-item records."""

from types import SimpleNamespace

import pytest
import torch

from lessons_lib import engine, scoring
from lessons_lib.generation import Generation, batched_generate
from lessons_lib.model import GPT, GPTConfig
from lessons_lib.tokenizer import BYTES, encode_prompt
from rewards import gsm8k_gold_answer, is_correct

QA = [("Tom has 3 apples and buys 15 more. How many?", "3+15=<<3+15=18>>18\n#### 18"),
      ("Half of 14?", "14/2=<<14/2=7>>7\n#### 7"),
      ("A dozen eggs cost $1,200 in total?", "#### 1,200"),
      ("How many legs do 2 cats have?", "2*4=<<2*4=8>>8\n#### 8")]


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=192)).eval()


FAKE_MODEL = SimpleNamespace(config=SimpleNamespace(max_seq_len=10_000), tokenizer=BYTES)  # context and prompts only


def _fake_generate(texts):
    """A stand-in for batched_generate that returns fixed responses (to test the checking half)."""
    def fake(model, prompts, max_new_tokens=256, **kw):
        assert len(prompts) == len(texts) and kw["greedy"] and kw["return_details"]
        return [Generation(text=t, token_ids=list(t.encode()) + ([259] if i != 3 else []),
                           finished=i != 3) for i, t in enumerate(texts)]
    return fake


def test_records_and_accuracy_with_known_responses(monkeypatch):
    texts = ["So 3+15=18.\n<answer>18</answer>", "#### 7", "It costs 1200.", "I think 9"]
    monkeypatch.setattr(engine, "batched_generate", _fake_generate(texts))
    acc, records = scoring.gsm8k_accuracy(FAKE_MODEL, QA)
    assert acc == 0.75
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert [r["gold"] for r in records] == ["18", "7", "1200", "8"]  # commas stripped from '#### 1,200'
    assert [r["extracted"] for r in records] == ["18", "7", "1200", "9"]
    assert [r["correct"] for r in records] == [True, True, True, False]
    assert [r["reward"] for r in records] == [1.2, 1.0, 1.0, 0.0]  # format bonus only for the tag
    assert [r["finished"] for r in records] == [True, True, True, False]
    assert records[0]["n_tokens"] == len(texts[0]) + 1  # + the EOT
    assert records[2]["question"] == QA[2][0] and records[2]["response"] == texts[2]


def test_no_answer_is_extracted_as_none(monkeypatch):
    monkeypatch.setattr(engine, "batched_generate", _fake_generate(["", "no idea", "", "x"]))
    _, records = scoring.gsm8k_accuracy(FAKE_MODEL, QA)
    assert records[0]["extracted"] is None and not records[0]["correct"] and records[0]["reward"] == 0.0


def test_matches_the_seed_three_lines_on_a_real_model():
    model = _tiny_model()
    acc, records = scoring.gsm8k_accuracy(model, QA, max_new_tokens=12, progress=False)
    prompts = [encode_prompt([{"role": "user", "content": q}]) for q, _ in QA]  # the seed, verbatim
    responses = batched_generate(model, prompts, 12, device=None, greedy=True, progress=False)
    correct = sum(is_correct(resp, gsm8k_gold_answer(ans)) for (q, ans), resp in zip(QA, responses))
    assert [r["response"] for r in records] == responses
    assert acc == correct / len(QA)
    assert all(r["n_tokens"] <= 12 for r in records)
    assert all(r["finished"] or r["n_tokens"] == 12 for r in records)  # unfinished = hit the budget


def test_deterministic_and_independent_of_strategy_and_batch_size():
    model = _tiny_model(seed=1)
    _, a = scoring.gsm8k_accuracy(model, QA, max_new_tokens=10, progress=False)
    _, b = scoring.gsm8k_accuracy(model, QA, max_new_tokens=10, progress=False)
    _, c = scoring.gsm8k_accuracy(model, QA, max_new_tokens=10, strategy="sequential", batch_size=1,
                                  progress=False)
    assert a == b
    assert [r["response"] for r in a] == [r["response"] for r in c]


def test_empty_input_and_accuracy_of():
    assert scoring.gsm8k_accuracy(_tiny_model(), []) == (0.0, [])
    assert scoring.accuracy_of([{"correct": True}, {"correct": False}]) == 0.5
    assert scoring.accuracy_of([]) == 0.0


def test_score_responses_offsets_indices_and_checks_lengths():
    records = scoring.score_responses(QA[:2], ["18", "8"], start_index=10)
    assert [(r["index"], r["correct"]) for r in records] == [(10, True), (11, False)]
    with pytest.raises(ValueError):
        scoring.score_responses(QA[:2], ["18"])  # a missing response is a bug, not a silent zip


def test_arithmetic_errors_found_in_annotations_and_plain_text():
    assert scoring.arithmetic_errors("So 15*6 = <<15*6=90>>90 dollars.") == []
    assert scoring.arithmetic_errors("Then <<7*8=54>>54 eggs") == ["<<7*8=54>>54"]
    assert scoring.arithmetic_errors("<<668-7=661>>61 dollars left") == ["<<668-7=661>>61"]  # a copy slip
    assert scoring.arithmetic_errors("<<10/4=2.5>>2.5 and <<1,000+1=1001>>1,001") == []
    assert scoring.arithmetic_errors("She has 3 + 4 = 8 cats and 1,200/2 = 600 dogs.") == ["3 + 4=8"]
    assert scoring.arithmetic_errors("10/3 = 3.33 so about 3") == []  # the calculator's 2-place rounding
    assert scoring.arithmetic_errors("step2 = 5, H2O") == []


def test_unsupported_numbers_finds_copying_slips_only():
    q = "Lena bakes 4 dozen cookies. She eats 1 cookie. She gives 5 cookies to each of 5 friends. Ben has 22 stickers."
    assert scoring.unsupported_numbers(q, "<<4*12=48>>48\n<<5*5=25>>25\n<<48-1-25=22>>22") == []  # dozen = 12
    assert scoring.unsupported_numbers(q, "<<4*12=48>>48\n<<48-1-25=22>>22") == [25]  # 25 came from nowhere
    assert scoring.unsupported_numbers(q, "<<48-1=47>>47") == [48]  # 48 is used before it is computed
    assert scoring.unsupported_numbers(q, "<<4*60=240>>240 and 3 + 99 = 102") == []  # common 60; plain text ignored
    assert scoring.unsupported_numbers("Tom has 1,200 coins.", "<<1,200/3=400>>400") == []  # thousands commas
    assert scoring.unsupported_numbers("Tom has 1,200 coins.", "<<1,250/3=416.67>>") == [1250]
    assert scoring.unsupported_numbers("It costs $2.50 each.", "<<2.5*3=7.5>>7.5") == []  # 2.50 == 2.5, not 2 and 5


def test_failure_categories_in_order():
    base = {"correct": False, "finished": True, "extracted": "5", "response": "2+2=4 so <answer>5</answer>"}
    assert scoring.failure_category({**base, "correct": True}) == "correct"
    assert scoring.failure_category({**base, "finished": False}) == "truncated"
    assert scoring.failure_category({**base, "extracted": None}) == "no answer"
    assert scoring.failure_category({**base, "response": "2+2=5 so <answer>5</answer>"}) == "wrong arithmetic"
    assert scoring.failure_category(base) == "wrong reasoning"
    slip = {**base, "question": "Maya earns $18 an hour for 4 hours. She spends $45. What is left?",
            "response": "<<18*4=72>>72 dollars\n<<72-41=31>>31 dollars left\n<answer>31</answer>"}
    assert scoring.failure_category(slip) == "wrong number copied"
    choice = {**slip, "response": "<<18*4=72>>72\n<<72-18=54>>54\n<answer>54</answer>"}
    assert scoring.failure_category(choice) == "wrong reasoning"  # 18 exists: a wrong choice, not a slip
    assert set(scoring.FAILURE_CATEGORIES) >= {"correct", "truncated", "no answer"}


def test_prompts_without_room_count_as_wrong_with_a_warning():
    model = _tiny_model()
    long_question = "How many? " + "Many apples. " * 20  # ~270 tokens: no room in a 192-token context
    qa = [QA[0], (long_question, "#### 3"), QA[1]]
    with pytest.warns(UserWarning, match="1 of 3 prompts are longer than"):
        _, records = scoring.gsm8k_accuracy(model, qa, max_new_tokens=8, progress=False)
    assert records[1]["skipped"] and records[1]["response"] == "" and not records[1]["correct"]
    assert "skipped" not in records[0] and [r["index"] for r in records] == [0, 1, 2]
    _, alone = scoring.gsm8k_accuracy(model, [QA[0], QA[1]], max_new_tokens=8, progress=False)
    assert [records[0]["response"], records[2]["response"]] == [r["response"] for r in alone]


def test_truncated_but_credited_are_the_cut_off_answers_the_fallback_still_reads_right(monkeypatch):
    texts = ["<answer>18</answer>", "#### 7", "It costs 1200.", "2 cats: 2*4=8 legs, and each leg has"]
    monkeypatch.setattr(engine, "batched_generate", _fake_generate(texts))  # the last one runs out of tokens
    _, records = scoring.gsm8k_accuracy(FAKE_MODEL, QA)
    assert records[3]["finished"] is False and records[3]["correct"]  # last number 8: credited, unfinished
    assert scoring.truncated_but_credited(records) == [records[3]]
    assert scoring.failure_category(records[3]) == "correct"  # the categories can't see it: it counts as right
    wrong = {**records[3], "correct": False}  # truncated and wrong: a failure, not a credit
    assert scoring.truncated_but_credited(records[:3] + [wrong]) == []
    bare = scoring.score_responses(QA, texts)  # no Generation details: nothing says it was cut off
    assert "finished" not in bare[3] and bare[3]["correct"] and scoring.truncated_but_credited(bare) == []
