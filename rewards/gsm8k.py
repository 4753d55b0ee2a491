"""The GSM8K checker: find the one final number in a model's response and compare it to the gold.

Everything the course measures goes through `extract_answer` and `_answers_match`, so the policy is
written down here in full. It is tolerant (a model that writes `$1,234.50` or `x = 18` is understood)
and hard to game (a model that lists candidates gets nothing).

Policy of `extract_answer(text)` — three rules, tried in order:

1. **Tags.** Every `<answer>…</answer>` pair (case-sensitive) is a candidate. Inside one, only the
   text after the last `=` counts (`<answer>x = 18</answer>` is 18). That text must hold exactly one
   number: several *distinct* numbers (`17 or 18`, `16-18`, `16 eggs … so 18`) make the tag ambiguous.
   Tags that disagree with each other are ambiguous too (listing candidates is the classic reward
   hack). **Ambiguous means no answer** — `None`, with no falling through to the later rules.
   A tag holding no number at all (`<answer></answer>`, `<answer>eighteen</answer>`) is ignored.
2. **`####` lines** (GSM8K's own format) are used only when no tag gave a number. Each `####` marker
   starts a segment that runs to the end of its line (or to the next marker); the same rules as for a
   tag apply to each segment (last `=`, one distinct number, disagreement → `None`). Text on later
   lines is fine: `#### 18\\nI hope that helps!` is 18.
3. **Fallback:** the last number anywhere in the text (GPT-3's `A: 18` lines land here).

What a number is (`_NUMBER` below):
- digits, with thousands separators in groups of three: `1,234`, `18{,}000` (LaTeX), `1 000`;
- decimals `3.5`, `.5`; e-notation `1e3`, `2.5E-2`; an exact fraction `a/b` (`1/2.5` is 2/5; no spaces:
  `3 / 4` is two numbers, `12/25/2023` is a date and no number);
- a sign `-`, `+` or the Unicode minus `−` only when it is not glued to a word or digit before it:
  `-5` and `(−7)` are negative, but `20-18` is a subtraction (20 and 18) and `x-5` holds 5;
- `$` before and `%` or unit words after are simply not part of the number (`50%` is 50, as GSM8K
  stores percents); digits glued to a letter before them (`step2`, `H2O`, `CO2`) are not numbers;
- absurd values (more than ~900 digits, exponents beyond ±900) are not numbers either: they keep the
  exact arithmetic below fast and cannot match any GSM8K gold.

`_answers_match(pred, gold)` compares exactly, as rationals (`fractions.Fraction`) — never floats,
never strings: `18.00` = `18`, `0.50` = `.5` = `1/2`, but `0.33` ≠ `1/3` and
`9007199254740993` ≠ `9007199254740992` (floats would say equal).

`extract_answer` returns the number in a canonical form: `"18"`, `"-3"`, `"1234.5"` (from `$1,234.50`),
`"0.5"` (from `.5` or `0.50`), and `"3/4"` when it was written as a fraction (or has no finite decimal).

Every function runs in linear time — `str.find` scans, and regexes whose repetitions cannot retry
each other — so even a hostile 1 MB response is scored in a fraction of a second.
"""
import re
from fractions import Fraction
from functools import lru_cache

OPEN, CLOSE = "<answer>", "</answer>"
HASH = "####"
CORRECT_REWARD = 1.0  # the reward that matters
FORMAT_BONUS = 0.2  # small nudge towards <answer>N</answer>
MAX_REWARD = 1.2  # clip: the bonus can never add up past one well-formed correct answer
MAX_DIGITS = 1000  # longer digit runs are not numbers (and int() refuses > 4300 digits anyway)
MAX_EXPONENT = 900  # 1e999999999 must not build a billion-digit integer
MAX_BITS = 3000  # ~900 decimal digits: the largest numerator/denominator we call a number

