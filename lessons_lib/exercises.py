"""Exercise checks: compare the learner's function with the library's, case by case.

An "implement, then compare" exercise in a notebook has two cells. In the first the learner writes a
function whose body starts as `raise NotImplementedError`; the second, a self-contained check cell
(tagged `check`), calls `check(...)` with the library's function as the reference. Until the function
is written the check only says so; afterwards it prints how many cases agree and raises
`AssertionError` on any disagreement. `tests/test_solutions.py` runs every check cell again with the
reference solution from `solutions/` in place of the learner's function (see `solutions/README.md`).
"""
import operator

from rewards import parse_number

NOT_WRITTEN = "not written yet: write it in the cell above (replace `raise NotImplementedError`), then run this cell again"


def check(name, yours, reference, cases, same=operator.eq, show=3) -> None:
    """Call `yours` and `reference` on every case and compare the results with `same`.

    A case is a tuple of positional arguments (anything else is one argument). Prints how many cases
    agree and the first `show` disagreements, then raises AssertionError if there were any. While
    `yours` still raises NotImplementedError it only says so. Returns None, so a notebook cell that
    ends with a check shows nothing but the printed lines.
    """
    bad = []
    for case in cases:
        args = case if isinstance(case, tuple) else (case,)
        expected = reference(*args)
        try:
            got = yours(*args)
        except NotImplementedError:
            print(f"{name}: {NOT_WRITTEN}.")
            return
        except Exception as e:  # a bug in the learner's code is a disagreement, shown like one
            got = f"raised {type(e).__name__}: {e}"
        if not _same(same, got, expected):
            bad.append((args, got, expected))
    print(f"{name}: {len(cases) - len(bad)}/{len(cases)} cases agree with the library")
    for args, got, expected in bad[:show]:
        shown = ", ".join(_short(a) for a in args)
        print(f"  {name}({shown})\n    yours:   {_short(got)}\n    library: {_short(expected)}")
    if bad:
        raise AssertionError(f"{name}: {len(bad)} of {len(cases)} cases disagree with the library")


def _same(same, got, expected) -> bool:
    try:
        return bool(same(got, expected))
    except Exception:  # e.g. comparing a learner's odd return type: not the same
        return False


def _short(value, width=70) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def same_number(a, b) -> bool:
    """Two answers agree when both are None or both hold the same number (`"18.0"` is `"18"`)."""
    if a is None or b is None:
        return a is None and b is None
    x, y = parse_number(str(a)), parse_number(str(b))
    return x is not None and x == y
