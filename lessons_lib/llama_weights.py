"""Load a Llama-family model into the course's engine (`llama.Llama`) from a GGUF file or a Hugging
Face folder, with its own tokenizer and chat template (`bpe.ChatTokenizer`).

* GGUF (llama.cpp's one-file format, e.g. SmolLM2-135M-Instruct.Q4_1.gguf): the config comes from
  the file's metadata, each tensor is dequantised with the `gguf` package (Q4_1 blocks of 32 weights
  -> float32), and the query/key rows are put back in transformers' order (llama.cpp's converter
  permutes them for its own rotary layout; `unpermute` undoes it).
* A Hugging Face folder (config.json + model.safetensors, as `save_pretrained` writes): the weights
  load by name, the parameter names being transformers' own.

`architecture(path)` says which architecture a file or folder holds, so the scorer can choose the
course's engine where it runs that architecture (`SUPPORTED`) and transformers elsewhere.
"""
import json
from pathlib import Path

import torch

from .bpe import ChatTokenizer, bpe_from_gguf, folder_template, special_token_strings
from .llama import Llama, LlamaConfig

SUPPORTED = ("llama",)  # GGUF general.architecture / config.json model_type the course's engine runs
GGUF_INSTALL = "reading a .gguf file needs the `gguf` package: pip install gguf"
_GGUF_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}


def _reader(path):
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise ImportError(GGUF_INSTALL) from e
    return GGUFReader(str(path))