# The number regex. It starts with one character class, so `re` skips non-numeric text at C speed;
# what follows depends on that first character (told apart by lookbehinds). No quantifier is nested
# in another that could retry it, so matching stays linear: no catastrophic backtracking.
_SEP = "(?:" + "|".join(  # thousands groups, one separator kind per number, exactly 3 digits a group
    rf"(?:{sep}\d{{3}})+" for sep in (",", r"\{,\}", r"\\,", "[ \u00a0\u2009\u202f]")
) + r")(?!\d)"
_GROUPED = rf"(?:(?<!\d{{4}}){_SEP})?(?:\.\d+)?"  # groups only after a run of at most 3 digits
_NUMBER = re.compile(
    "[-+\u2212$.\\d]"  # the first character, then one of four continuations:
    rf"(?:(?<=\d)(?<![\w.]\d)\d*{_GROUPED}"  # a digit, not glued to a letter or digit (H2O, step2)
    r"|(?<=\.)(?<![\w.]\.)\d+"  # ".5"
    "|(?<=[-+\u2212])(?<![\\w)\\]}][-+\u2212])\\$?(?:\\d+" + _GROUPED + r"|\.\d+)"  # a sign, not glued
    r"|(?<=\$)(?:\d+" + _GROUPED + r"|\.\d+))"  # "$5": the currency sign is skipped
    "(?:[eE][-+\u2212]?\\d+)?"  # 1e3, 2.5E-2
    r"(?:/\d+(?:\.\d+)?(?:/\d[\d/]*)?)?"  # 3/4, 1/2.5 exact; 12/25/2023 (a chain of slashes) is a date
)
# Window boundaries for reading a text backwards, searched in the *reversed* text (so "followed by"
# in the text is a lookbehind here): a character that no number contains (anything but digits and
# . , { } \ spaces e E / $ signs), or one that cannot be part of a number where it stands — a comma
# or space not followed by exactly three digits, a '.', '/' or '$' not followed by a digit, a sign
# not followed by a digit or glued to one before it ("1-1"), and so on.
_BOUNDARY_REVERSED = re.compile("\\D(?:" + "|".join([  # one non-digit, then which kind it is:
    "(?<=[^-+\u2212$.\\d,{}\\\\ \u00a0\u2009\u202feE/])",  # never in a number
    r"(?<=[ \u00a0\u2009\u202f},])(?<!\D\d{3}.)(?<!^\d{3}.)(?:(?<!\},)|(?!\{))",  # not a separator
    r"(?<=\})(?!,\{)|(?<=\{)(?<!\},\{)|(?<=\\)(?<!,\\)",  # pieces of {,} and \, out of place
    "(?<=[-+\u2212])(?<![\\d.$].)|(?<=[-+\u2212])(?=[\\d)\\]}])",  # sign before no digit / after one
    r"(?<=\$)(?<![\d.]\$)|(?<=[./])(?<!\d.)",  # '$', '.', '/' before no digit
    "(?<=\\$)(?![-+\u2212])",  # '$' after no sign: what follows reads the same without it ($5 is 5)
    "(?<=[eE])(?<![-+\u2212\\d].)",  # 'e' that starts no exponent
]) + ")")
_PARTS = re.compile(  # the pieces of one token that _NUMBER found
    "([-+\u2212]?)\\$?([^.eE/]*)(?:\\.(\\d+))?(?:[eE]([-+\u2212]?\\d+))?(?:/(\\d+(?:\\.\\d+)?))?(/.*)?", re.S
)
_NOT_DIGIT = re.compile(r"\D")
_HASH_LINE = re.compile(r"####([^\n]*)")
_HASH_OR_NEWLINE = re.compile(r"####|\n")


_WHAT = {"text": "the model's response", "gold": "e.g. '18', as gsm8k_gold_answer returns it",
         "pred": "e.g. what extract_answer returns", "s": "e.g. '1,234.50'", "answer_field": "GSM8K's answer"}


def _check_text(value, name="text"):
    if not isinstance(value, str):  # fail here, clearly, not deep inside a regex
        raise TypeError(f"{name} must be a str ({_WHAT[name]}), got {type(value).__name__}")


def _token_value(token):
    """Exact value of one token found by _NUMBER, or None when it is no number (date, absurd, x/0)."""
    return _short_token_value(token) if len(token) <= 64 else _parse_token(token)


@lru_cache(maxsize=65536)  # hostile inputs repeat one short token many times: value it once
def _short_token_value(token):
    return _parse_token(token)


