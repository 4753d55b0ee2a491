"""nbval settings for the course notebooks (here, not in notebooks/, so JupyterLab shows learners only notebooks).

nbval compares every stored output with a fresh run. Two kinds of output are not lesson content and
must not fail a test on another machine: stderr (warnings, tqdm progress bars) and images (pixel-level
differences between matplotlib versions). Everything else is compared, after the regexes in
`nbval_sanitize.cfg` have replaced what varies (paths, timings, addresses, device names).

Every notebook runs on a fresh clone: real GSM8K's test split and OpenAI's example model solutions
ship in `data/gsm8k/`.
"""


def pytest_collection_modifyitems(config, items):
    for item in items:
        notebook = getattr(item, "parent", None)
        skip = getattr(notebook, "skip_compare", None)
        if skip is None:
            continue  # not an nbval cell
        if "stderr" not in skip:
            notebook.skip_compare = tuple(skip) + ("stderr", "image/png", "image/svg+xml")
