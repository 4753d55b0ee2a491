"""`--hf MODEL`: one loader for every real model, whoever decodes it.

MODEL is a hub id (from the local hub cache), a folder written by `save_pretrained`, or a `.gguf`
file. `engine` chooses the decoder: "course" (the course's `batched_generate` on `llama.Llama`) or
"transformers" (`generate`, `hf_model.HFModel`); None: the course's engine where it runs the
architecture (`llama_weights.SUPPORTED`), else transformers. Either way the result is an
`engine.Engine` carrying `info` (what a stage-table row records: the engine, the weights' sha256, the
dtype they were dequantised/loaded to, the prompt format), `weights` and `weights_stats` (so the
scorer can tell whether the files changed while they were scored).
"""
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import default_device
from .engine import CourseEngine
from .hf_model import (FEWSHOT_K, PROMPT_FORMATS, _stat_key, engine_from_course_llama, fewshot_examples,
                       load_hf_model, resolve_dtype, weights_digest, weights_file, weights_files)
from .llama_weights import SUPPORTED, architecture, load_folder, load_gguf

ENGINES = ("course", "transformers")


class RealModelError(ValueError):
    """MODEL cannot be loaded as asked (no such model, an architecture the engine does not run, a
    missing package): the scorer prints the message as one `error:` line."""


@dataclass
class CourseLlamaEngine(CourseEngine):
    """A real model decoded by the course's engine, with what its row records."""
    info: dict = field(default_factory=dict)
    weights: Path | None = None
    weights_stats: dict = field(default_factory=dict)


def model_folder(name, revision=None) -> Path:
    """A folder holding config.json: `name` itself, or its snapshot in the local hub cache."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    from transformers.utils import cached_file
    found = cached_file(name, "config.json", revision=revision, _raise_exceptions_for_missing_entries=False)
    if not found:
        raise RealModelError(f"--hf {name}: not a folder, a .gguf file, or a model in the local hub cache")
    return Path(found).parent


def choose_engine(arch: str, engine: str | None, gguf: bool) -> str:
    if engine not in (None,) + ENGINES:
        raise RealModelError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "course" and arch not in SUPPORTED:
        raise RealModelError(f"the course's engine runs {', '.join(SUPPORTED)} models, this one is {arch!r}: "
                         f"use --engine transformers")
    if gguf and arch not in SUPPORTED:
        raise RealModelError(f"the course reads {', '.join(SUPPORTED)} GGUF files; this one holds {arch!r}")
    return engine or ("course" if arch in SUPPORTED else "transformers")


def load_real_model(name, engine=None, revision=None, dtype=None, device=None, prompt_format=None,
                    fewshot_k=None):
    """Load MODEL for scoring (see the module docstring)."""
    if prompt_format not in (None,) + PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    gguf = str(name).endswith(".gguf")
    if gguf and not Path(name).is_file():
        raise RealModelError(f"--hf {name}: no such .gguf file")
    folder = Path(name) if gguf else model_folder(name, revision)
    try:
        arch = architecture(folder)
    except ImportError as e:  # the gguf package
        raise RealModelError(str(e)) from None
    except FileNotFoundError:
        raise RealModelError(f"--hf {name}: no config.json there; is it a transformers model?") from None
    engine = choose_engine(arch, engine, gguf)
    if engine == "transformers" and not gguf:
        model = load_hf_model(name, revision, dtype, device, prompt_format, fewshot_k)
        model.info.update(engine="transformers", architecture=arch)
        return model
    device = str(device or default_device())
    torch_dtype = resolve_dtype(dtype or "auto", device)
    weights = Path(name) if gguf else weights_file(folder)
    files = weights_files(weights)
    stats = {f: _stat_key(f) for f in files}  # before hashing: a change while hashing shows too
    sha, each = weights_digest(files)  # before loading: the row names the bytes that were loaded
    fewshot_k = FEWSHOT_K if fewshot_k is None else fewshot_k
    examples = fewshot_examples(fewshot_k) if prompt_format == "fewshot" else ()
    if gguf:
        model, extra = load_gguf(name, torch_dtype, prompt_format, examples)
    elif any(f.suffix == ".safetensors" for f in files):
        model, extra = load_folder(folder, files, torch_dtype, prompt_format, examples)
    else:
        raise RealModelError(f"--hf {name}: the course's engine reads safetensors weights, this folder has "
                             f"{weights.name}: use --engine transformers")
    fmt = model.tokenizer.prompt_format
    info = {"hf_model": str(name), "hf_revision": revision, "engine": engine,
            "dtype": str(torch_dtype).removeprefix("torch."), "prompt_format": fmt,
            "fewshot_k": fewshot_k if fmt == "fewshot" else None,
            "ckpt_sha256": sha, "weights_sha256": each if len(each) > 1 else None, **extra}
    if engine == "transformers":  # a .gguf decoded by transformers: the same weights, tokenizer and template
        import transformers
        hf = engine_from_course_llama(model, {**info, "transformers_version": transformers.__version__},
                                      Path(name).stem)
        hf.model.to(device)
        hf.weights, hf.weights_stats = weights, stats
        return hf
    return CourseLlamaEngine(model.to(device), info, weights, stats)