def _parse_token(token):  # the arithmetic behind _token_value
    sign, whole, frac, exp, den, chain = _PARTS.fullmatch(token).groups()
    whole, frac, den = _NOT_DIGIT.sub("", whole), frac or "", den or "1"
    exp = (exp or "0").replace("\u2212", "-")
    if chain or len(whole) + len(frac) > MAX_DIGITS or len(den) > MAX_DIGITS or len(exp) > 5:
        return None
    exp = int(exp)
    den = Fraction(den)  # exact, also when written as a decimal ("1/2.5" is 2/5)
    if abs(exp) > MAX_EXPONENT or den == 0:
        return None
    value = Fraction(int(whole + frac or "0"), 10 ** len(frac)) / den
    value = value * 10**exp if exp >= 0 else value / 10**-exp
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        return None
    return -value if sign in ("-", "\u2212") else value


def find_numbers(text):
    """Every number in `text`, in order, as exact Fractions (`"2 eggs at $1,234.50"` -> [2, 2469/2]).

    The same notion of a number as `extract_answer` uses; handy to see what the checker sees.
    """
    _check_text(text)
    values = (_token_value(token) for token in _NUMBER.findall(text))  # one C-speed pass
    return [value for value in values if value is not None]


class _Ambiguous(Exception):
    """Raised as soon as two distinct candidate numbers are seen."""


def _segments_answer(segments):
    """The one number all segments agree on; None when none holds a number; raise _Ambiguous else."""
    joined = "\n".join(segments)  # '\n' joins no two numbers into one
    if "=" in joined:  # only the text after the last '=' of each segment counts
        joined = "\n".join(s[s.rfind("=") + 1:] for s in segments)
    answer = _one_distinct_number(joined)
    if answer == "ambiguous":
        raise _Ambiguous
    return answer


@lru_cache(maxsize=4)  # a reward reads its one tag twice (answer, then format bonus): scan it once
def _one_distinct_number(text):
    """(value, written_as_fraction) of the one distinct number in text, None, or "ambiguous"."""
    answer = None
    for token in dict.fromkeys(_NUMBER.findall(text)):  # the distinct tokens, in order
        value = _token_value(token)
        if value is None:
            continue
        if answer is None:
            answer = (value, "/" in token)
        elif value != answer[0]:  # two distinct numbers: ambiguous, stop at once
            return "ambiguous"
    return answer


def _tag_contents(text):
    """The inside of every <answer>…</answer> pair, scanning left to right (linear)."""
    contents, start = [], text.find(OPEN)
    while start != -1:
        end = text.find(CLOSE, start + len(OPEN))
        if end == -1:
            break
        contents.append(text[start + len(OPEN):end])
        start = text.find(OPEN, end + len(CLOSE))
    return contents


def _hash_segments(text):
    """The text after each `####` marker, up to the end of its line or the next marker (linear)."""
    rests = _HASH_LINE.findall(text)  # what follows the first marker of each line
    return _HASH_OR_NEWLINE.split("\n".join(rests)) if rests else []  # ...cut at later markers


def _last_number(text, window=2048):
    """The last number in the text as (value, written_as_fraction), or None.

    Reads the text backwards in windows (a long response costs little), each window starting just
    after a character that no number contains, so no number is ever cut in two.
    """
    end, reversed_text = len(text), None
    while end > 0:
        start = max(0, end - window)
        if start > 0:  # back up to a boundary: the nearest character that cannot be in a number
            reversed_text = reversed_text or text[::-1]
            boundary = _BOUNDARY_REVERSED.search(reversed_text, len(text) - start)
            start = 0 if boundary is None else len(text) - boundary.start()
        for token in reversed(_NUMBER.findall(text, start, end)):
            value = _token_value(token)
            if value is not None:  # usually the very last token; dates and absurd sizes are skipped
                return value, "/" in token
        end = start
    return None


def _decimal_places(denominator):
    """Digits after the point needed to write 1/denominator exactly, or None if it never ends."""
    twos = (denominator & -denominator).bit_length() - 1  # trailing zero bits = factors of 2
    rest, fives = denominator >> twos, 0
    while rest % 5 == 0 and fives <= 30:
        rest, fives = rest // 5, fives + 1
    return max(twos, fives) if rest == 1 else None


