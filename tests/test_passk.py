"""pass@k (Chen et al. 2021, eq. 1) and maj@k, on numbers worked out by hand; the command refuses first."""
import math
import subprocess
import sys

import pytest

from lessons_lib.passk import majority_answer, mean_interval, pass_at_k, problem_records, summarize


def test_pass_at_k_by_hand():
    # n = 4 samples, c = 1 right: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # c = 2 of 4, k = 2: 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0  # k = n: any right sample is drawn


def test_pass_at_k_equals_the_binomial_formula_and_pass1_is_the_fraction_right():
    for n in (1, 5, 16):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_appearance():
    assert majority_answer(["3", None, "4", "4", "3", None, None]) == "3"  # 2-2 tie: "3" came first
    assert majority_answer(["7", "5", "5"]) == "5"
    assert majority_answer([None, None]) is None


def test_summarize_pass_and_maj_by_hand():
    texts = [["<answer>5</answer>", "<answer>6</answer>", "<answer>6</answer>", "<answer>5</answer>"],
             ["<answer>1</answer>", "<answer>2</answer>", "<answer>3</answer>", "<answer>4</answer>"]]
    records = problem_records(texts, [("q1", "#### 5"), ("q2", "#### 9")])
    out = summarize(records, [1, 2, 4])
    # problem 1: c = 2 of 4; problem 2: c = 0. pass@1 = (0.5 + 0) / 2; pass@2 = (5/6 + 0) / 2
    assert out["1"]["pass"] == pytest.approx(0.25) and out["2"]["pass"] == pytest.approx(round(5 / 12, 4))
    # maj@1: first sample "5" right, problem 2 wrong -> 1/2; maj@4: 5-6 tie, "5" first -> right
    assert out["1"]["maj"] == 0.5 and out["4"]["maj"] == 0.5
    # maj@2: votes "5","6" tie -> "5" (first) -> right
    assert out["2"]["maj"] == 0.5
    lo, hi = out["1"]["pass_ci95"]
    assert lo <= 0.25 <= hi


def test_mean_interval_is_symmetric_and_clipped():
    mean, lo, hi = mean_interval([0.0, 1.0] * 50)
    assert mean == 0.5 and lo == pytest.approx(0.5 - 1.959964 * math.sqrt(100 / 99 * 0.25) / 10, rel=1e-6)
    assert mean_interval([1.0] * 10) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("argv, message", [
    (["--k", "0"], "--k 0"), (["--n", "501"], "--n 501"), (["--temperature", "0"], "--temperature"),
    (["--ckpt_dir", "/nonexistent"], "no base_pretrained.pt"),
])
def test_the_command_refuses_in_one_line_before_sampling(argv, message):
    result = subprocess.run([sys.executable, "-m", "lessons_lib.passk", *argv], capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
