"""Checkpoints that carry their own config: save, load, and clear errors when something is off.

A checkpoint is one `torch.save`d dict:

    {"format": "lessons_lib.gpt/v1", "config": {...GPTConfig fields...},
     "state_dict": {...weights...}, "meta": {"stage": "sft", "calculator": True, ...}}

Loading reads the model's dims from the stored config, so any checkpoint loads without the caller
knowing its size. `torch.load(weights_only=True)` only unpickles tensors and plain containers: a
checkpoint file cannot run code on your machine.
"""
import os
from pathlib import Path
import tempfile

import torch

from .model import GPT, GPTConfig

FORMAT = "lessons_lib.gpt/v1"


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used; the message says why and what to do."""


def default_device() -> str:
    """The best available device: 'cuda', then 'mps' (Apple GPUs), else 'cpu'."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def save_checkpoint(path, model: GPT, meta: dict | None = None) -> Path:
    """Write `model` (config + weights) and `meta` to `path` atomically: a crash mid-write leaves the
    old file intact, never a half-written one. Meta defaults to `model.meta`; it should say
    "stage" and "calculator" (whether generation should use the calculator for this model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(model.meta if meta is None else meta)
    meta.setdefault("calculator", bool(getattr(model, "calculator", False)))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # loads on any device
    payload = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state, "meta": meta}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a checkpoint is a shareable file
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}. Build the course checkpoints with "
                                f"`make checkpoints`, or check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickled code refused by weights_only, ...
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}). "
                              f"It may be truncated or corrupt: delete it and re-create it "
                              f"(e.g. `make checkpoints`).") from e


def _check_format(payload, path: Path) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = list(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a lessons_lib checkpoint (expected format {FORMAT!r}; found {keys}). "
                              f"A bare state_dict or another project's file can't be loaded: save models "
                              f"with lessons_lib.save_checkpoint.")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path} has no {key!r} dict; the file is damaged. Re-create it.")


def _build(payload: dict, path: Path) -> GPT:
    try:
        config = GPTConfig(**payload["config"])
    except TypeError as e:
        raise CheckpointError(f"{path} stores a config this version can't read ({e}). "
                              f"Re-create the checkpoint with this version of lessons_lib.") from e
    model = GPT(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:  # missing/unexpected keys or wrong shapes
        raise CheckpointError(f"{path}: the weights don't match the stored config {payload['config']}:\n"
                              f"{str(e)[:600]}\nThe file was edited or written by other code; re-create it.") from e
    return model


def load_checkpoint(path, device=None) -> GPT:
    """Load a checkpoint saved by `save_checkpoint` -> a `GPT` in eval mode on `device`
    (None -> `default_device()`), with `model.meta` and `model.calculator` set from the file."""
    path = Path(path)
    payload = _read(path)
    _check_format(payload, path)
    model = _build(payload, path)
    model.meta = dict(payload.get("meta") or {})
    model.calculator = bool(model.meta.get("calculator", False))
    return model.to(device or default_device()).eval()
