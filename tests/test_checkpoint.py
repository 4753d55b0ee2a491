"""Checkpoints round-trip with their config and meta; every broken file gives a clear CheckpointError."""
from pathlib import Path

import pytest
import torch

from lessons_lib.checkpoint import CheckpointError, default_device, load_checkpoint, save_checkpoint
from lessons_lib.model import GPT, GPTConfig

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, max_seq_len=32)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(CFG)


def test_roundtrip_reads_dims_from_the_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, {"stage": "sft", "calculator": True})
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config == CFG and not loaded.training
    assert loaded.meta == {"stage": "sft", "calculator": True} and loaded.calculator is True
    idx = torch.randint(0, 264, (2, 9))
    assert torch.equal(loaded(idx), model.eval()(idx))
    assert loaded.lm_head.weight is loaded.wte.weight  # tying survives loading


def test_meta_defaults_to_model_attributes(tmp_path, model):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model), device="cpu")
    assert loaded.calculator is False and loaded.meta == {"calculator": False}


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, {"stage": "a"})
    def broken_save(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, model, {"stage": "b"})
    monkeypatch.undo()
    assert load_checkpoint(path, device="cpu").meta["stage"] == "a"  # old file intact
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any saved file


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="make checkpoints"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_plain_state_dict_is_not_ours(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a lessons_lib checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")


def test_other_dicts_and_objects_are_not_ours(tmp_path):
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, tmp_path / "a.pt")
    torch.save([1, 2, 3], tmp_path / "b.pt")
    for name in ("a.pt", "b.pt"):
        with pytest.raises(CheckpointError, match="not a lessons_lib checkpoint"):
            load_checkpoint(tmp_path / name)


class Evil:  # pickled custom objects are refused by weights_only=True
    pass


def test_pickled_code_is_refused(tmp_path):
    torch.save({"format": "lessons_lib.gpt/v1", "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_weights_that_do_not_match_the_config(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["config"]["n_embd"] = 32  # config now says a wider model than the weights
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"config says wte.weight is \(264, 32\).*the file holds \(264, 16\)"):
        load_checkpoint(path)
    payload["config"]["n_embd"] = 16
    del payload["state_dict"]["ln_f.weight"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="ln_f.weight"):
        load_checkpoint(path)


def _edited(tmp_path, model, edit):
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def test_a_config_that_claims_huge_sizes_is_refused_before_anything_is_built(tmp_path, model, monkeypatch):
    path = _edited(tmp_path, model, lambda p: p["config"].update(vocab_size=2_000_000_000))
    def no_build(*a, **k):
        raise AssertionError("a model was built from a config that does not match its tensors")
    monkeypatch.setattr("lessons_lib.checkpoint.GPT", no_build)
    with pytest.raises(CheckpointError, match=rf"{path}: config says wte.weight is \(2000000000, 16\)"):
        load_checkpoint(path, device="cpu")
    path = _edited(tmp_path, model, lambda p: p["config"].update(n_layer=10**9))
    with pytest.raises(CheckpointError, match=r"'n_layer' = 1000000000, but the file holds 1 layer"):
        load_checkpoint(path, device="cpu")


@pytest.mark.parametrize("field, value, message", [
    ("n_head", 3, r"config field 'n_head' = 3 does not divide n_embd = 16"),
    ("max_seq_len", 0, r"config field 'max_seq_len' = 0 must be a whole number >= 1"),
    ("max_seq_len", -5, r"config field 'max_seq_len' = -5 must be"),
    ("n_embd", 16.0, r"config field 'n_embd' = 16.0 must be a whole number"),
    ("dropout", 1.5, r"config field 'dropout' = 1.5 must be in \[0, 1\)"),
])
def test_bad_config_fields_name_the_file_and_the_field(tmp_path, model, field, value, message):
    path = _edited(tmp_path, model, lambda p: p["config"].update({field: value}))
    with pytest.raises(CheckpointError, match=rf"{path}: {message}"):
        load_checkpoint(path, device="cpu")


@pytest.mark.parametrize("meta, message", [
    ([1, 2], r"field 'meta' must be a dict, got list"),
    ({"calculator": "yes"}, r"meta field 'calculator' must be true or false"),
    ({"stage": 3}, r"meta field 'stage' must be a string"),
])
def test_malformed_meta_names_the_file_and_the_field(tmp_path, model, meta, message):
    path = _edited(tmp_path, model, lambda p: p.update(meta=meta))
    with pytest.raises(CheckpointError, match=rf"{path}: {message}"):
        load_checkpoint(path, device="cpu")


def test_sha256_is_of_the_bytes_that_were_loaded(tmp_path, model, monkeypatch):
    import hashlib
    path = save_checkpoint(tmp_path / "m.pt", model, {"stage": "a"})
    original = hashlib.sha256(path.read_bytes()).hexdigest()
    real_load = torch.load
    def load_then_replace(*a, **k):  # the file is swapped for other weights while we load it
        payload = real_load(*a, **k)
        torch.manual_seed(1)
        save_checkpoint(path, GPT(CFG), {"stage": "b"})
        return payload
    monkeypatch.setattr(torch, "load", load_then_replace)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.meta["stage"] == "a" and loaded.sha256 == original
    assert hashlib.sha256(path.read_bytes()).hexdigest() != original


def test_unknown_config_field(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["config"]["rotary"] = True
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_default_device_is_available():
    assert default_device() in ("cuda", "mps", "cpu")
    assert default_device() == "cpu" or torch.cuda.is_available() or torch.backends.mps.is_available()


@pytest.mark.skipif(not (Path(__file__).parent.parent / "checkpoints" / "sft.pt").exists(),
                    reason="checkpoints/sft.pt not built yet (make checkpoints)")
def test_shipped_sft_checkpoint_loads():
    m = load_checkpoint(Path(__file__).parent.parent / "checkpoints" / "sft.pt", device="cpu")
    assert m.meta.get("stage") == "sft" and isinstance(m.calculator, bool)
