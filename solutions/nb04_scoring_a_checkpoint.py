"""Solutions to the exercises of `notebooks/04_scoring_a_checkpoint.ipynb`. Try them first!"""
from rewards import gsm8k_gold_answer, is_correct, reward_gsm8k

from lessons_lib.scoring import arithmetic_errors, unsupported_numbers
from lessons_lib.synthetic import TRAPS, synthetic_problems


# Exercise 1 · the failure categories, checked in order. Correct comes first (a cut-off answer that the
# fallback credits is correct), then truncated (a cut-off answer has no final number of its own, so the
# later checks would judge a fragment), then the checks that need a finished answer. Only `finished is
# False` means truncated: a record without the key says nothing about it.
def my_failure_category(record):
    """One of scoring.FAILURE_CATEGORIES for a record from gsm8k_accuracy."""
    if record["correct"]:
        return "correct"
    if record.get("finished") is False:
        return "truncated"
    if record["extracted"] is None:
        return "no answer"
    if arithmetic_errors(record["response"]):
        return "wrong arithmetic"
    if record.get("question") and unsupported_numbers(record["question"], record["response"]):
        return "wrong number copied"
    return "wrong reasoning"


# Exercise 2 · wrong answers on trap kinds that are not the teacher's number.
def wrong_trap_answers_not_copied(problems, records):
    """Records of trap problems (those with a `flawed_answer`) answered wrongly with another number
    than the teacher's wrong one."""
    return [r for p, r in zip(problems, records, strict=True)
            if "flawed_answer" in p and not r["correct"]
            and r["extracted"] != gsm8k_gold_answer(p["flawed_answer"])]


NOT_COPIED = """\
A quarter of them (54 of the shipped SFT's 218 wrong trap answers). Most carry the teacher's
misreading plus one more slip (a wrong count of dozens in the garden problems, a number copied wrong into
the flawed expression), so the final number differs from the teacher's; a few are slips on the correct
route. The failure category they land in (wrong number copied, wrong reasoning) says which check fired."""


# Exercise 3 · GRPO against SFT on trap kinds, clean kinds and copies of the teacher, from the numbers the
# pipeline stored for both checkpoints (the same greedy scoring as `trap_report` on GRPO's records).
def biggest_mover(manifest, new="grpo", old="sft"):
    """(name, change) of trap_acc, clean_acc (in points) or copies_teacher (in answers) whose change
    from `old` to `new` is largest relative to its scale: accuracies in points, copies as a share of
    the trap problems, in points too."""
    stages = manifest["stages"]
    trap_n = sum(p["template"] in TRAPS for p in synthetic_problems("test"))  # trap_report's trap_n
    changes = {"trap_acc": 100 * (stages[new]["trap_acc"] - stages[old]["trap_acc"]),
               "clean_acc": 100 * (stages[new]["clean_acc"] - stages[old]["clean_acc"]),
               "copies_teacher": 100 * (stages[new]["copies_teacher"] - stages[old]["copies_teacher"]) / trap_n}
    name = max(changes, key=lambda k: abs(changes[k]))
    return name, changes[name]


# Exercise 4 · with a byte-level tokenizer, max_new_tokens = k cuts an answer after its first k bytes
# (the calculator's forced tokens are bytes too). A cut point k is "credited" when that prefix, which
# the model never finished, already scores correct.
def credited_cut_points(response, gold):
    """The budgets k < len(response) at which the first k characters of `response` score correct."""
    return [k for k in range(1, len(response)) if is_correct(response[:k], gold)]


WHERE_THE_CUTS_FALL = """\
Almost all credited cut points lie at the end of the answer: after the last calculation has written
the gold (`...=317>>317`) and before `</answer>` closes, i.e. in ' dollars left', '\\n<answer>' and
'<answer>317'. A few fall earlier, when an intermediate result happens to equal the gold. A tighter budget
can lose accuracy (answers cut before their last calculation) and still have credited ones (answers
cut after it)."""


# Exercise 5 · a well-formed wrong answer earns only the format bonus. A wrong answer earns at most 0.2
# (correctness 0 + bonus 0.2), a right one at least 1.0 (correctness 1, with or without the bonus): the
# bonus can never make a wrong answer beat a right one.
def a_response_worth_0_2(gold):
    """A response that earns exactly 0.2 for this gold: a well-formed tag with another number."""
    wrong = "1" if str(gold) != "1" else "2"
    return f"<answer>{wrong}</answer>"


assert reward_gsm8k(a_response_worth_0_2("317"), "317") == 0.2
