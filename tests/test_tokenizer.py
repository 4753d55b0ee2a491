"""The byte tokenizer round-trips any text, and the chat template is exactly the one tokenizer.py documents."""
import pytest
from hypothesis import given, strategies as st

from lessons_lib.tokenizer import (ASSISTANT, BOS, EOT, PAD, USER, VOCAB_SIZE, decode, encode,
                                   encode_conversation, encode_prompt, render)


def test_special_ids_and_vocab():
    assert (BOS, USER, ASSISTANT, EOT, PAD) == (256, 257, 258, 259, 260)
    assert VOCAB_SIZE == 264 and VOCAB_SIZE % 8 == 0


@given(st.text())
def test_roundtrip_any_unicode(s):
    ids = encode(s)
    assert all(0 <= i < 256 for i in ids)
    assert decode(ids) == s


def test_roundtrip_lone_surrogate_and_emoji():
    for s in ["\ud800", "Janet’s ducks 🦆", "", "a\x00b"]:
        assert decode(encode(s)) == s


def test_decode_drops_special_ids_and_replaces_bad_bytes():
    assert decode([BOS, 104, EOT, 105, PAD]) == "hi"
    assert decode([0xFF, 104]) == "\ufffdh"  # a model can emit invalid UTF-8: no exception


def test_encode_prompt_layout():
    ids = encode_prompt([{"role": "user", "content": "hi"}])
    assert ids == [BOS, USER, 104, 105, EOT, ASSISTANT]
    two = encode_prompt([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}])
    assert two == [BOS, USER, 97, EOT, ASSISTANT, 98, EOT, USER, 99, EOT, ASSISTANT]


def test_unknown_role_is_a_clear_error():
    with pytest.raises(ValueError, match="role"):
        encode_prompt([{"role": "system", "content": "x"}])


def test_encode_conversation_masks_only_the_reply():
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    ids, mask = encode_conversation(msgs)
    prompt = encode_prompt(msgs[:1])
    assert ids == prompt + [52, EOT]
    assert mask == [0] * len(prompt) + [1, 1]


def test_encode_conversation_needs_assistant_last():
    with pytest.raises(ValueError, match="assistant"):
        encode_conversation([{"role": "user", "content": "x"}])


def test_render_shows_special_tokens():
    assert render(encode_prompt([{"role": "user", "content": "hi"}])) == "<|bos|><|user|>hi<|eot|><|assistant|>"
