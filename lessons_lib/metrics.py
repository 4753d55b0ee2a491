"""MetricsLogger: one JSON object per training step, on disk when `log` returns (`jsonl.append_jsonl`).

The JSONL file is always written (plot it offline, diff it, commit it next to the checkpoint).
With `use_wandb=True` the same numbers are mirrored to Weights & Biases if it is installed
(`pip install wandb`; set WANDB_MODE=offline to log without an account or network).

    with MetricsLogger("checkpoints/logs/sft.jsonl") as log:
        log.log(step=0, loss=2.31, lr=1e-3)
"""
import math
import os
import sys
from pathlib import Path

from lessons_lib.jsonl import append_jsonl, read_jsonl, write_jsonl


def _plain(value):
    """Tensors / numpy scalars -> Python numbers; NaN/inf -> None (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path) -> list[dict]:
    """Read a metrics JSONL back as a list of dicts (what notebooks plot)."""
    return read_jsonl(path)


class MetricsLogger:
    def __init__(self, path, use_wandb: bool = False, project: str = "gsm8k-post-training",
                 run_name: str | None = None, config: dict | None = None):
        self.path = Path(path)
        write_jsonl(self.path, [])  # a rerun starts a fresh log, not an appended mix
        self._wandb_run = self._start_wandb(project, run_name, config) if use_wandb else None

    @staticmethod
    def _start_wandb(project, run_name, config):
        try:
            import wandb
        except ImportError:
            print("MetricsLogger: use_wandb=True but wandb is not installed (pip install wandb); "
                  "logging to the JSONL file only.", file=sys.stderr)
            return None
        mode = os.environ.get("WANDB_MODE", "offline")  # offline by default: no account needed
        return wandb.init(project=project, name=run_name, config=config or {}, mode=mode)

    def log(self, step: int, **metrics):
        """Append {"step": step, **metrics} as one line, on disk when this returns (a crash keeps what was logged)."""
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        append_jsonl(self.path, record)
        if self._wandb_run is not None:
            self._wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self):
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
