import random
import re

import pytest

from lessons_lib.calculator import evaluate_expression, format_result
from lessons_lib.synthetic import (TEMPLATES, generate_problem, split_of, synthetic_problems,
                                   synthetic_qa_pairs)


def test_splits_are_disjoint_and_test_has_500():
    keys = {s: {p["key"] for p in synthetic_problems(s)} for s in ("train", "dev", "test")}
    assert len(keys["test"]) == 500 and len(synthetic_qa_pairs("test")) == 500
    assert not keys["train"] & keys["test"] and not keys["dev"] & keys["test"] and not keys["train"] & keys["dev"]
    assert all(split_of(k) == "test" for k in keys["test"])


def test_seeded_and_prefix_stable():
    assert synthetic_qa_pairs("dev", 20) == synthetic_qa_pairs("dev", 50)[:20]
    assert synthetic_qa_pairs("test", 5) == synthetic_qa_pairs("test", 5)


def test_gsm8k_format_and_annotations_agree_with_calculator():
    for q, a in synthetic_qa_pairs("train", 300):
        lines = a.split("\n")
        assert re.fullmatch(r"#### \d+", lines[-1])
        assert 2 <= len(lines) - 1 <= 4  # 2-4 worked steps
        for line in lines[:-1]:
            expr, result = re.search(r"<<([^=]+)=([^>]+)>>", line).groups()
            assert format_result(evaluate_expression(expr)) == result  # what the engine would force
            assert line.count(f">>{result}") == 1  # the result is copied after the annotation
        last = re.findall(r"<<[^=]+=([^>]+)>>", a)[-1]
        assert lines[-1] == f"#### {last}"
        assert q.endswith("?")


def test_every_template_used_with_paraphrases_and_word_operations():
    probs = synthetic_problems("train", 2000)
    assert {p["template"] for p in probs} == set(TEMPLATES)
    text = " ".join(p["question"] for p in probs)
    for phrase in ("twice as many", "half of", "dozen", "fewer"):
        assert phrase in text
    cookies = {p["question"].split(".")[0].split(" ", 1)[1] for p in probs if p["template"] == "cookies"}
    assert any("bakes" in c for c in cookies) and any("made" in c for c in cookies)


def test_distractors_add_irrelevant_numbers():
    rng = random.Random(0)
    plain = generate_problem(rng, "trip", distractors=(0,))
    noisy = generate_problem(random.Random(0), "trip", distractors=(2,))
    assert noisy["answer"] == plain["answer"] and len(noisy["question"]) > len(plain["question"])


def test_unknown_split_and_oversized_test():
    with pytest.raises(ValueError, match="unknown synthetic split"):
        synthetic_qa_pairs("validation")
    with pytest.raises(ValueError, match="500"):
        synthetic_qa_pairs("test", 501)
