"""Helpers for the notebooks that are not figures (those are in `lessons_lib.plots`).

`source_without_docstring` shows a library function's code in a notebook without printing its
docstring, when the notebook says in prose what the docstring says.
"""
import ast
import inspect
import textwrap


def source_without_docstring(obj) -> str:
    """The source of a function or class with its own docstring left out: for a notebook that shows
    the code and says in prose what the docstring says. Comments and everything else are kept."""
    source = textwrap.dedent(inspect.getsource(obj))
    node = ast.parse(source).body[0]
    first = node.body[0] if node.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)):
        return source.rstrip("\n")
    lines = source.splitlines()
    return "\n".join(lines[:first.lineno - 1] + lines[first.end_lineno:])
