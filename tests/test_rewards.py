"""Tests for rewards/gsm8k.py: the extraction policy case by case, properties, speed, and errors."""
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import (
    _answers_match,
    extract_answer,
    find_numbers,
    gsm8k_gold_answer,
    has_well_formed_answer,
    is_correct,
    parse_number,
    reward_gsm8k,
    reward_gsm8k_strict,
)
from rewards.gsm8k import _NUMBER, _last_number, _token_value

# --- rule 1: tags ---------------------------------------------------------------------------------
TAGS = [
    ("<answer>18</answer>", "18"),
    ("The eggs: 16 - 3 - 4 = 9, 9 * 2 = 18. <answer>18</answer>", "18"),
    ("<answer>x = 18</answer>", "18"),  # only the text after the last '='
    ("<answer>9 * 2 = 18</answer>", "18"),
    ("<answer>18 (since 3 × 6 = 18)</answer>", "18"),
    ("<answer>$18 dollars</answer>", "18"),
    ("<answer> 18. </answer>", "18"),
    ("<answer>18</answer> <answer>18.0</answer>", "18"),  # tags that agree are fine
    ("<answer>18</answer><answer>19</answer>", None),  # tags that disagree: the classic hack
    ("<answer>17 or 18</answer>", None),
    ("<answer>16-18</answer>", None),
    ("<answer>16–18</answer>", None),  # en dash range
    ("<answer>16 eggs, so 18</answer>", None),
    ("<answer>17 or 18</answer>\n#### 18\nso 18", None),  # ambiguous: no falling through
    ("<answer></answer> so 5", "5"),  # empty tags are ignored
    ("<answer>   </answer>\n#### 7", "7"),
    ("<answer>eighteen</answer> #### 18", "18"),  # a tag with no number is ignored too
    ("<answer>18</answer>\n#### 19", "18"),  # the tag wins over ####
    ("<ANSWER>19</ANSWER> 18", "18"),  # case-sensitive: not a tag
    ("<answer>18", "18"),  # unclosed: no tag, last number
    ("<answer><answer>18</answer>", "18"),
    ("<answer>18 18</answer>", "18"),  # one distinct number
    ("<answer>1/2 = 0.5</answer>", "0.5"),
    ("<answer>x=18, y=19</answer>", "19"),  # the last '=' of the tag, even when it is a second equation
    ("<answer>18 =</answer> 5", "5"),  # nothing after the '=': the tag holds no number, is ignored
    ("<answer>17</answer> <answer>eighteen</answer>", "17"),  # a numberless tag neither agrees nor disagrees
    ("<answer>1<answer>2</answer>", None),  # nested/unclosed: the pair holds "1<answer>2", two numbers
    ("<Answer>17</Answer><answer>18</answer>", "18"),
    ("#### 19\n<answer>18</answer>", "18"),  # tags beat #### wherever they stand
    ("<answer>17 #### 18</answer>", None),
]

# --- rule 2: #### lines ---------------------------------------------------------------------------
HASHES = [
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
    ("#### 1,450,000", "1450000"),
    ("#### 18\nI hope this helps! 5", "18"),  # later text is fine
    ("#### 17\n#### 18", None),  # disagreeing lines
    ("#### 18\n#### 18.00", "18"),
    ("#### 16-18", None),
    ("#### 5 + 3 = 8", "8"),
    ("The answer is #### -3", "-3"),
    ("####-3", "-3"),
    ("#####18", "18"),
    ("########\n12", "12"),  # empty segments are ignored
    ("#### 17 #### 18", None),
    ("####\n#### 5\n7", "5"),
    ("#### 17 or 18\n18", None),  # an ambiguous #### line: no falling through to the last number
    ("#### 18\n#### 19\n18", None),
    ("#### eighteen\n18", "18"),  # a #### line with no number is ignored
]

# --- rule 3: the last number ----------------------------------------------------------------------
FALLBACK = [
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\nA: 18", "18"),  # GPT-3's "A: N" lines
    ("The answer is 18.", "18"),
    ("no digits at all", None),
    ("", None),
    ("I think 20-18 is the difference", "18"),  # subtraction, not -18
    ("5-3", "3"),
    ("-5", "-5"),
    ("it is -5 degrees", "-5"),
    ("x-5", "5"),
    ("(−7)", "-7"),  # Unicode minus
    ("−7", "-7"),
    ("+7", "7"),
    ("$-5", "-5"),
    ("-$5", "-5"),
    ("$1,234.50", "1234.5"),
    ("50%", "50"),
    ("3/4", "3/4"),
    ("10/4", "5/2"),
    ("4/2", "2"),
    ("1e3", "1000"),
    ("2.5E-2", "0.025"),
    ("18{,}000", "18000"),
    ("18\\,000", "18000"),
    ("1 000 000", "1000000"),
    ("1,234,567.89", "1234567.89"),
    ("0.50", "0.5"),
    (".5", "0.5"),
    ("-.5", "-0.5"),
    ("007", "7"),
    ("step2", None),  # digits glued to letters are not numbers
    ("H2O", None),
    ("CO2 and 3", "3"),
    ("12/25/2023", None),  # a date, not a fraction
    ("5/0", None),
    ("1e999999999", None),  # absurd: not a number (and instant)
    ("7 then 1e999999999", "7"),
    ("1" * 5000, None),  # a 5000-digit run is no number
    ("5 eggs", "5"),
    ("5eggs", "5"),
    ("the 2nd answer", "2"),
    ("1,23", "23"),  # not groups of three: two numbers
    ("1.2.3", "1.2"),
    ("3 / 4", "4"),  # spaces: two numbers, not a fraction
    ("1/2.5", "2/5"),  # a decimal denominator, exactly (not 1/2)
    ("2.5/0.5", "5"),
    ("x 1/2.5/3", None),  # still a chain of slashes
    ("-0", "0"), ("−0.0", "0"),  # negative zero is zero
    ("5.", "5"), ("1e−3", "0.001"), ("20−18", "18"), ("$5$6", "6"),
]


