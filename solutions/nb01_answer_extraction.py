"""Solutions to the exercises of `notebooks/01_answer_extraction.ipynb`. Try them first!"""
import re

from rewards import find_numbers, gsm8k_gold_answer, is_correct, parse_number

# Exercise 1 · rule 3 in miniature. A sign counts only when it is not glued to a word or a number
# before it (`20-18` is a subtraction), digits glued to a letter (`H2O`) are no number, `$` is
# skipped, commas are thousands separators only in groups of three.
_MINI_NUMBER = re.compile(
    r"(?:(?<![\w)\]])-)?"  # a minus sign, not glued to what comes before
    r"\$?"  # a currency sign before the digits is not part of the number
    r"(?<![A-Za-z_])"  # digits glued to a letter are not a number
    r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # 1,234 or 1234, then an optional .5
)


def last_number(text):
    """The last number in `text` as a string (`"$1,234.50"` -> `"1234.50"`), or None."""
    found = _MINI_NUMBER.findall(text)
    if not found:
        return None
    return found[-1].replace("$", "").replace(",", "")


# Exercise 2 · right reasoning, scored wrong by the fallback; one tag fixes it (rule 1 comes first).
RIGHT_BUT_SCORED_WRONG = "16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. I checked it 2 times."
FIXED_WITH_A_TAG = RIGHT_BUT_SCORED_WRONG + " <answer>18</answer>"

# Exercise 3 · gold 1450000: separators, e-notation and trailing zeros are understood; the word
# "million" is not a number, so `$1.45 million` is read as 1.45.
VERDICTS_FOR_1450000 = {"#### 1,450,000": True, "1 450 000": True, "$1.45 million": False,
                        "1.45e6": True, "1450000.0": True}


# Exercise 4 · a checker that reads the first number after the last "A:".
def first_number_after_a(solution):
    """The first number after the last `A:` of a GPT-3 solution, as a Fraction, or None."""
    found = find_numbers(solution[solution.rfind("A:"):])
    return found[0] if found else None


def verdicts_changed(model_solutions, qa_pairs, model="175b_verification"):
    """How many of `model`'s verdicts change when the checker reads the first number after `A:`."""
    changed = 0
    for row, (_, answer) in zip(model_solutions, qa_pairs, strict=True):
        solution, gold = row[model]["solution"], gsm8k_gold_answer(answer)
        changed += (first_number_after_a(solution) == parse_number(gold)) != is_correct(solution, gold)
    return changed  # 0: GPT-3 always ends with "A: N" and writes nothing after N


# Exercise 5 · why `<answer>16-18</answer>` gives None but `The eggs cost 20-2 = 18` gives 18.
WHY_RANGE_VS_SUBTRACTION = """\
Both hold a '-' glued to a digit, so neither is a negative number: `16-18` is the two numbers 16 and 18,
`20-2` is 20 and 2. Inside a tag (rule 1) the text must hold one distinct number, and 16 and 18 are two:
the tag is ambiguous, which means no answer at all. In free text (rule 3) only the last number counts,
and the text after `=` ends on 18."""


# Exercise 1, follow-up · where the mini version disagrees on GPT-3's 5276 solutions (3 of them).
WHERE_THE_MINI_VERSION_DIFFERS = """\
It reads `7/14` and `1/5` as the last digits (14, 5): the library understands exact fractions a/b.
It reads a solution that degenerates into `0.333…` (about 1500 digits) as that decimal, where the library
finds the run too long to be a number (over a thousand digits) and takes the number before it. On the
1319 answer keys without their `####` line it also misses `$118 000` (a space as thousands separator)."""
