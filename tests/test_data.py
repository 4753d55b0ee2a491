"""Tests for lessons_lib/data.py: the GSM8K loader (local folder, hub fallback, clear errors)."""
import builtins
import json
import sys

import pytest

from lessons_lib import data
from lessons_lib.data import (
    DatasetFormatError,
    DatasetUnavailableError,
    load_qa_pairs,
    solution_with_answer_tag,
)

ITEMS = [
    {"question": "Janet has 16 eggs and eats 3. How many are left?", "answer": "16 - 3 = <<16-3=13>>13\n#### 13"},
    {"question": "A robe takes 2 bolts and 1 more. How many?", "answer": "2+1=<<2+1=3>>3\n#### 3"},
    {"question": "Big?", "answer": "It is big.\n#### 1,450,000"},
]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A GSM8K-like folder (train.jsonl, test.jsonl) in a temp dir, with GSM8K_DIR unset."""
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    for split in ("train", "test"):
        lines = [json.dumps(item) for item in ITEMS] + [""]  # a trailing blank line is fine
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines), encoding="utf-8")
    return tmp_path


def test_load_from_data_dir(folder):
    pairs = load_qa_pairs("gsm8k", "test", data_dir=folder)
    assert pairs == [(item["question"], item["answer"]) for item in ITEMS]
    assert load_qa_pairs("gsm8k", "train", limit=2, data_dir=str(folder)) == pairs[:2]


def test_load_from_env(folder, monkeypatch):
    monkeypatch.setenv("GSM8K_DIR", str(folder))
    assert len(load_qa_pairs("gsm8k", "test")) == 3


def test_relative_env_is_also_tried_from_the_repo_root(folder, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # like a notebook running in notebooks/
    monkeypatch.setattr(data, "__file__", str(folder.parent / "lessons_lib" / "data.py"))  # fake repo root
    monkeypatch.setenv("GSM8K_DIR", folder.name)  # relative to that root, not to the current folder
    assert data.gsm8k_dir() == folder.parent / folder.name
    assert len(load_qa_pairs("gsm8k", "test")) == 3


def test_broken_line_names_file_and_line(folder):
    path = folder / "test.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = '{"question": "oops", "answer": '  # truncated JSON on line 2
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetFormatError, match=r"test\.jsonl, line 2"):
        load_qa_pairs("gsm8k", "test", data_dir=folder)
    assert len(load_qa_pairs("gsm8k", "test", limit=1, data_dir=folder)) == 1  # stops before the break


def test_missing_key_names_file_and_line(folder):
    (folder / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DatasetFormatError, match=r"line 1: missing key\(s\) \['answer'\]"):
        load_qa_pairs("gsm8k", "test", data_dir=folder)


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "answer": "forty-two"}', r"line 2: the answer has no '#### N' gold line"),
    ('{"question": null, "answer": "#### 3"}', r"line 2: the question is None, not a non-empty text"),
    ('{"question": "  ", "answer": "#### 3"}', r"line 2: the question is '  '"),
    ('{"question": "q", "answer": null}', r"line 2: the answer has no '#### N' gold line"),
])
def test_golds_are_checked_when_the_data_is_loaded(folder, line, message):
    (folder / "test.jsonl").write_text(json.dumps(ITEMS[0]) + "\n" + line + "\n")
    with pytest.raises(DatasetFormatError, match=rf"test\.jsonl, line 2: {message[len('line 2: '):]}"):
        load_qa_pairs("gsm8k", "test", data_dir=folder)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_data_file_is_an_error_not_zero_questions(folder, content):
    (folder / "test.jsonl").write_text(content)
    with pytest.raises(DatasetFormatError, match=r"test\.jsonl holds no questions"):
        load_qa_pairs("gsm8k", "test", data_dir=folder)


@pytest.mark.parametrize("name, split", [("gsm8k", "test"), ("synthetic", "test")])
@pytest.mark.parametrize("limit", [0, -1, True, 2.0])
def test_the_same_limit_rule_for_every_data_set(folder, name, split, limit):
    with pytest.raises(ValueError, match=r"limit must be None \(all\) or a whole number >= 1"):
        load_qa_pairs(name, split, limit=limit, data_dir=folder)


def test_offline_without_the_train_split_fails_in_seconds_with_one_clear_line(tmp_path):
    """`datasets` alone retries a dead network for ~25 s and ends in a traceback. The clock runs in the
    child around the call only: importing torch and `datasets` on a busy machine is not what is tested."""
    import subprocess
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("GSM8K", "HF_"))}
    env.update(HF_ENDPOINT="https://hub.invalid", HF_HOME=str(tmp_path))  # .invalid never resolves
    code = ("import sys, time\nimport datasets\nfrom lessons_lib.data import load_qa_pairs\n"
            "t0 = time.perf_counter()\n"
            "try:\n    load_qa_pairs('gsm8k', 'train', limit=1)\n"
            "except Exception as e:\n    print(type(e).__name__, '|', e)\n"
            "print(f'{time.perf_counter() - t0:.2f}', file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.startswith("DatasetUnavailableError |") and "set GSM8K_DIR" in out.stdout, out.stdout + out.stderr
    assert "hub.invalid" in out.stdout and len(out.stdout.strip().splitlines()) == 1
    elapsed = float(out.stderr.strip().splitlines()[-1])
    assert elapsed < 12, f"the call took {elapsed:.1f} s"


def test_named_folder_without_the_split_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="GSM8K_DIR"):
        load_qa_pairs("gsm8k", "test", data_dir=tmp_path)


def test_no_folder_and_no_datasets_package(monkeypatch):
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    with pytest.raises(DatasetUnavailableError, match="set GSM8K_DIR") as info:
        load_qa_pairs("gsm8k", "train")  # the train split is not shipped
    assert isinstance(info.value, RuntimeError)


def test_no_folder_and_hub_unreachable(monkeypatch):
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    monkeypatch.setattr(data, "_hub_unreachable", lambda: None)  # the probe passes, the download fails

    class FakeDatasets:
        @staticmethod
        def load_dataset(*args, **kwargs):
            raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.raises(DatasetUnavailableError, match="no network"):
        load_qa_pairs("gsm8k", "train")


def test_hub_fallback_when_available(monkeypatch):
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    monkeypatch.setattr(data, "_hub_unreachable", lambda: None)
    calls = []

    class FakeDatasets:
        @staticmethod
        def load_dataset(name, config, split):
            calls.append((name, config, split))
            return ITEMS  # a list of dicts behaves like a datasets.Dataset here

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    assert load_qa_pairs("gsm8k", "train", limit=2) == [(i["question"], i["answer"]) for i in ITEMS[:2]]
    assert calls == [("openai/gsm8k", "main", "train")]


def test_test_split_ships_with_the_course_and_needs_no_network(monkeypatch):
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # no hub: the shipped copy must be enough
    pairs = load_qa_pairs("gsm8k", "test")
    assert len(pairs) == 1319 and pairs[0][0].startswith("Janet")
    assert data.gsm8k_file("example_model_solutions.jsonl") == data.SHIPPED_DIR / "example_model_solutions.jsonl"


def test_shipped_copy_is_byte_identical_to_shared(gsm8k_dir):
    for name in data.SHIPPED_SHA256:
        if (gsm8k_dir / name).exists():
            assert (data.SHIPPED_DIR / name).read_bytes() == (gsm8k_dir / name).read_bytes()


def test_modified_shipped_copy_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("GSM8K_DIR", raising=False)
    copy = tmp_path / "test.jsonl"
    copy.write_bytes((data.SHIPPED_DIR / "test.jsonl").read_bytes()[:-100])  # truncated
    monkeypatch.setattr(data, "SHIPPED_DIR", tmp_path)
    with pytest.raises(DatasetFormatError, match="sha256.*git checkout -- data/gsm8k"):
        load_qa_pairs("gsm8k", "test")


def test_env_folder_overrides_the_shipped_copy(folder, monkeypatch):
    monkeypatch.setenv("GSM8K_DIR", str(folder))
    assert len(load_qa_pairs("gsm8k", "test")) == 3  # the named folder, not the shipped 1319


def test_bad_arguments(folder):
    with pytest.raises(ValueError, match="split"):
        load_qa_pairs("gsm8k", "validation", data_dir=folder)
    with pytest.raises(ValueError, match="unknown data set"):
        load_qa_pairs("mnist", "test")
    with pytest.raises(ValueError, match="limit"):
        load_qa_pairs("gsm8k", "test", limit=-1, data_dir=folder)


def test_synthetic_dispatch_is_lazy(monkeypatch):
    real_import = builtins.__import__
    seen = []

    def spy(name, *args, **kwargs):
        seen.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    pairs = load_qa_pairs("synthetic", "test", limit=3)
    assert "lessons_lib.synthetic" in seen and len(pairs) == 3
    assert all(isinstance(q, str) and "####" in a for q, a in pairs)


def test_solution_with_answer_tag():
    assert solution_with_answer_tag(ITEMS[0]["answer"]) == "16 - 3 = <<16-3=13>>13\n<answer>13</answer>"
    assert solution_with_answer_tag(ITEMS[2]["answer"]).endswith("\n<answer>1450000</answer>")
    assert solution_with_answer_tag("#### 7") == "<answer>7</answer>"
    with pytest.raises(ValueError):
        solution_with_answer_tag("no gold line")