@pytest.mark.parametrize("text,expected", TAGS + HASHES + FALLBACK)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("pred,gold,match", [
    ("18", "18", True), ("18.00", "18", True), ("0.50", ".5", True), ("1/2", "0.5", True),
    ("0.33", "1/3", False), ("9007199254740993", "9007199254740992", False),
    ("1,234", "1234", True), ("-3", "3", False), ("−3", "-3", True), ("$18", "18", True),
    ("50%", "50", True), ("1e3", "1000", True), (None, "18", False), ("18", None, False),
    ("17 or 18", "18", False), ("eighteen", "18", False), ("", "", False),
])
def test_answers_match(pred, gold, match):
    assert _answers_match(pred, gold) is match


@pytest.mark.parametrize("text,value", [
    ("$1,234.50", Fraction(2469, 2)), ("18 eggs", Fraction(18)), ("17 or 18", None), ("eighteen", None),
    ("-3", Fraction(-3)), ("3/4", Fraction(3, 4)), ("  18 ", Fraction(18)), ("", None), ("1e-3", Fraction(1, 1000)),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_find_numbers():
    assert find_numbers("2 eggs at $1,234.50 each, 20-18, H2O") == [2, Fraction(2469, 2), 20, 18]


@pytest.mark.parametrize("text,ok", [
    ("<answer>18</answer>", True), ("work... <answer> 18 </answer>", True), ("<answer>x = 18</answer>", True),
    ("<answer>18</answer><answer>18</answer>", False), ("<answer>17 or 18</answer>", False),
    ("<answer>9 * 2 = 18</answer>", True), ("<answer>1/2 = 0.5</answer>", True),  # read as rule 1 reads a tag
    ("<answer>18 18</answer>", True), ("<answer>18 =</answer>", False), ("<answer>x=17, y=18</answer>", True),
    ("<answer></answer>", False), ("<answer>eighteen</answer>", False), ("18", False),
    ("#### 18", False), ("</answer>18<answer>", False), ("<answer>18</answer></answer>", False),
])
def test_has_well_formed_answer(text, ok):
    assert has_well_formed_answer(text) is ok


@pytest.mark.parametrize("text,reward,strict", [
    ("<answer>18</answer>", 1.2, 1.2),  # correct and well-formed
    ("The answer is 18", 1.0, 1.0),  # correct, no tag
    ("#### 18", 1.0, 1.0),
    ("<answer>19</answer>", 0.2, 0.0),  # wrong but well-formed: the seed pays the format bonus
    ("19", 0.0, 0.0),
    ("<answer>18 or 19</answer>", 0.0, 0.0),  # hedging earns nothing
    ("<answer>18</answer><answer>19</answer>", 0.0, 0.0),
    ("", 0.0, 0.0),
    ("<answer>9 * 2 = 18</answer>", 1.2, 1.2),
    ("<answer>18</answer><answer>18</answer>", 1.0, 1.0),  # correct, but two tags: no bonus
])
def test_rewards(text, reward, strict):
    assert reward_gsm8k(text, "18") == reward  # exactly one of 0.0, 0.2, 1.0, 1.2
    assert reward_gsm8k_strict(text, "18") == strict
    assert is_correct(text, "18") is (reward >= 1.0)


def test_rewards_with_comma_gold():
    assert reward_gsm8k("<answer>1234</answer>", "1,234") == 1.2
    assert reward_gsm8k_strict("#### 1,234", gsm8k_gold_answer("#### 1,234")) == 1.0


def test_gold_answer():
    assert gsm8k_gold_answer("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gsm8k_gold_answer("...\n#### 1,450,000") == "1450000"
    assert gsm8k_gold_answer("...\n#### -3") == "-3"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold_answer("no gold line here: 18")


@pytest.mark.parametrize("func", [extract_answer, has_well_formed_answer, parse_number, find_numbers])
@pytest.mark.parametrize("bad", [None, 18, b"18", ["18"]])
def test_type_errors_on_text(func, bad):
    with pytest.raises(TypeError, match="must be a str"):
        func(bad)


@pytest.mark.parametrize("func", [reward_gsm8k, reward_gsm8k_strict, is_correct])
def test_type_errors_on_rewards(func):
    with pytest.raises(TypeError, match="must be a str"):
        func(None, "18")
    with pytest.raises(TypeError, match="must be a str"):
        func("18", 18)  # gold must be a string like "18"
    with pytest.raises(TypeError, match="must be a str"):
        func("18", None)  # a missing gold is a caller's bug, not a wrong answer


def test_answers_match_types():
    assert _answers_match(None, None) is False  # None is "no answer"
    for pred, gold in ((18, None), (None, 18), (b"18", "18")):
        with pytest.raises(TypeError, match="must be a str"):
            _answers_match(pred, gold)


# --- speed: linear time on hostile input ------------------------------------------------------------
MB = 1_000_000
HOSTILE = {
    "digits": "9" * MB,
    "digits and commas": "1," * (MB // 2),
    "thousands groups": "1" + ",000" * (MB // 4),
    "spaced digits": "1 " * (MB // 2),
    "many agreeing tags": "<answer>1</answer>" * (MB // 18),
    "tags, last one disagrees": "<answer>1</answer>" * (MB // 18 - 1) + "<answer>2</answer>",
    "unclosed tags": "<answer>" * (MB // 8),
    "one huge tag": "<answer>" + "1 " * (MB // 2) + "</answer>",
    "#### markers": "####" * (MB // 4),
    "#### numbers": "#### 1 " * (MB // 7),
    "#### lines": "#### 1\n" * (MB // 7),
    "mixture": ("1,2<answer>3</answer>####4,567\n-8 e9/" * (MB // 36)),
    "huge exponents": "1e999999999 " * (MB // 12),
    "signs": "-" * MB + "5",
    "slash chain": "1/2/3/4/" * (MB // 8),
    "dots": "1.2." * (MB // 4),
    "equals in a tag": "<answer>" + "=" * MB + "18</answer>",
    "dollar numbers": "$5" * (MB // 2),
    "dotted chain": "1." * (MB // 2),
    "exponent chain": "1e-" * (MB // 3),
    "unicode minus": "−" * MB,
    "latex separators": "1{,}" * (MB // 4),
    "spaced thousands chain": "1" + " 000" * (MB // 4),
    "tag of thousands": "<answer>" + "1 000 " * (MB // 6) + "</answer>",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_linear_time_on_hostile_1mb(name):
    text = HOSTILE[name]
    start = time.process_time()  # CPU time: robust to other jobs sharing the machine
    reward_gsm8k(text, "1")
    reward_gsm8k_strict(text, "1")
    elapsed = time.process_time() - start
    assert elapsed < 1.5, f"{name}: two rewards on 1 MB took {elapsed:.2f} s of CPU"


# --- properties -------------------------------------------------------------------------------------
@given(st.integers(min_value=-10**30, max_value=10**30))
def test_any_integer_in_a_tag_is_extracted(n):
    for text in (f"<answer>{n}</answer>", f"<answer>{n:,}</answer>", f"work 12 and 7\n#### {n:,}",
                 f"Some reasoning 12 and 7.\nThe answer is {n}"):
        assert extract_answer(text) == str(n)
        assert is_correct(text, str(n)) and not is_correct(text, str(n + 1))


@given(st.fractions(max_denominator=10**6))
def test_fractions_compare_exactly(q):
    assert _answers_match(f"{q.numerator}/{q.denominator}", f"{2 * q.numerator}/{2 * q.denominator}")
    assert not _answers_match(f"{q.numerator}/{q.denominator}", f"{q.numerator + 1}/{q.denominator}")


def pieces(alphabet, max_size):
    """Texts glued from pieces (single characters or whole markers like '<answer>')."""
    return st.lists(st.sampled_from(alphabet), max_size=max_size).map("".join)


@settings(max_examples=300)
@given(pieces(list("0123456789,. -+−$e/{}\\=#\nax") + ["<answer>", "</answer>", "####"], 60))
def test_extract_answer_is_total_and_canonical(text):
    answer = extract_answer(text)  # never raises
    if answer is not None:
        assert extract_answer(answer) == answer  # the canonical string reads back as itself
        assert _answers_match(answer, answer)
    assert reward_gsm8k(text, "1") in (0.0, 0.2, 1.0, 1.2)
    assert reward_gsm8k_strict(text, "1") <= reward_gsm8k(text, "1")


@settings(max_examples=300)
@given(pieces(list("0123456789,,. -+−$eE/{}\\)x\n") + ["{,}", "\\,", " 000"], 50),
       st.integers(min_value=1, max_value=8))
def test_backward_windows_find_the_true_last_number(text, window):
    naive = None
    for token in reversed(_NUMBER.findall(text)):  # the plain left-to-right reading
        if _token_value(token) is not None:
            naive = (_token_value(token), "/" in token)
            break
    assert _last_number(text, window=window) == naive
