"""Byte-level tokenizer and the chat template.

Every byte of UTF-8 is its own token (ids 0..255), so nothing is downloaded, nothing is ever
out-of-vocabulary, and `decode(encode(s)) == s` for every Unicode string. A handful of special
tokens mark the structure of a chat:

    [BOS] [USER] what is 2+2? [EOT] [ASSISTANT] 4 [EOT]

`encode_prompt` builds everything up to and including the opening `[ASSISTANT]` — the model then
writes the reply and ends it with `[EOT]`. Training (`encode_conversation`) and scoring use the same
template, so the model is always asked questions in the format it was taught.
"""

BOS, USER, ASSISTANT, EOT, PAD = 256, 257, 258, 259, 260
VOCAB_SIZE = 264  # 261 ids rounded up to a multiple of 8 (friendlier matmul shapes); 261..263 unused
SPECIAL_NAMES = {BOS: "<|bos|>", USER: "<|user|>", ASSISTANT: "<|assistant|>", EOT: "<|eot|>", PAD: "<|pad|>"}
_ROLE_TOKEN = {"user": USER, "assistant": ASSISTANT}


def encode(text: str) -> list[int]:
    """Text -> byte ids. `surrogatepass` keeps lone surrogates (e.g. '\\ud800') round-trippable."""
    return list(text.encode("utf-8", errors="surrogatepass"))


def decode(ids) -> str:
    """Byte ids -> text. Special ids are dropped; an invalid byte sequence (a model can emit one)
    becomes U+FFFD instead of raising."""
    data = bytes(i for i in ids if 0 <= i < 256)
    try:
        return data.decode("utf-8", errors="surrogatepass")  # exact inverse of encode
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")  # model output that is not valid UTF-8


def _role_token(message: dict) -> int:
    role = message.get("role")
    if role not in _ROLE_TOKEN:
        raise ValueError(f"unknown role {role!r}: messages need role 'user' or 'assistant'")
    return _ROLE_TOKEN[role]


def encode_prompt(messages: list[dict]) -> list[int]:
    """Chat messages -> ids ending with the assistant turn opened, ready for generation.

    >>> encode_prompt([{"role": "user", "content": "hi"}])
    [256, 257, 104, 105, 259, 258]
    """
    ids = [BOS]
    for message in messages:
        ids += [_role_token(message)] + encode(message["content"]) + [EOT]
    return ids + [ASSISTANT]


def encode_conversation(messages: list[dict]) -> tuple[list[int], list[int]]:
    """Ids and loss mask for supervised fine-tuning.

    The last message must be the assistant's reply: the mask is 1 on its content bytes and its EOT
    (what the model must learn to write, including when to stop) and 0 on everything before (the
    question is given, not predicted).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("encode_conversation needs messages ending with an assistant message")
    prompt = encode_prompt(messages[:-1])
    reply = encode(messages[-1]["content"]) + [EOT]
    return prompt + reply, [0] * len(prompt) + [1] * len(reply)


def render(ids) -> str:
    """Debug view: bytes decoded, special tokens shown by name (for notebooks)."""
    out, run = [], []
    for i in ids:
        if i < 256:
            run.append(i)
            continue
        out.append(decode(run)); run = []
        out.append(SPECIAL_NAMES.get(i, f"<|{i}|>"))
    out.append(decode(run))
    return "".join(out)


class ByteTokenizer:
    """The byte tokenizer as the object every course-engine model carries (`model.tokenizer`):
    `batched_generate` pads with `pad_id`, stops at `stop_ids`, decodes with `decode`, and the scorer
    writes a question with `encode_question` (`stop_strings`/`stopped`: a BPE model's few-shot
    prompts only). The Llama-family model carries its BPE tokenizer
    (`bpe.py`) with the same four names. `bytes_are_ids`: ids 0..255 are the bytes themselves, which
    the calculator relies on to read `<<EXPR=` as the model writes it."""
    pad_id = PAD
    stop_ids = frozenset({EOT})
    stop_strings = ()  # text that ends an answer (a few-shot prompt's "Question:"): none here
    bytes_are_ids = True

    @staticmethod
    def decode(ids) -> str:
        return decode(ids)

    @staticmethod
    def encode_question(question: str) -> list[int]:
        return encode_prompt([{"role": "user", "content": question}])


BYTES = ByteTokenizer()
