"""nbval settings for the course notebooks.

nbval compares every stored output with a fresh run. Two kinds of output are not lesson content and
must not fail a test on another machine: stderr (warnings, tqdm progress bars) and images (pixel-level
differences between matplotlib versions). Everything else is compared, after the regexes in
`sanitize.cfg` have replaced what varies (paths, timings, addresses, device names).

Notebooks that read real GSM8K (and OpenAI's example model solutions, which only exist as files) need
a local copy: they are skipped, with the reason shown, unless GSM8K_DIR names a folder holding it.
"""
import os
from pathlib import Path

import pytest

NEEDS_GSM8K_FILES = {  # notebook -> the files it reads from GSM8K_DIR
    "01_answer_extraction.ipynb": ("test.jsonl", "example_model_solutions.jsonl"),
    "02_clipped_reward.ipynb": ("test.jsonl", "example_model_solutions.jsonl"),
    "03_bucketed_generation.ipynb": ("test.jsonl",),
}


def _missing_gsm8k(notebook: str) -> str | None:
    folder = Path(os.environ.get("GSM8K_DIR", "") or "/nonexistent")
    missing = [f for f in NEEDS_GSM8K_FILES.get(notebook, ()) if not (folder / f).exists()]
    if missing:
        return (f"{notebook} reads {', '.join(missing)} from GSM8K_DIR; set GSM8K_DIR to a folder "
                "with OpenAI's grade-school-math data files (see README, 'Real GSM8K')")
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        notebook = getattr(item, "parent", None)
        skip = getattr(notebook, "skip_compare", None)
        if skip is None:
            continue  # not an nbval cell
        if "stderr" not in skip:
            notebook.skip_compare = tuple(skip) + ("stderr", "image/png", "image/svg+xml")
        reason = _missing_gsm8k(Path(str(item.fspath)).name)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