def _format(value, as_fraction=False):
    """Canonical string of a rational: '18', '-3', '0.5', '1234.25'; '3/4' when written as a
    fraction (as_fraction) or when no short decimal exists ('1/3')."""
    if value.denominator == 1:
        return str(value.numerator)
    places = _decimal_places(value.denominator)
    if as_fraction or places is None or places > 30:  # 1/3 or 1/2**100: keep it exact as a fraction
        return f"{value.numerator}/{value.denominator}"
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    return ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]


def parse_number(s):
    """The exact value of the one number in `s` (`"$1,234.50"` -> Fraction(2469, 2)), else None.

    Uses the same notion of a number as `extract_answer`; `s` must hold exactly one number
    (`"18 eggs"` -> 18, `"17 or 18"` -> None, `"eighteen"` -> None).
    """
    _check_text(s, "s")
    found = None
    for m in _NUMBER.finditer(s):
        value = _token_value(m.group())
        if value is not None:
            if found is not None:  # a second number: not a single number, stop early
                return None
            found = value
    return found


def extract_answer(text):
    """The model's final answer as a canonical number string ('18', '-3', '0.5', '3/4') or None.

    Rules, in order (full policy in the module docstring): a non-empty `<answer>…</answer>` tag
    (text after its last '=', exactly one distinct number, all tags agreeing), else GSM8K's
    `#### N` lines (same rules per line), else the last number in the text.
    Ambiguous tags or `####` lines give None, without falling through to the later rules.
    """
    _check_text(text)
    try:
        for segments in (_tag_contents(text), _hash_segments(text)):
            number = _segments_answer(segments)
            if number is not None:
                return _format(*number)
    except _Ambiguous:
        return None  # listing candidates earns nothing
    number = _last_number(text)
    return None if number is None else _format(*number)


def _answers_match(pred, gold):
    """True when both strings hold the same number, compared exactly as rationals (None -> False)."""
    for value, name in ((pred, "pred"), (gold, "gold")):
        if value is not None:  # None is allowed: it is what extract_answer returns for "no answer"
            _check_text(value, name)
    if pred is None or gold is None:
        return False
    pred_value, gold_value = parse_number(pred), parse_number(gold)
    return pred_value is not None and pred_value == gold_value


def has_well_formed_answer(text):
    """True when the text has exactly one <answer>…</answer> tag and it holds exactly one number,
    read as rule 1 reads a tag (`<answer>9 * 2 = 18</answer>` holds 18; `<answer>18 =</answer>` none)."""
    _check_text(text)
    if text.count(OPEN) != 1 or text.count(CLOSE) != 1:
        return False
    start, end = text.find(OPEN) + len(OPEN), text.find(CLOSE)
    if start > end:
        return False
    try:
        return _segments_answer([text[start:end]]) is not None
    except _Ambiguous:
        return False


def is_correct(text, gold):
    """Does the response's extracted answer equal the gold number?"""
    _check_text(gold, "gold")  # a missing gold is a bug in the caller, not a wrong answer
    return _answers_match(extract_answer(text), gold)


def reward_gsm8k(text, gold):
    """1.0 if correct, +0.2 if the answer is in one well-formed tag, clipped at 1.2.

    Correctness dominates: a well-formed wrong answer earns 0.2, a correct answer in any format 1.0.
    """
    r = 0.0
    if is_correct(text, gold):
        r += CORRECT_REWARD  # the reward that matters
    if has_well_formed_answer(text):
        r += FORMAT_BONUS  # small format nudge
    return min(r, MAX_REWARD)  # clipped


def reward_gsm8k_strict(text, gold):
    """Like reward_gsm8k, but the format bonus is paid only on a correct answer (wrong -> 0.0)."""
    if not is_correct(text, gold):
        return 0.0
    return min(CORRECT_REWARD + (FORMAT_BONUS if has_well_formed_answer(text) else 0.0), MAX_REWARD)


def gsm8k_gold_answer(answer_field):
    """The gold number of a GSM8K `answer` field: what follows the final `####`, commas stripped.

    `"...\\n#### 1,450,000"` -> `"1450000"`. Raises ValueError when there is no `#### N` line.
    """
    _check_text(answer_field, "answer_field")
    marker = answer_field.rfind(HASH)
    value = None if marker == -1 else parse_number(answer_field[marker + len(HASH):].split("\n")[0])
    if value is None:
        raise ValueError(f"no '#### N' gold line in GSM8K answer field: {answer_field[-80:]!r}")
    return _format(value)
