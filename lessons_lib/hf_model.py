"""Score a real model: any Hugging Face causal LM through the course's scorer, table and paired tests.

A real model differs from the course's GPT in three places only: how a question becomes token ids
(its tokenizer and a prompt format), which tokens end an answer, and the engine that decodes. This
module handles those three and turns the answers into the course's `Generation`s; checking them
(`scoring.score_responses`), the records, rows, stage table and paired tests are the course's own:

    hf = load_hf_model("Qwen/Qwen2.5-0.5B-Instruct")      # a hub id, or a folder from save_pretrained
    accuracy, records = gsm8k_accuracy(hf, load_qa_pairs("gsm8k", "test", limit=200))  # lessons_lib.scoring

Prompt formats (`prompt_format`, recorded in every row):

* "chat" (the default when the tokenizer has a chat template): the question as one user message
  through the model's own chat template, generation prompt added — what `encode_prompt` does for
  the course's models.
* "fewshot" (the default without a template): K solved problems of GSM8K *train*, then the question,
  in the format of lm-evaluation-harness' `gsm8k` task (lm_eval/tasks/gsm8k/gsm8k.yaml, version 3.0):
  "Question: {q}\\nAnswer: {full worked solution, ending in #### N}" joined by blank lines, the last one
  "Question: {q}\\nAnswer:". As there, generation stops at "Question:" (the model starting a problem of
  its own), "</s>" or "<|im_end|>", and the text is cut before the stop string. One difference: the
  harness draws 5 random train problems for each question (seed 1234); we take the first K of train
  for every question, so a prompt never depends on question order or on the torchrun shard.
* "plain": the question alone (a base model without a template).

Every format stops at the model's EOS ids (its generation_config and tokenizer) and at the usual
end-of-turn tokens found in its vocabulary (`END_OF_TURN`): an answer ends where the model ends it.

Greedy means argmax, as in the course's engine: the model's own generation_config (instruct models
often ship do_sample=True, temperature, top_p, a repetition penalty) is set aside while decoding.

Batching: prompts are grouped as the course's engine does (`plan_batches`: "pad" sorts by length and
left-pads, "bucket" groups equal lengths, "sequential" is one at a time), and each batch goes through
transformers' own `generate` with an attention mask; `generate` derives each row's position ids from
that mask (cumsum - 1), so a left-padded prompt sees the positions it would see alone. Unlike the
course's engine, `generate` keeps finished rows in the batch (they decode pads) until the last stops.
"""
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .checkpoint import default_device
from .data import gsm8k_dir, load_qa_pairs, shipped_file
from .jsonl import read_jsonl
from .attention import left_pad as _left_pad
from .bpe import END_OF_TURN, FEWSHOT_STOP, cut_at_stop, fewshot_prompt  # noqa: F401 (shared with the course's Llama)
from .engine import Engine
from .generation import DEFAULT_STRATEGY, STRATEGIES, Generation, plan_batches

INSTALL_HINT = ('scoring a Hugging Face model needs the `transformers` package: '
                'pip install -e ".[hf]"  (or: pip install transformers)')
PROMPT_FORMATS = ("chat", "fewshot", "plain")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
FEWSHOT_K = 5  # lm-evaluation-harness' gsm8k: num_fewshot 5
FEWSHOT_FILE = "fewshot_train.jsonl"  # the first 8 problems of GSM8K train, shipped (offline notebooks)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class HFUnavailableError(ImportError):
    """`transformers` is not installed; the message says how to install it."""


def require_transformers():
    """The `transformers` module, or one clear HFUnavailableError (the course runs without it)."""
    try:
        import transformers
    except ImportError as e:  # also raised when the module is hidden: sys.modules["transformers"] = None
        raise HFUnavailableError(INSTALL_HINT) from e
    return transformers


# ---------------------------------------------------------------------------------------------
# prompts

