"""The calculator tool: exact arithmetic for `<<EXPR=RESULT>>` annotations.

GSM8K's reference solutions (Cobbe et al., 2021) carry annotations like `<<48/2=24>>`: the authors
found that small models make arithmetic slips far more often than reasoning slips, so at generation
time a calculator takes over. When the model has written `<<48/2=`, the engine evaluates `48/2` and
*forces* `24>>` as the next tokens; the model continues from a correct number.

This module is shared by the data generator (which writes the annotations with `format_result`) and
the generation engine (which forces them), so training data and generation always agree.
No `eval`: a tiny recursive-descent parser over Fractions (exact, no float surprises).
"""
from fractions import Fraction
import math

MAX_EXPR_CHARS = 100          # longer "expressions" are almost surely not arithmetic
MAX_NUMBER_DIGITS = 20        # per literal; keeps Fraction sizes bounded
MAX_ABS_RESULT = 10 ** 15     # bigger results are junk for grade-school math
_ALLOWED = set("0123456789.+-*/() ")


def _tokenize(expr: str) -> list[str] | None:
    """'3*(4.5-1)' -> ['3', '*', '(', '4.5', '-', '1', ')']; None on any other character."""
    tokens, i = [], 0
    while i < len(expr):
        ch = expr[i]
        if ch == " ":
            i += 1
        elif ch in "+-*/()":
            tokens.append(ch); i += 1
        elif ch.isdigit() or ch == ".":
            j = i
            while j < len(expr) and (expr[j].isdigit() or expr[j] == "."):
                j += 1
            tokens.append(expr[i:j]); i = j
        else:
            return None
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := '-' unary | primary ; primary := NUMBER | '(' expr ')'"""

    def __init__(self, tokens):
        self.tokens, self.pos = tokens, 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self):
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self):
        value = self.unary()
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.unary()
            value = value * rhs if op == "*" else value / rhs  # ZeroDivisionError -> caller
        return value

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -self.unary()
        return self.primary()

    def primary(self):
        tok = self.take() if self.peek() is not None else None
        if tok == "(":
            value = self.expr()
            if self.peek() != ")":
                raise ValueError("unbalanced parenthesis")
            self.take()
            return value
        if tok is None or tok in "+-*/)" or tok.count(".") > 1 or tok == ".":
            raise ValueError(f"expected a number, got {tok!r}")
        if len(tok) > MAX_NUMBER_DIGITS:
            raise ValueError("number too long")
        return Fraction(tok)


def evaluate_expression(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression, or None if it is not one we trust.

    >>> evaluate_expression("48/2"), evaluate_expression("(1+2)*-3"), evaluate_expression("1/0")
    (Fraction(24, 1), Fraction(-9, 1), None)
    """
    if not expr or len(expr) > MAX_EXPR_CHARS or not set(expr) <= _ALLOWED:
        return None
    tokens = _tokenize(expr)
    if not tokens:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except (ValueError, ZeroDivisionError):
        return None
    if parser.peek() is not None or abs(value) > MAX_ABS_RESULT:
        return None  # trailing junk like '2 3', or an absurd magnitude
    return value


def format_result(value: Fraction) -> str:
    """How a result is written: integers plainly ('24'), others as a decimal rounded half-up to at
    most 2 places with trailing zeros stripped ('0.5', '3.33', '-1.25')."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    cents = math.floor(abs(value) * 100 + Fraction(1, 2))  # round half up, symmetric for negatives
    sign = "-" if value < 0 and cents else ""
    whole, frac = divmod(cents, 100)
    text = f"{whole}.{frac:02d}".rstrip("0").rstrip(".")
    return sign + text


def pending_result(text: str) -> str | None:
    """If `text` ends with an open `<<EXPR=` whose EXPR evaluates, the string to force next
    (result + '>>'); else None. The engine calls this each time a row writes '='."""
    if not text.endswith("="):
        return None
    start = text.rfind("<<", max(0, len(text) - MAX_EXPR_CHARS - 3))
    if start < 0:
        return None
    expr = text[start + 2:-1]
    if ">>" in expr or "=" in expr or "<" in expr:
        return None  # the '<<' belongs to a closed or malformed annotation
    value = evaluate_expression(expr)
    return None if value is None else format_result(value) + ">>"


def _forced_mask(text: str) -> list[bool]:
    """Per character: True where the calculator would have forced it. A forced region is marked only
    if the text really continues with exactly the calculator's output (otherwise it wasn't forced)."""
    mask = [False] * len(text)
    for i, ch in enumerate(text):
        if ch != "=":
            continue
        forced = pending_result(text[: i + 1])
        if forced is not None and text.startswith(forced, i + 1):
            mask[i + 1: i + 1 + len(forced)] = [True] * len(forced)
    return mask


def calculator_forced_mask(text: str) -> list[bool]:
    """Per character of `text`: True for the result and '>>' the calculator forces after each
    evaluable `<<EXPR=`. SFT puts no loss on these (the model never has to produce them)."""
    return _forced_mask(text)


def calculator_forced_byte_mask(text: str) -> list[bool]:
    """Same as `calculator_forced_mask` but per UTF-8 byte (= per token of our byte tokenizer).
    Decoding bytes as latin-1 gives one char per byte; arithmetic is ASCII so the scan is unchanged."""
    return _forced_mask(text.encode("utf-8", errors="surrogatepass").decode("latin-1"))
