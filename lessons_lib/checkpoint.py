"""Checkpoints that carry their own config: save, load, and clear errors when something is off.

A checkpoint is one `torch.save`d dict:

    {"format": "lessons_lib.gpt/v1", "config": {...GPTConfig fields...},
     "state_dict": {...weights...}, "meta": {"stage": "sft", "calculator": True, ...}}

Loading reads the model's dims from the stored config, so any checkpoint loads without the caller
knowing its size. `torch.load(weights_only=True)` only unpickles tensors and plain containers: a
checkpoint file cannot run code on your machine. The config is checked against the stored tensors
*before* a model is built (a 2 KB file claiming `vocab_size=2e9` is refused, not allocated), and
`model.sha256` is the hash of the very bytes that were loaded (the file may change afterwards).
"""
import dataclasses
import hashlib
import io
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


def _read(path: Path) -> tuple[dict, str]:
    """(payload, sha256 of the bytes it was read from): read once, so the hash names these weights."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}. Build the course checkpoints with "
                                f"`make checkpoints`, or check the path.")
    if not path.is_file():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    data = path.read_bytes()
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), hashlib.sha256(data).hexdigest()
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


_SIZES = ("vocab_size", "n_layer", "n_head", "n_embd", "max_seq_len")


def _check_config(config: dict, state: dict, path: Path) -> GPTConfig:
    """The stored config, checked field by field and against the tensors' shapes -- before anything
    is allocated: the model the config describes must be the one the file holds."""
    unknown = set(config) - {f.name for f in dataclasses.fields(GPTConfig)}
    if unknown:
        raise CheckpointError(f"{path}: config has field(s) {sorted(unknown)} this version can't read. "
                              f"Re-create the checkpoint with this version of lessons_lib.")
    config = GPTConfig(**config)
    for name in _SIZES:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{path}: config field {name!r} = {value!r} must be a whole number >= 1")
    if config.n_embd % config.n_head:
        raise CheckpointError(f"{path}: config field 'n_head' = {config.n_head} does not divide n_embd = {config.n_embd}")
    if not isinstance(config.dropout, (int, float)) or not 0 <= config.dropout < 1:
        raise CheckpointError(f"{path}: config field 'dropout' = {config.dropout!r} must be in [0, 1)")
    expected = {"wte.weight": (config.vocab_size, config.n_embd), "wpe.weight": (config.max_seq_len, config.n_embd)}
    for key, shape in expected.items():
        found = tuple(state[key].shape) if isinstance(state.get(key), torch.Tensor) else None
        if found != shape:
            raise CheckpointError(f"{path}: config says {key} is {shape} (vocab_size/max_seq_len x n_embd), "
                                  f"the file holds {found}: the config was edited or belongs to other weights")
    layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if layers != config.n_layer:
        raise CheckpointError(f"{path}: config field 'n_layer' = {config.n_layer}, but the file holds {layers} layer(s)")
    return config


def _check_meta(meta, path: Path) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: field 'meta' must be a dict, got {type(meta).__name__}")
    if not isinstance(meta.get("calculator", False), bool):
        raise CheckpointError(f"{path}: meta field 'calculator' must be true or false, got {meta['calculator']!r}")
    for key in ("stage", "parent"):
        if not isinstance(meta.get(key), (str, type(None))):
            raise CheckpointError(f"{path}: meta field {key!r} must be a string, got {meta[key]!r}")
    return dict(meta)


def _build(payload: dict, path: Path) -> GPT:
    try:
        config = _check_config(payload["config"], payload["state_dict"], path)
    except TypeError as e:  # e.g. a config field of the wrong type that GPTConfig itself rejects
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
    payload, sha256 = _read(path)
    _check_format(payload, path)
    meta = _check_meta(payload.get("meta"), path)
    model = _build(payload, path)
    model.meta, model.sha256 = meta, sha256  # sha256: of the bytes these weights came from
    model.calculator = bool(meta.get("calculator", False))
    return model.to(device or default_device()).eval()