def fewshot_examples(k=FEWSHOT_K, data_dir=None) -> list[tuple[str, str]]:
    """The first `k` (question, full solution) pairs of GSM8K train: from `data_dir`/$GSM8K_DIR when
    set (as `load_qa_pairs` reads them), else the shipped copy of the first 8, else the hub."""
    if k < 0:
        raise ValueError(f"fewshot k must be >= 0, got {k}")
    if k == 0:
        return []  # zero-shot: the same prompt format with no examples
    if gsm8k_dir(data_dir) is None and k <= 8:
        rows = read_jsonl(shipped_file(FEWSHOT_FILE), limit=k, keys=("question", "answer"))
        return [(r["question"], r["answer"]) for r in rows]
    return load_qa_pairs("gsm8k", "train", limit=k, data_dir=data_dir)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end an answer: the generation_config's and tokenizer's EOS, plus known end-of-turn
    tokens present in the vocabulary (some fine-tunes forget to list theirs as EOS)."""
    ids = set()
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        ids |= set(source if isinstance(source, (list, tuple)) else [source])
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN if t in vocab}
    return sorted(i for i in ids if i is not None)


# ---------------------------------------------------------------------------------------------
# generation: transformers' `generate`, greedy, batched like the course's engine

class _RowEnds:
    """A stopping criterion for `generate` that remembers, per row, how many tokens it had generated
    when it ended (an EOS id, or `stopped(new_ids)` true); None while the row is still going."""

    def __init__(self, width, eos_ids, stopped=None):
        self.width, self.eos, self.stopped, self.lengths = width, set(eos_ids), stopped, None

    def __call__(self, input_ids, scores=None, **kwargs):
        if self.lengths is None:
            self.lengths = [None] * input_ids.shape[0]
        n, last = input_ids.shape[1] - self.width, input_ids[:, -1].tolist()
        for r, length in enumerate(self.lengths):
            if length is None and (last[r] in self.eos or (self.stopped and self.stopped(input_ids[r, self.width:]))):
                self.lengths[r] = n
        return torch.tensor([length is not None for length in self.lengths], device=input_ids.device)


def left_pad(prompts, pad_id):
    """The course's `attention.left_pad` in the form transformers' `generate` takes: (B, P) ids with
    each prompt at the right end, and the attention mask as 0/1 integers (`generate` derives the
    positions from it: cumsum - 1, what `left_pad`'s positions are)."""
    ids, mask, _ = _left_pad(prompts, pad_id=pad_id)
    return ids, mask.long()


@torch.inference_mode()
def _generate_batch(model, prompts, max_new_tokens, pad_id, eos_ids, stopped, cache=None):
    transformers = require_transformers()
    ids, mask = left_pad(prompts, pad_id)
    ends = _RowEnds(ids.shape[1], eos_ids, stopped)
    greedy = transformers.GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                           eos_token_id=list(eos_ids), pad_token_id=pad_id,
                                           cache_implementation=cache)
    own, model.generation_config = model.generation_config, greedy  # no inherited sampling or penalties
    try:
        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                             generation_config=greedy, stopping_criteria=[ends])
    finally:
        model.generation_config = own
    new = out[:, ids.shape[1]:].tolist()
    lengths = ends.lengths or [None] * len(prompts)
    return [(row[:n], True) if n is not None else (row, False) for row, n in zip(new, lengths)]


def generate_ids(model, prompts, max_new_tokens, pad_id, eos_ids, batch_size=64, strategy=None,
                 stopped=None, progress=True, cache=None) -> list[tuple[list[int], bool]]:
    """Greedy new token ids for each prompt (lists of ids), with whether the row ended by itself.

    `stopped(new_ids)` may end a row early (a stop string); the ids then end with the token that
    completed it. Batches are planned as in `batched_generate` (`strategy`, `batch_size`). `cache`:
    transformers' cache_implementation (None: its default, a cache grown by concatenation; "static":
    preallocated, like the course's KVCache).
    """
    strategy = strategy or DEFAULT_STRATEGY
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    results = [None] * len(prompts)
    batches = plan_batches([len(p) for p in prompts], strategy, batch_size)
    for batch in tqdm(batches, desc=f"generate (transformers, {strategy})", disable=not progress, leave=False):
        outs = _generate_batch(model, [prompts[i] for i in batch], max_new_tokens, pad_id, eos_ids, stopped, cache)
        for i, out in zip(batch, outs):
            results[i] = out
    return results


# ---------------------------------------------------------------------------------------------
# the model the scorer consumes

