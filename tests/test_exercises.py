"""lessons_lib.exercises.check: the comparison behind every notebook's "implement, then compare" cell."""
import pytest

from lessons_lib.exercises import NOT_WRITTEN, check, same_number


def double(x):
    return 2 * x


def test_agreement_is_reported(capsys):
    check("double", lambda x: x + x, double, [1, 2, 3])
    assert capsys.readouterr().out == "double: 3/3 cases agree with the library\n"


def test_a_function_not_written_yet_passes_quietly(capsys):
    def mine(x):
        raise NotImplementedError
    check("double", mine, double, [1, 2])
    assert NOT_WRITTEN in capsys.readouterr().out


def test_disagreements_are_shown_then_raised(capsys):
    with pytest.raises(AssertionError, match="2 of 3 cases disagree"):
        check("double", lambda x: x * x, double, [1, 2, 3])
    out = capsys.readouterr().out
    assert "1/3 cases agree" in out and "double(1)" in out and "yours:   1" in out and "library: 2" in out


def test_an_exception_in_the_learners_code_is_a_disagreement(capsys):
    with pytest.raises(AssertionError):
        check("double", lambda x: 1 / 0, double, [1])
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_tuples_are_argument_lists_and_same_is_used():
    check("add", lambda a, b: a + b + 1e-12, lambda a, b: a + b, [(1, 2), (3, 4)],
                 same=lambda x, y: abs(x - y) < 1e-9)


def test_same_number_compares_values_not_strings():
    assert same_number("18.0", "18") and same_number("1,234.50", "1234.5") and same_number(None, None)
    assert not same_number(None, "0") and not same_number("17", "18") and not same_number("eighteen", "18")
