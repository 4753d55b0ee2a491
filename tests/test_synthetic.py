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


# ---------------------------------------------------------------- the flawed teacher

from lessons_lib.synthetic import (TEACHER_MISTAKE_RATE, TEACHER_SAMPLES, TRAPS, teacher_answer,  # noqa: E402
                                   teacher_errs, teacher_qa_pairs, trap_report)
from rewards import gsm8k_gold_answer  # noqa: E402


def _annotations_agree(answer):
    for expr, result in re.findall(r"<<([^=]+)=([^>]+)>>", answer):
        assert format_result(evaluate_expression(expr)) == result


def test_flawed_solutions_are_internally_consistent_and_wrong():
    problems = synthetic_problems("train", 1000)
    flawed = [p for p in problems if "flawed_answer" in p]
    assert {p["template"] for p in flawed} == set(TRAPS)  # every trap kind, and nothing else
    for p in flawed:
        _annotations_agree(p["flawed_answer"])  # right arithmetic for the wrong expression
        last = re.findall(r"<<[^=]+=([^>]+)>>", p["flawed_answer"])[-1]
        assert p["flawed_answer"].endswith(f"#### {last}")  # it ends in the teacher's own result
        assert gsm8k_gold_answer(p["flawed_answer"]) != gsm8k_gold_answer(p["answer"])
        assert len(p["flawed_answer"].split("\n")) == len(p["answer"].split("\n"))  # same number of steps


def test_teacher_is_deterministic_and_errs_at_its_rate_on_traps_only():
    problems = synthetic_problems("train", 3000)
    demos = teacher_qa_pairs("train", 3000)
    assert demos == teacher_qa_pairs("train", 3000) and demos[:100] == teacher_qa_pairs("train", 100)
    wrong = [p for p, (_, d) in zip(problems, demos) if d != p["answer"]]
    assert all(p["template"] in TRAPS for p in wrong)
    traps = [p for p in problems if p["template"] in TRAPS]
    assert abs(len(wrong) / len(traps) - TEACHER_MISTAKE_RATE) < 0.04  # ~1500 trap problems: SE ~0.012
    assert all(d == p["answer"] for p, (_, d) in zip(problems, teacher_qa_pairs("train", 3000, teacher="gold")))
    assert [q for q, _ in demos] == [p["question"] for p in problems]  # the questions are untouched


def test_each_sample_of_a_problem_gets_its_own_coin():
    """SFT's pool holds several teacher samples per problem, so a trap problem shows up both ways
    and SFT can only learn the teacher's rate, not which problems it got right."""
    problems = synthetic_problems("train", 400)
    pool = teacher_qa_pairs("train", 400, samples=TEACHER_SAMPLES)
    assert len(pool) == 400 * TEACHER_SAMPLES
    assert pool[::TEACHER_SAMPLES] == teacher_qa_pairs("train", 400)  # sample 0 is the one-sample pool
    per_problem = [pool[i * TEACHER_SAMPLES:(i + 1) * TEACHER_SAMPLES] for i in range(400)]
    assert all(len({q for q, _ in demos}) == 1 for demos in per_problem)  # same question, K demos
    mixed = sum(len({d for _, d in demos}) == 2 for p, demos in zip(problems, per_problem) if p["template"] in TRAPS)
    assert mixed > 0.5 * sum(p["template"] in TRAPS for p in problems)  # 1 - 0.7^4 - 0.3^4 = 75% expected


def test_the_teacher_does_not_change_dev_or_test():
    import hashlib, json
    digest = hashlib.sha256(json.dumps(synthetic_qa_pairs("test")).encode()).hexdigest()[:16]
    assert digest == "4b9c3402b88b7c25"  # the 500 test problems every shipped number is measured on


def test_trap_report_counts_copies_of_the_teachers_answer():
    problems = synthetic_problems("dev", 60)
    records = []
    for p in problems:
        answer = p.get("flawed_answer", p["answer"])  # a model that copies the teacher on every trap
        extracted = gsm8k_gold_answer(answer)
        records.append({"extracted": extracted, "correct": extracted == gsm8k_gold_answer(p["answer"])})
    report = trap_report(problems, records)
    assert report["trap_acc"] == 0.0 and report["clean_acc"] == 1.0
    assert report["copies_teacher"] == report["trap_n"] == sum(p["template"] in TRAPS for p in problems)
    assert report["trap_n"] + report["clean_n"] == 60