@dataclass
class HFModel(Engine):
    """A transformers causal LM and its tokenizer: an engine (`lessons_lib.engine`) that
    `scoring.gsm8k_accuracy` scores like a course checkpoint, through `encode_question` and
    `generate` (transformers' `generate`, batched like `batched_generate`)."""
    model: Any
    tokenizer: Any
    prompt_format: str = "chat"
    examples: list = field(default_factory=list)  # the few-shot (question, solution) pairs
    name: str = ""
    info: dict = field(default_factory=dict)  # what a stage-table row records about this model
    meta: dict = field(default_factory=dict)  # like a course checkpoint's meta (stage, parent): empty
    eos_ids: list = field(default_factory=list)  # token ids that end an answer (`stop_token_ids`)
    stop_strings: tuple = ()  # text that ends an answer (few-shot: FEWSHOT_STOP)
    pad_id: int = 0
    weights: Path | None = None  # the weights file (or shard index) a row names
    weights_stats: dict = field(default_factory=dict)  # {each file loaded: its stat when hashed}

    @property
    def context_length(self) -> int:
        config = self.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9

    def prompt_text(self, question: str) -> str:
        """The exact text the model is given for `question` in this model's prompt format."""
        if self.prompt_format == "chat":
            return self.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                      add_generation_prompt=True)
        if self.prompt_format == "fewshot":
            return fewshot_prompt(question, self.examples)
        return question

    def encode_question(self, question: str) -> list[int]:
        """Token ids of `prompt_text`. A chat template writes its own BOS, so no special tokens are
        added to it (as `apply_chat_template(tokenize=True)` does); other formats get the tokenizer's."""
        text = self.prompt_text(question)
        return self.tokenizer(text, add_special_tokens=self.prompt_format != "chat")["input_ids"]

    def _stopped(self, new_ids) -> bool:
        """Does the end of a row's text hold a stop string? Checked after every token, so only the
        last few tokens can complete one (each token holds >= 1 byte of it)."""
        window = 2 * max(len(s) for s in self.stop_strings) + 8
        tail = self.tokenizer.decode(new_ids[-window:].tolist(), skip_special_tokens=False)
        return any(s in tail for s in self.stop_strings)

    def to_generation(self, ids, finished) -> Generation:
        """Decoded text (without the EOS, cut before a stop string) and the generated ids."""
        body = ids[:-1] if finished and ids and ids[-1] in self.eos_ids else ids
        text = cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), self.stop_strings)
        return Generation(text, list(ids), [False] * len(ids), bool(finished))

    def batched_generate(self, prompts, max_new_tokens=256, device=None, greedy=True, batch_size=64,
                         strategy=None, return_details=False, progress=True):
        """`lessons_lib.generation.batched_generate` for this model: same arguments, same results."""
        if not greedy:
            raise ValueError("the Hugging Face path decodes greedily only (the scorer's setting)")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt: encode questions with encode_question(...)")
        if device is not None:
            self.model.to(device)
        pairs = generate_ids(self.model, [list(p) for p in prompts], max_new_tokens, self.pad_id, self.eos_ids,
                             batch_size, strategy, self._stopped if self.stop_strings else None, progress)
        generations = [self.to_generation(ids, finished) for ids, finished in pairs]
        return generations if return_details else [g.text for g in generations]

    def generate(self, prompts, max_new_tokens=256, device=None, greedy=True, batch_size=64, strategy=None,
                 progress=True) -> list[Generation]:
        return self.batched_generate(prompts, max_new_tokens, device, greedy, batch_size, strategy, True, progress)


# ---------------------------------------------------------------------------------------------
# loading

