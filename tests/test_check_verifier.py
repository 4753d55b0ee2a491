"""Tests for lessons_lib/check_verifier.py and scripts/check_verifier.py: the verifier's sanity check.

On real GSM8K (GSM8K_DIR, set by CI to ../shared/data/gsm8k) this is the issue's acceptance check:
1319/1319 gold correct, 0 false positives, 5276/5276 agreement with OpenAI's labels. Without the data
these tests skip with a visible reason; the small synthetic tests below always run.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lessons_lib.check_verifier import (
    MODELS,
    PAPER_CORRECT,
    check_gold,
    check_model_solutions,
    check_wrong_answers,
    format_report,
    run_sanity_check,
    sanity_passed,
    wrong_responses,
)
from rewards import is_correct

REPO = Path(__file__).resolve().parent.parent
ITEM = ("Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest at $2 each. "
        "How much does she make?", "16 - 3 - 4 = <<16-3-4=9>>9\n9 * 2 = $<<9*2=18>>18\n#### 18")


def test_wrong_responses_are_wrong_and_cover_every_kind():
    pairs = wrong_responses(*ITEM)
    kinds = {kind for kind, _ in pairs}
    assert {"gold+1 in ####", "gold*10 in tag", "question number in tag", "hedge: 'N or M'"} <= kinds
    assert not any(is_correct(response, "18") for _, response in pairs)
    assert ("hedge: 'N or M'", "16 - 3 - 4 = <<16-3-4=9>>9\n9 * 2 = $<<9*2=18>>18\n<answer>18 or 19</answer>") in pairs


def test_checks_on_a_tiny_set():
    assert check_gold([ITEM]) == {"n": 1, "correct": 1, "failures": []}
    wrong = check_wrong_answers([ITEM])
    assert wrong["false_positives"] == 0 and wrong["n"] == len(wrong_responses(*ITEM))
    rows = [{"question": ITEM[0], **{m: {"solution": "...\nA: 18", "is_correct": True} for m in MODELS}}]
    rows[0]["6b_finetuning"] = {"solution": "A: 26", "is_correct": True}  # a label we disagree with
    models = check_model_solutions(rows, [ITEM])
    assert models["175b_verification"] == {"n": 1, "labelled_correct": 1, "our_correct": 1, "agree": 1,
                                           "disagreements": []}
    assert models["6b_finetuning"]["disagreements"] == [{"index": 0, "label": True, "extracted": "26"}]
    report = {"gold": check_gold([ITEM]), "wrong": wrong, "models": models}
    assert not sanity_passed(report) and format_report(report).endswith("FAIL")


def test_sanity_check_on_real_gsm8k():
    report = run_sanity_check(progress=False)  # GSM8K_DIR, else the copies shipped in data/gsm8k/
    print(format_report(report))  # shown with pytest -s
    assert report["gold"] == {"n": 1319, "correct": 1319, "failures": []}
    assert report["wrong"]["false_positives"] == 0 and report["wrong"]["n"] > 5 * 1319
    for model, m in report["models"].items():
        assert m["agree"] == 1319, (model, m["disagreements"][:5])
        assert m["our_correct"] == m["labelled_correct"] == PAPER_CORRECT[model]
    assert sanity_passed(report)


def test_script_prints_the_counts():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "check_verifier.py"),
                          "--limit", "50", "--no-progress"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "gold solutions scored correct : 50/50" in out.stdout and out.stdout.strip().endswith("PASS")


def test_script_help_and_missing_data(tmp_path):
    script = str(REPO / "scripts" / "check_verifier.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=REPO)
    assert help_text.returncode == 0 and "--data-dir" in help_text.stdout
    missing = subprocess.run([sys.executable, script, "--data-dir", str(tmp_path)],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "GSM8K_DIR" in missing.stderr


def test_json_output(gsm8k_dir):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "check_verifier.py"), "--data-dir",
                          str(gsm8k_dir), "--limit", "5", "--json", "--no-progress"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert json.loads(out.stdout)["gold"]["n"] == 5
