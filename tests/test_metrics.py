import builtins
import json

import pytest

from lessons_lib.metrics import MetricsLogger, read_metrics


def test_one_flushed_json_object_per_step(tmp_path):
    path = tmp_path / "logs" / "run.jsonl"
    log = MetricsLogger(path)
    log.log(0, loss=2.5)
    assert json.loads(path.read_text()) == {"step": 0, "loss": 2.5}  # readable before close: flushed
    log.log(1, loss=float("nan"), acc=0.5)
    log.close()
    assert read_metrics(path) == [{"step": 0, "loss": 2.5}, {"step": 1, "loss": None, "acc": 0.5}]


def test_context_manager_and_tensor_values(tmp_path):
    torch = pytest.importorskip("torch")
    with MetricsLogger(tmp_path / "m.jsonl") as log:
        log.log(3, kl=torch.tensor(0.25))
    assert read_metrics(tmp_path / "m.jsonl") == [{"step": 3, "kl": 0.25}]


def test_rerun_starts_a_fresh_file(tmp_path):
    for value in (1, 2):
        with MetricsLogger(tmp_path / "m.jsonl") as log:
            log.log(0, x=value)
    assert read_metrics(tmp_path / "m.jsonl") == [{"step": 0, "x": 2}]


def test_wandb_missing_gives_clear_message(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with MetricsLogger(tmp_path / "m.jsonl", use_wandb=True) as log:
        log.log(0, loss=1.0)
    assert "wandb is not installed" in capsys.readouterr().err
    assert read_metrics(tmp_path / "m.jsonl") == [{"step": 0, "loss": 1.0}]
