"""The calculator evaluates GSM8K-style arithmetic exactly, refuses junk, and formats results."""
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from lessons_lib.calculator import (MAX_ABS_RESULT, calculator_forced_byte_mask, calculator_forced_mask,
                                    evaluate_expression, format_result, pending_result)


@pytest.mark.parametrize("expr, value", [
    ("48/2", 24), ("16-3-4", 9), ("2+3*4", 14), ("(2+3)*4", 20), ("10/4", Fraction(5, 2)),
    ("-3+1", -2), ("2*-3", -6), ("--2", 2), (" 1 + 2 ", 3), ("0.1+0.2", Fraction(3, 10)),
    ("100/3*3", 100), ("8-2-1", 5), ("8/2/2", 2), (".5*4", 2), ("3.", 3),
])
def test_evaluates_exactly(expr, value):
    assert evaluate_expression(expr) == value


@pytest.mark.parametrize("expr", [
    "1/0", "5/(2-2)", "", "2 3", "2+", "(1+2", "1+2)", "1..2", "__import__('os')", "2**3", "1e5",
    "x*2", "$5*2", "1" * 30, "9" * 15 + "*" + "9" * 15, "+" * 200, "()",
])
def test_refuses_junk(expr):
    assert evaluate_expression(expr) is None


@pytest.mark.parametrize("value, text", [
    (Fraction(24), "24"), (Fraction(-7), "-7"), (Fraction(1, 2), "0.5"), (Fraction(10, 3), "3.33"),
    (Fraction(2, 3), "0.67"), (Fraction(-5, 4), "-1.25"), (Fraction(1, 200), "0.01"),
    (Fraction(1, 1000), "0"), (Fraction(-1, 1000), "0"), (Fraction(199999, 100000), "2"),
])
def test_format_result(value, text):
    assert format_result(value) == text


@given(st.fractions(min_value=-10**6, max_value=10**6))
def test_format_result_is_within_half_a_cent(x):
    assert abs(Fraction(format_result(x)) - x) <= Fraction(1, 200)


@given(st.lists(st.integers(0, 999), min_size=1, max_size=6), st.lists(st.sampled_from("+-*"), min_size=5, max_size=5))
def test_matches_python_on_integer_expressions(nums, ops):
    expr = str(nums[0]) + "".join(op + str(n) for op, n in zip(ops, nums[1:]))
    value = eval(expr)  # eval only here, on strings we built ourselves
    assert evaluate_expression(expr) == (value if abs(value) <= MAX_ABS_RESULT else None)  # 999**6 is refused


def test_pending_result_only_after_an_open_annotation():
    assert pending_result("so <<48/2=") == "24>>"
    assert pending_result("so 48/2=") is None            # no '<<'
    assert pending_result("<<1+1=2>> and 3=") is None     # that '<<' is closed
    assert pending_result("<<1/0=") is None               # no result: the model goes on
    assert pending_result("<<2*3") is None                # '=' not written yet


def test_forced_mask_marks_result_and_closing_brackets():
    text = "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs for <<9*2=18>>18. <<1/0=5>>"
    mask = calculator_forced_mask(text)
    assert len(mask) == len(text)
    assert "".join(c for c, m in zip(text, mask) if m) == "9>>18>>"


def test_forced_mask_skips_annotations_with_a_different_result():
    assert not any(calculator_forced_mask("<<2*3=7>>"))  # not what the calculator writes: not forced


def test_byte_mask_counts_utf8_bytes():
    text = "€ <<2*3=6>>"  # '€' is 3 bytes
    mask = calculator_forced_byte_mask(text)
    data = text.encode()
    assert len(mask) == len(data)
    assert bytes(b for b, m in zip(data, mask) if m) == b"6>>"
