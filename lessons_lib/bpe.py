"""A real model's own tokenizer for the course's engine: byte-level BPE (the `tokenizers` library),
and prompts rendered by the model's own chat template (Jinja, as transformers renders it).

`ChatTokenizer` has the four names every course-engine tokenizer has (`tokenizer.ByteTokenizer`):
`encode_question`, `decode`, `stop_ids`, `pad_id`, so `batched_generate` and the scorer use it as
they use the course's byte tokenizer. Built from a GGUF file's metadata (`from_gguf_fields`: the
vocabulary, merges, special tokens and template llama.cpp stores) or from a Hugging Face folder
(`from_folder`: tokenizer.json and the template in tokenizer_config.json / chat_template.jinja).

Prompt formats are the scorer's (`hf_model.PROMPT_FORMATS`): "chat" renders the question as one user
message with the generation prompt; "fewshot" is lm-evaluation-harness' gsm8k prompt; "plain" the
question alone. A chat template writes its own BOS, so no special tokens are added to it (as
transformers' `apply_chat_template(tokenize=True)`); the other formats get the tokenizer's.
"""
import json
from datetime import datetime
from pathlib import Path

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")  # ChatML, Llama 3, Gemma, Phi-3
FEWSHOT_STOP = ("Question:", "</s>", "<|im_end|>")  # lm-evaluation-harness' gsm8k `until` strings (version 3.0)
CONTROL = 3  # llama.cpp's token type for special tokens (<|im_start|> ...)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer(kind):
    """How text is split before BPE, by llama.cpp's `tokenizer.ggml.pre` name (the regex its merges
    were learned with). SmolLM2 ("smollm"): every digit alone, then GPT-2's split."""
    from tokenizers import Regex, pre_tokenizers as pt
    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's split and byte alphabet
    split = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}.get(kind)
    if split:
        return pt.Sequence([pt.Split(Regex(split), behavior="isolated"), pt.ByteLevel(add_prefix_space=False,
                                                                                       use_regex=False)])
    if kind == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True), byte_level])
    if kind in (None, "default", "gpt2"):
        return byte_level
    raise ValueError(f"the GGUF's pre-tokenizer {kind!r} is not one the course knows (smollm, gpt2, llama-bpe, "
                     f"qwen2): score it with --engine transformers")


def bpe_from_gguf(fields):
    """A `tokenizers.Tokenizer` from GGUF metadata (`gguf_fields`): vocabulary, merges, control tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"tokenizer {fields.get('tokenizer.ggml.model')!r}: the course reads byte-level BPE "
                         f"('gpt2') tokenizers only; score it with --engine transformers")
    tokens = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = _pre_tokenizer(fields.get("tokenizer.ggml.pre"))
    tok.decoder = decoders.ByteLevel()
    types = fields.get("tokenizer.ggml.token_type") or [0] * len(tokens)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == CONTROL])
    bos = fields.get("tokenizer.ggml.bos_token_id")
    if fields.get("tokenizer.ggml.add_bos_token") and bos is not None:  # e.g. Llama 3; SmolLM2 adds none
        tok.post_processor = processors.TemplateProcessing(single=f"{tokens[bos]} $A", special_tokens=[(tokens[bos], bos)])
    return tok


def render_template(template: str, messages, add_generation_prompt=True, **special_tokens) -> str:
    """The chat template rendered as transformers renders it (a sandboxed Jinja environment with
    trim_blocks, lstrip_blocks, loop controls, its `tojson`, `raise_exception`, `strftime_now`)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **special_tokens)


def fewshot_prompt(question: str, examples) -> str:
    """lm-evaluation-harness' gsm8k prompt: each shot is doc_to_text + " " + target + "\\n\\n"."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in examples)
    return f"{shots}Question: {question}\nAnswer:"


def cut_at_stop(text: str, stop_strings) -> str:
    """`text` up to the first occurrence of any stop string (the stop string itself removed)."""
    cuts = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return text[:min(cuts)] if cuts else text


class ChatTokenizer:
    """A BPE tokenizer, the model's chat template and its end-of-turn ids: what the course's engine
    needs to run a real model (see the module docstring)."""
    bytes_are_ids = False  # ids are BPE pieces, not bytes: no calculator

    def __init__(self, tokenizer, chat_template, eos_ids, pad_id=None, special_tokens=None, prompt_format=None,
                 examples=()):
        vocab = tokenizer.get_vocab()
        self.tokenizer, self.chat_template, self.special_tokens = tokenizer, chat_template, special_tokens or {}
        self.stop_ids = frozenset(set(eos_ids) | {vocab[t] for t in END_OF_TURN if t in vocab})
        self.pad_id = pad_id if pad_id is not None else min(self.stop_ids)  # any id: pads are masked
        self.prompt_format = prompt_format or ("chat" if chat_template else "fewshot")
        if self.prompt_format == "chat" and not chat_template:
            raise ValueError("this model has no chat template: use prompt_format 'fewshot' (or 'plain')")
        self.examples = list(examples)
        self.stop_strings = FEWSHOT_STOP if self.prompt_format == "fewshot" else ()

    def prompt_text(self, question: str) -> str:
        """The exact text the model is given for `question` in this tokenizer's prompt format."""
        if self.prompt_format == "chat":
            return render_template(self.chat_template, [{"role": "user", "content": question}], **self.special_tokens)
        if self.prompt_format == "fewshot":
            return fewshot_prompt(question, self.examples)
        return question

    def encode_question(self, question: str) -> list[int]:
        return self.tokenizer.encode(self.prompt_text(question), add_special_tokens=self.prompt_format != "chat").ids

    def decode(self, ids) -> str:
        """Text of generated ids, special tokens left out, cut before a stop string (few-shot)."""
        return cut_at_stop(self.tokenizer.decode(list(ids), skip_special_tokens=True), self.stop_strings)

    def stopped(self, ids) -> bool:
        """Does the end of a row's text hold a stop string? Only the last few tokens can complete one."""
        window = 2 * max(len(s) for s in self.stop_strings) + 8
        tail = self.tokenizer.decode(list(ids[-window:]), skip_special_tokens=False)
        return any(s in tail for s in self.stop_strings)


def folder_template(folder: Path):
    """The chat template a transformers folder ships: chat_template.jinja, else tokenizer_config.json's."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    return json.loads(config.read_text()).get("chat_template") if config.is_file() else None


def special_token_strings(folder: Path) -> dict:
    """bos/eos/pad/unk tokens as strings (templates may use them), from tokenizer_config.json."""
    config = folder / "tokenizer_config.json"
    found = json.loads(config.read_text()) if config.is_file() else {}
    pick = lambda v: v.get("content") if isinstance(v, dict) else v  # noqa: E731 (older files: AddedToken dicts)
    return {k: pick(found[k]) for k in ("bos_token", "eos_token", "pad_token", "unk_token") if found.get(k) is not None}