def resolve_dtype(dtype: str, device) -> torch.dtype:
    """"auto": bfloat16 on CUDA (half the memory, tensor cores), float32 elsewhere."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        dtype = "bfloat16" if torch.device(device).type == "cuda" else "float32"
    return getattr(torch, dtype)


def weights_file(name, revision=None) -> Path:
    """The model's weights file (or shard index) in a local folder or the local hub cache: the
    file whose sha256 the stage-table row records."""
    folder = Path(name).expanduser()
    for candidate in WEIGHT_FILES:
        if folder.is_dir():
            path = folder / candidate
        else:
            from transformers.utils import cached_file  # resolves a hub id in the local cache
            found = cached_file(name, candidate, revision=revision, _raise_exceptions_for_missing_entries=False)
            path = Path(found) if found else None
        if path is not None and path.is_file():
            return path
    raise FileNotFoundError(f"found none of {', '.join(WEIGHT_FILES)} for {name}: is it a transformers model?")


def weights_files(main: Path) -> list[Path]:
    """Every file whose bytes are loaded: the weights file, or a shard index and each shard it lists
    (they sit beside the index, in a local folder as in the hub cache)."""
    if not main.name.endswith(".index.json"):
        return [main]
    try:
        shards = sorted(set(json.loads(main.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise FileNotFoundError(f"{main} is not a readable shard index ({e!r})") from None
    missing = [s for s in shards if not (main.parent / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{main} lists shards that are not there: {', '.join(missing[:3])}")
    return [main] + [main.parent / s for s in shards]


class WeightsChangedError(RuntimeError):
    """The weights files changed between hashing (before loading) and the end of scoring."""


def _stat_key(path: Path):
    st = path.stat()  # follows the hub cache's symlinks to the blobs
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def weights_digest(files) -> tuple[str, dict]:
    """(sha256, {file name: sha256}). One file: its own sha256 (what `sha256sum` prints). Several (an
    index and its shards): the sha256 of their `sha256sum` listing, one `hash  name` line per file
    sorted by name, so two different sets of shards never share a hash."""
    from .stage_table import file_sha256
    each = {f.name: file_sha256(f) for f in files}
    if len(files) == 1:
        return next(iter(each.values())), each
    listing = "".join(f"{h}  {name}\n" for name, h in sorted(each.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), each


def check_weights_unchanged(model) -> None:
    """Raise WeightsChangedError when a weights file differs from the bytes hashed before loading (a
    row would name weights that may not be the ones scored); FileNotFoundError when one is gone."""
    if all(_stat_key(f) == key for f, key in model.weights_stats.items()):
        return  # same size, time and inode: unchanged (cheap: no re-hash for a large model)
    sha, _ = weights_digest(list(model.weights_stats))
    if sha != model.info["ckpt_sha256"]:
        raise WeightsChangedError(f"the weights of {model.info['hf_model']} changed while they were scored "
                                  f"(sha256 {model.info['ckpt_sha256'][:12]}... before, {sha[:12]}... after); no row "
                                  f"written, it could name weights that were not the ones measured: score again "
                                  f"once nothing writes to them")


def load_hf_model(name, revision=None, dtype=None, device=None, prompt_format=None, fewshot_k=None) -> HFModel:
    """Load a causal LM and its tokenizer (hub id or local folder) for scoring.

    prompt_format: "chat" | "fewshot" | "plain"; None: chat when the tokenizer has a chat template,
    else fewshot (`fewshot_k` problems, default FEWSHOT_K). dtype: see `resolve_dtype` (None: "auto").
    device: None picks cuda, then mps, then cpu.
    """
    transformers = require_transformers()
    fewshot_k = FEWSHOT_K if fewshot_k is None else fewshot_k
    if prompt_format not in (None,) + PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    device = str(device or default_device())
    torch_dtype = resolve_dtype(dtype or "auto", device)
    weights = weights_file(name, revision)
    files = weights_files(weights)
    stats = {f: _stat_key(f) for f in files}  # before hashing: a change while hashing shows too
    sha, each = weights_digest(files)  # before loading: the row names the bytes that were loaded
    tokenizer = transformers.AutoTokenizer.from_pretrained(name, revision=revision)
    model = transformers.AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=torch_dtype)
    model = model.to(device).eval()
    fmt = prompt_format or ("chat" if tokenizer.chat_template else "fewshot")
    if fmt == "chat" and not tokenizer.chat_template:
        raise ValueError(f"{name} has no chat template: use prompt_format 'fewshot' (or 'plain') for a base model")
    eos_ids = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]  # any id: it is masked
    info = {"hf_model": str(name), "hf_revision": revision,
            "hf_commit": getattr(model.config, "_commit_hash", None),  # set when loaded from the hub
            "dtype": str(torch_dtype).removeprefix("torch."), "prompt_format": fmt,
            "fewshot_k": fewshot_k if fmt == "fewshot" else None,
            "transformers_version": transformers.__version__,
            "ckpt_sha256": sha, "weights_sha256": each if len(each) > 1 else None}
    fewshot = fmt == "fewshot"
    return HFModel(model, tokenizer, fmt, examples=fewshot_examples(fewshot_k) if fewshot else [],
                   name=Path(str(name).rstrip("/")).name, info=info, eos_ids=eos_ids,
                   stop_strings=FEWSHOT_STOP if fewshot else (), pad_id=pad_id, weights=weights,
                   weights_stats=stats)


# ---------------------------------------------------------------------------------------------
# a tiny real-architecture model, built offline (tests, notebook 10)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # Qwen2's template, no system prompt
_QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")  # Qwen2's pre-tokenizer: one digit per token


def tiny_tokenizer(vocab_size=512):
    """A Qwen2-style byte-level BPE tokenizer trained here on GSM8K text, with a ChatML template.
    Built like transformers' Qwen2Tokenizer (NFC, Qwen2's split, byte-level), so it loads back as one."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    transformers = require_transformers()
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in load_qa_pairs("gsm8k", "test", limit=400) + fewshot_examples(8)]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def save_tiny_model(folder, seed=0, hidden=64, layers=2, heads=4, kv_heads=2, vocab_size=512, init_std=0.3,
                    architecture="qwen2", tied=True):
    """Write a tiny random Qwen2 model + tokenizer to `folder` with `save_pretrained`: a real
    architecture (RoPE, RMSNorm, grouped-query attention, SwiGLU) that loads through `--hf` offline.

    Its generation_config carries sampling defaults and a repetition penalty, like many instruct
    models, so the tests can show the scorer ignores them. `init_std` is large on purpose: at
    GPT-2's 0.02 a random model repeats one token; at 0.3 its (meaningless) text varies.
    """
    transformers = require_transformers()
    tokenizer = tiny_tokenizer(vocab_size)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    Config, Model = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),  # llama: the course
                     "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[architecture]  # engine runs it
    config = Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        tie_word_embeddings=tied, initializer_range=init_std, bos_token_id=None,
        eos_token_id=end_of_turn, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Model(config)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=[end_of_turn, tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
        do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1)  # like an instruct model's
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def gpt2_from_course(gpt):
    """transformers' GPT2LMHeadModel holding the very weights of a course GPT (lessons_lib.model).

    The two are the same architecture: pre-LN blocks, learned positions, fused QKV with biases, a
    4x MLP, final LayerNorm, head tied to the token embedding. Two details to match: the course uses
    exact GELU (GPT-2's default is the tanh approximation, "gelu_new"), and GPT-2's Conv1D stores
    each weight as (in, out), the transpose of nn.Linear's (out, in)."""
    transformers = require_transformers()
    from .tokenizer import EOT, PAD
    c = gpt.config
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_seq_len, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        bos_token_id=EOT, eos_token_id=EOT, pad_token_id=PAD, tie_word_embeddings=True)
    hf = transformers.GPT2LMHeadModel(config).to(gpt.wte.weight.dtype)  # before loading: float64 stays float64
    sd = {"transformer.wte.weight": gpt.wte.weight, "transformer.wpe.weight": gpt.wpe.weight,
          "transformer.ln_f.weight": gpt.ln_f.weight, "transformer.ln_f.bias": gpt.ln_f.bias}
    for i, block in enumerate(gpt.blocks):
        pairs = {"ln_1": block.ln1, "ln_2": block.ln2, "attn.c_attn": block.attn.qkv, "attn.c_proj": block.attn.proj,
                 "mlp.c_fc": block.mlp.fc, "mlp.c_proj": block.mlp.proj}
        for name, module in pairs.items():
            is_linear = isinstance(module, torch.nn.Linear)
            sd[f"transformer.h.{i}.{name}.weight"] = module.weight.t() if is_linear else module.weight  # Conv1D: (in, out)
            sd[f"transformer.h.{i}.{name}.bias"] = module.bias
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith(".attn.bias") for k in missing), missing
    hf.tie_weights()
    return hf.eval()


