"""Reference solutions to the notebooks' exercises: one module per notebook, `nbNN_<notebook name>`.

Try each exercise first. `make test` checks every solution against the library
(`tests/test_solutions.py`); `solutions/README.md` explains how notebooks use this package.
"""
