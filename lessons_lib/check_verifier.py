"""The verifier's own sanity check on real GSM8K, independent of any model we train.

Before trusting a number like "SFT scores 12%", check the scorer itself:

1. **Gold solutions score correct.** Every GSM8K test solution, fed to `is_correct` with its own gold,
   must be correct: 1319/1319.
2. **Wrong answers never do.** From each item we build wrong responses — gold±1, gold×10, a number
   from the question that is not the gold, and hedges that list the gold next to a wrong number
   (`<answer>18 or 19</answer>`, two disagreeing tags, a range, two `####` lines). False positives: 0.
3. **Real model outputs agree with human-checked labels.** OpenAI released 4×1319 solutions written by
   GPT-3 (6B and 175B, fine-tuned and with a verifier; Cobbe et al., 2021), each labelled correct or
   not. Our checker must agree with every label (5276/5276), and so reproduce the paper's counts
   286, 515, 458 and 742 out of 1319.

`run_sanity_check()` runs all three; `scripts/check_verifier.py`, `tests/test_check_verifier.py` and
notebook 01 all call it, so they cannot drift apart.
"""
from tqdm import tqdm  # plain bars: no widget warnings inside notebooks

from lessons_lib.data import DatasetFormatError, DatasetUnavailableError, gsm8k_file, load_gsm8k
from lessons_lib.jsonl import read_jsonl
from rewards import extract_answer, find_numbers, gsm8k_gold_answer, is_correct, parse_number
from rewards.gsm8k import _format

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
PAPER_CORRECT = {"6b_finetuning": 286, "6b_verification": 515,  # correct out of 1319, as labelled
                 "175b_finetuning": 458, "175b_verification": 742}
MODEL_SOLUTIONS_FILE = "example_model_solutions.jsonl"


def wrong_responses(question, answer_field):
    """(kind, response) pairs that must all score *wrong* for this GSM8K item."""
    gold = parse_number(gsm8k_gold_answer(answer_field))
    body = answer_field[:answer_field.rfind("####")]  # the worked solution, full of true numbers
    wrong = {"gold+1": gold + 1, "gold-1": gold - 1, "gold*10": gold * 10}
    from_question = [v for v in find_numbers(question) if v != gold]
    if from_question:  # a number the model could copy from the question
        wrong["question number"] = from_question[0]
    pairs = []
    for kind, value in wrong.items():
        pairs.append((kind + " in ####", f"{body}#### {_format(value)}"))  # body holds the gold
        pairs.append((kind + " in tag", f"{body}<answer>{_format(value)}</answer>"))
    g, g1 = _format(gold), _format(gold + 1)
    pairs += [
        ("hedge: 'N or M'", f"{body}<answer>{g} or {g1}</answer>"),
        ("hedge: two tags", f"<answer>{g1}</answer>\n{body}<answer>{g}</answer>"),
        ("hedge: a range", f"{body}<answer>{g}-{g1}</answer>"),
        ("hedge: two #### lines", f"{body}#### {g}\n#### {g1}"),
    ]
    return pairs


def check_gold(qa_pairs, progress=False):
    """Does every gold solution score correct against its own gold? Returns counts + failures."""
    failures = [i for i, (_, answer) in enumerate(tqdm(qa_pairs, disable=not progress, desc="gold"))
                if not is_correct(answer, gsm8k_gold_answer(answer))]
    return {"n": len(qa_pairs), "correct": len(qa_pairs) - len(failures), "failures": failures}


def check_wrong_answers(qa_pairs, progress=False):
    """Score every wrong response built by `wrong_responses`; count the false positives by kind."""
    by_kind, examples = {}, []
    for i, (question, answer) in enumerate(tqdm(qa_pairs, disable=not progress, desc="wrong")):
        gold = gsm8k_gold_answer(answer)
        for kind, response in wrong_responses(question, answer):
            n, fp = by_kind.get(kind, (0, 0))
            hit = is_correct(response, gold)
            by_kind[kind] = (n + 1, fp + hit)
            if hit:
                examples.append({"index": i, "kind": kind, "response": response[-200:]})
    total = sum(n for n, _ in by_kind.values())
    false_positives = sum(fp for _, fp in by_kind.values())
    return {"n": total, "false_positives": false_positives, "by_kind": by_kind, "examples": examples}


def load_model_solutions(data_dir=None, limit=None):
    """The GPT-3 solutions with OpenAI's labels (one row per test problem), from the GSM8K folder."""
    path = gsm8k_file(MODEL_SOLUTIONS_FILE, data_dir)  # GSM8K_DIR/data_dir, else the shipped copy
    return read_jsonl(path, limit=limit, keys=("question", *MODELS), error=DatasetFormatError)


def check_model_solutions(rows, qa_pairs, progress=False):
    """Score each model's solutions with our checker; compare with OpenAI's `is_correct` labels."""
    results = {}
    for model in MODELS:
        ours = labelled = 0
        disagreements = []
        for i, (row, (question, answer)) in enumerate(zip(rows, qa_pairs, strict=True)):
            if row["question"] != question:
                raise ValueError(f"item {i}: model solutions and test.jsonl are not in the same order")
            solution, label = row[model]["solution"], bool(row[model]["is_correct"])
            verdict = is_correct(solution, gsm8k_gold_answer(answer))
            ours, labelled = ours + verdict, labelled + label
            if verdict != label:
                disagreements.append({"index": i, "label": label, "extracted": extract_answer(solution)})
        results[model] = {"n": len(rows), "labelled_correct": labelled, "our_correct": ours,
                          "agree": len(rows) - len(disagreements), "disagreements": disagreements}
    return results


def run_sanity_check(data_dir=None, limit=None, progress=True):
    """All three checks on the GSM8K test split (the first `limit` items; None: all 1319)."""
    qa_pairs = load_gsm8k("test", limit=limit, data_dir=data_dir)
    rows = load_model_solutions(data_dir, limit=limit)
    return {
        "gold": check_gold(qa_pairs, progress),
        "wrong": check_wrong_answers(qa_pairs, progress),
        "models": check_model_solutions(rows, qa_pairs, progress),
    }


def sanity_passed(report):
    """True when gold is all correct, there is no false positive, and every label agrees."""
    return (report["gold"]["correct"] == report["gold"]["n"]
            and report["wrong"]["false_positives"] == 0
            and all(m["agree"] == m["n"] for m in report["models"].values()))


def format_report(report):
    """The report as a plain-text table (what the script prints and notebook 01 shows)."""
    gold, wrong = report["gold"], report["wrong"]
    lines = [f"gold solutions scored correct : {gold['correct']}/{gold['n']}",
             f"wrong answers, false positives: {wrong['false_positives']}/{wrong['n']}"]
    for kind, (n, fp) in wrong["by_kind"].items():
        lines.append(f"    {kind:28s} {fp}/{n}")
    lines.append("GPT-3 solutions (Cobbe et al., 2021) vs OpenAI's labels:")
    lines.append(f"    {'model':20s} {'labelled':>8s} {'ours':>6s} {'paper':>6s} {'agree':>11s}")
    for model, m in report["models"].items():
        paper = PAPER_CORRECT[model] if m["n"] == 1319 else "-"
        lines.append(f"    {model:20s} {m['labelled_correct']:8d} {m['our_correct']:6d} {paper!s:>6s} "
                     f"{m['agree']:5d}/{m['n']}")
    lines.append("PASS" if sanity_passed(report) else "FAIL")
    return "\n".join(lines)
