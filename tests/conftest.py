"""Shared pytest fixtures.

Real GSM8K is read from the folder named by GSM8K_DIR (CI sets it to ../shared/data/gsm8k); tests that
need it skip with a visible reason when it is absent, so `make test` passes on any machine.
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "checkpoints"


@pytest.fixture
def gsm8k_dir() -> Path:
    folder = os.environ.get("GSM8K_DIR")
    if not folder or not (Path(folder) / "test.jsonl").exists():
        pytest.skip("real GSM8K not available: set GSM8K_DIR to a folder with test.jsonl/train.jsonl")
    return Path(folder)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The CLIs under test set torch's thread count (--threads): give it back after each test."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    yield
    if before is not None:
        torch.set_num_threads(before)
