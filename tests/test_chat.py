"""lessons_lib.chat: ask a checkpoint a question; response, extracted number, reward."""

import io
import subprocess
import sys
from argparse import Namespace
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from lessons_lib import chat
from lessons_lib.checkpoint import load_checkpoint, save_checkpoint
from lessons_lib.generation import Generation
from lessons_lib.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=128))
    return save_checkpoint(tmp_path_factory.mktemp("c") / "tiny.pt", model, {"stage": "sft", "calculator": True})


def _fake(text, finished=True):
    def fake(model, prompts, **kw):
        assert len(prompts) == 1 and prompts[0][-1] == 258  # the assistant turn is opened
        return [Generation(text=text, token_ids=list(text.encode()) + ([259] if finished else []), finished=finished)]
    return fake


def test_ask_grades_against_gold(monkeypatch):
    monkeypatch.setattr(chat, "batched_generate", _fake("3+15=18\n<answer>18</answer>"))
    r = chat.ask(None, "Tom has 3 apples and gets 15 more?", gold="18")
    assert (r["extracted"], r["correct"], r["reward"], r["finished"]) == ("18", True, 1.2, True)
    r = chat.ask(None, "same?", gold="17")
    assert (r["correct"], r["reward"]) == (False, 0.2)  # well-formed but wrong: only the format bonus
    r = chat.ask(None, "no gold")
    assert "correct" not in r and "reward" not in r


def test_format_answer_says_truncated(monkeypatch):
    monkeypatch.setattr(chat, "batched_generate", _fake("so far 1 2 3", finished=False))
    text = chat.format_answer(chat.ask(None, "q", gold="3"))
    assert "extracted answer: 3" in text and "truncated" in text and "reward: 1.0" in text


def test_ask_a_real_tiny_checkpoint_greedy_is_deterministic(tiny_ckpt):
    model = load_checkpoint(tiny_ckpt, device="cpu")
    a = chat.ask(model, "What is 2+2?", gold="4", max_new_tokens=10)
    b = chat.ask(model, "What is 2+2?", gold="4", max_new_tokens=10)
    assert a == b and a["n_tokens"] <= 10
    s = chat.ask(model, "What is 2+2?", max_new_tokens=10, greedy=False, seed=3)
    assert s == chat.ask(model, "What is 2+2?", max_new_tokens=10, greedy=False, seed=3)  # seeded sampling


_ROOMY = SimpleNamespace(config=SimpleNamespace(max_seq_len=1000))  # all a fake generate needs of a model


def test_interactive_reads_questions_and_gold(monkeypatch, capsys):
    monkeypatch.setattr(chat, "batched_generate", _fake("<answer>7</answer>"))
    args = Namespace(max_new_tokens=8, sample=False, temperature=1.0, seed=0, device=None)
    chat.interactive(_ROOMY, args, stdin=io.StringIO("Half of 14? ### 7\nAnother one\n\nnever asked\n"))
    out = capsys.readouterr().out
    assert out.count("extracted answer: 7") == 2
    assert out.count("correct: True") == 1  # only the first line gave a gold


def test_cli_one_question(tiny_ckpt):
    out = subprocess.run([sys.executable, "-m", "lessons_lib.chat", "--ckpt", str(tiny_ckpt), "--question",
                          "What is 2+2?", "--gold", "4", "--max_new_tokens", "6", "--device", "cpu"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stage: sft" in out.stdout and "extracted answer:" in out.stdout and "reward:" in out.stdout


def test_cli_interactive_until_quit(tiny_ckpt):
    out = subprocess.run([sys.executable, "-m", "lessons_lib.chat", "--ckpt", str(tiny_ckpt),
                          "--max_new_tokens", "4", "--device", "cpu"], input="What is 1+1?\nquit\n",
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("extracted answer:") == 1


def test_interactive_reports_a_question_too_long_and_goes_on(monkeypatch, capsys):
    monkeypatch.setattr(chat, "batched_generate", _fake("<answer>7</answer>"))
    args = Namespace(max_new_tokens=900, sample=False, temperature=1.0, seed=0, device=None)
    chat.interactive(_ROOMY, args, stdin=io.StringIO("short?\n" + "long " * 30 + "?\nshort again?\n"))
    out = capsys.readouterr().out
    assert out.count("extracted answer: 7") == 2
    assert "error: the question is 155 tokens" in out and "leaves room for 100" in out


def test_interactive_ends_quietly_on_ctrl_c(monkeypatch, capsys):
    class CtrlC(io.StringIO):
        def readline(self, *a):
            raise KeyboardInterrupt
    chat.interactive(_ROOMY, Namespace(max_new_tokens=8), stdin=CtrlC())
    assert capsys.readouterr().out.endswith("> \n")


def _chat(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "lessons_lib.chat", *map(str, argv)], capture_output=True,
                          text=True, cwd=REPO, timeout=120, **kw)


@pytest.mark.parametrize("argv, message", [
    (["--sample", "--temperature", "0"], "sampling needs a temperature > 0"),
    (["--max_new_tokens", "0"], "argument --max_new_tokens: must be >= 1"),
    (["--threads", "-1"], "argument --threads: must be >= 1"),
    (["--device", "nope"], "unknown device 'nope'"),
    (["--question", " "], "--question is empty"),
])
def test_cli_refuses_bad_arguments_before_loading(tiny_ckpt, monkeypatch, capsys, argv, message):
    def refuse(*a, **k):
        raise AssertionError("loaded the checkpoint before refusing")
    monkeypatch.setattr(chat, "load_checkpoint", refuse)
    with pytest.raises(SystemExit) as e:
        chat.main(["--ckpt", str(tiny_ckpt), "--question", "1+1?", *argv])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "" and err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1


def test_cli_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        chat.main(["--ckpt", str(tmp_path / "missing.pt")])
    assert e.value.code == 2 and "--ckpt" in capsys.readouterr().err


def test_cli_question_too_long_is_one_line(tiny_ckpt):
    out = _chat("--ckpt", tiny_ckpt, "--question", "x" * 200, "--max_new_tokens", "8")
    assert out.returncode == 2 and out.stderr.startswith("error: the question is ") and "Traceback" not in out.stderr


def test_cli_interactive_ends_quietly_on_ctrl_c(tiny_ckpt):
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "lessons_lib.chat", "--ckpt", str(tiny_ckpt), "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and b"> " not in _peek(proc):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err and err == ""


def _peek(proc):
    import fcntl
    import os
    fd = proc.stdout.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        chunk = b""
    _peek.seen = getattr(_peek, "seen", b"") + chunk
    return _peek.seen