def llama_to_transformers(llama):
    """transformers' LlamaForCausalLM holding the very weights of a course `llama.Llama`: the parameter
    names are the same, so the state dict loads as it is (the reference the tests compare against)."""
    transformers = require_transformers()
    c = llama.config
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
        head_dim=c.head_dim, max_position_embeddings=c.max_seq_len, rms_norm_eps=c.rms_eps,
        rope_theta=c.rope_theta, tie_word_embeddings=c.tie_embeddings, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=sorted(llama.tokenizer.stop_ids), pad_token_id=llama.tokenizer.pad_id)
    dtype = llama.lm_head.weight.dtype
    hf = transformers.LlamaForCausalLM(config)  # not on "meta": its rotary buffer must be real
    missing, unexpected = hf.load_state_dict(llama.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    hf.generation_config = transformers.GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    return hf.to(dtype).eval()


def engine_from_course_llama(llama, info=None, name="") -> HFModel:
    """The same model (same weights, tokenizer, template, prompt format) decoded by transformers'
    `generate`: `--engine transformers` for a .gguf file."""
    transformers = require_transformers()
    tok = llama.tokenizer
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, **tok.special_tokens)
    fast.chat_template = tok.chat_template
    model = llama_to_transformers(llama)
    return HFModel(model, fast, tok.prompt_format, examples=tok.examples, name=name, info=dict(info or {}),
                   eos_ids=sorted(tok.stop_ids), stop_strings=tok.stop_strings, pad_id=tok.pad_id)