def gguf_fields(reader) -> dict:
    """Every metadata field of a GGUF file as a plain Python value (strings, numbers, lists)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def architecture(path) -> str:
    """"llama", "qwen2", ...: a .gguf's general.architecture, a folder's (or hub cache's) model_type."""
    path = Path(path)
    if path.suffix == ".gguf":
        return gguf_fields(_reader(path))["general.architecture"]
    return json.loads((path / "config.json").read_text()).get("model_type", "?")


def config_from_gguf(f: dict) -> LlamaConfig:
    arch = f["general.architecture"]
    if arch not in SUPPORTED:
        raise ValueError(f"the GGUF holds a {arch!r} model; the course's engine runs {', '.join(SUPPORTED)} "
                         f"(use --engine transformers)")
    if f.get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise ValueError(f"the GGUF's RoPE scaling {f[f'{arch}.rope.scaling.type']!r} is not in the course's engine")
    heads = f[f"{arch}.attention.head_count"]
    return LlamaConfig(
        vocab_size=f.get(f"{arch}.vocab_size") or len(f["tokenizer.ggml.tokens"]), n_layer=f[f"{arch}.block_count"],
        n_head=heads, n_kv_head=f.get(f"{arch}.attention.head_count_kv", heads), n_embd=f[f"{arch}.embedding_length"],
        intermediate_size=f[f"{arch}.feed_forward_length"], max_seq_len=f[f"{arch}.context_length"],
        rope_theta=float(f.get(f"{arch}.rope.freq_base", 10000.0)),
        rms_eps=float(f[f"{arch}.attention.layer_norm_rms_epsilon"]),
        head_dim=f.get(f"{arch}.attention.key_length"), tie_embeddings=True)  # untied: set when output.weight exists


def unpermute(w, n_head):
    """Undo llama.cpp's permutation of q/k rows (HF: the two halves of each head; llama.cpp:
    interleaved pairs), so the rotary pairing is transformers' `rotate_half`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(gguf_name: str) -> str:
    if gguf_name in ("token_embd.weight", "output_norm.weight", "output.weight"):
        return {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}[gguf_name]
    _, layer, part, kind = gguf_name.split(".")
    return f"model.layers.{layer}.{_GGUF_NAMES[part]}.{kind}"


def gguf_state_dict(reader, config: LlamaConfig, dtype) -> tuple[dict, dict]:
    """(state dict under transformers' names, {quantisation type: tensor count}), dequantised to `dtype`."""
    from gguf.quants import dequantize
    state, types = {}, {}
    for t in reader.tensors:
        if t.name.startswith("rope_"):  # rope_freqs: precomputed frequencies, recomputed by the model
            continue
        w = torch.from_numpy(dequantize(t.data, t.tensor_type).reshape(tuple(int(n) for n in reversed(t.shape))).copy())
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, config.n_head)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute(w, config.n_kv_head)
        state[_hf_name(t.name)] = w.to(dtype)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return state, types


def _build(config, state, tokenizer, dtype) -> Llama:
    config.tie_embeddings = "lm_head.weight" not in state  # GGUF: no output.weight means tied
    with torch.device("meta"):  # no random init of 135M weights that are overwritten at once
        model = Llama(config, tokenizer)
    if config.tie_embeddings:
        state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight  # assign=True replaced the shared Parameter
    return model.eval()


def load_gguf(path, dtype=torch.float32, prompt_format=None, examples=()) -> tuple[Llama, dict]:
    """(model, what a row records about it: architecture, quantisation) from a .gguf file."""
    reader = _reader(path)
    fields = gguf_fields(reader)
    config = config_from_gguf(fields)
    state, types = gguf_state_dict(reader, config, dtype)
    tokens = fields["tokenizer.ggml.tokens"]
    special = {name: tokens[fields[f"tokenizer.ggml.{name}_id"]] for name in ("bos_token", "eos_token")
               if fields.get(f"tokenizer.ggml.{name}_id") is not None}
    eos = [fields[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in fields]
    tokenizer = ChatTokenizer(bpe_from_gguf(fields), fields.get("tokenizer.chat_template"), eos,
                              fields.get("tokenizer.ggml.padding_token_id"), special, prompt_format, examples)
    model = _build(config, state, tokenizer, dtype)
    return model, {"architecture": fields["general.architecture"], "gguf_tensor_types": types,
                   "gguf_name": fields.get("general.name")}


def config_from_folder(c: dict) -> LlamaConfig:
    if c.get("model_type") not in SUPPORTED:
        raise ValueError(f"{c.get('model_type')!r} models are not in the course's engine (use --engine transformers)")
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}  # transformers 5 / 4 spell it differently
    unsupported = [k for k in ("attention_bias", "mlp_bias") if c.get(k)] + \
        ([f"rope_type {rope.get('rope_type')}"] if rope.get("rope_type", "default") != "default" else []) + \
        ([f"hidden_act {c['hidden_act']}"] if c.get("hidden_act", "silu") != "silu" else [])
    if unsupported:
        raise ValueError(f"this Llama uses {', '.join(unsupported)}, which the course's engine does not "
                         f"implement (use --engine transformers)")
    return LlamaConfig(
        vocab_size=c["vocab_size"], n_layer=c["num_hidden_layers"], n_head=c["num_attention_heads"],
        n_kv_head=c.get("num_key_value_heads") or c["num_attention_heads"], n_embd=c["hidden_size"],
        intermediate_size=c["intermediate_size"], max_seq_len=c["max_position_embeddings"],
        rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))), rms_eps=c.get("rms_norm_eps", 1e-6),
        head_dim=c.get("head_dim"), tie_embeddings=c.get("tie_word_embeddings", False))


def _folder_eos(folder: Path, config: dict, tokenizer) -> list[int]:
    """EOS ids as transformers finds them: generation_config.json's, config.json's, the tokenizer's."""
    generation = folder / "generation_config.json"
    sources = [config.get("eos_token_id"), json.loads(generation.read_text()).get("eos_token_id")
               if generation.is_file() else None]
    ids = set()
    for s in sources:
        ids |= set(s if isinstance(s, list) else [s])
    eos = special_token_strings(folder).get("eos_token")
    ids.add(tokenizer.token_to_id(eos) if eos else None)
    return sorted(i for i in ids if i is not None)


def load_folder(folder, weights, dtype=torch.float32, prompt_format=None, examples=()) -> tuple[Llama, dict]:
    """(model, row info) from a transformers folder: config.json, `weights` (safetensors files), tokenizer."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    config = config_from_folder(raw)
    state = {}
    for f in weights:
        if f.suffix != ".safetensors":
            continue  # the shard index itself
        state.update(load_file(str(f)))
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    bpe = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = special_token_strings(folder).get("pad_token")
    tokenizer = ChatTokenizer(bpe, folder_template(folder), _folder_eos(folder, raw, bpe),
                              bpe.token_to_id(pad) if pad else None, special_token_strings(folder), prompt_format,
                              examples)
    return _build(config, state, tokenizer, dtype), {"architecture": raw["model_type"]}
