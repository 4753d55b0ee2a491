"""lessons_lib: the real code behind the GSM8K post-training course.

Every public name below lives in exactly one flat module (one concern per file); this package just
re-exports them so notebooks and scripts can write `from lessons_lib import load_checkpoint`.
The table says where to read each one:
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {  # name -> module that defines it
    # tokenizer and chat template
    "encode": "tokenizer", "decode": "tokenizer", "encode_prompt": "tokenizer",
    "encode_conversation": "tokenizer",
    # the model and its checkpoints
    "GPT": "model", "GPTConfig": "model", "KVCache": "attention",
    "Llama": "llama", "LlamaConfig": "llama", "load_real_model": "real_model",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "CheckpointError": "checkpoint", "default_device": "checkpoint",
    # generation, with GSM8K's calculator
    "batched_generate": "generation", "Generation": "generation",
    "evaluate_expression": "calculator", "format_result": "calculator",
    "calculator_forced_mask": "calculator", "calculator_forced_byte_mask": "calculator",
    # data: real GSM8K and the synthetic practice set
    "load_qa_pairs": "data", "solution_with_answer_tag": "data",
    "DatasetUnavailableError": "data", "DatasetFormatError": "data",
    "synthetic_qa_pairs": "synthetic", "run_sanity_check": "check_verifier",
    # scoring and the stage table
    "gsm8k_accuracy": "scoring", "failure_category": "scoring",
    "wilson_interval": "stats", "mcnemar_exact": "stats",
    "read_rows": "stage_table", "render_table": "stage_table", "plot_stage_accuracy": "plots",
    # training
    "MetricsLogger": "metrics",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):  # imported on first use, so `import lessons_lib` stays fast and light
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lessons_lib' has no attribute {name!r}")
    value = getattr(import_module(f"lessons_lib.{_PUBLIC[name]}"), name)
    globals()[name] = value  # cache: the next lookup is a plain attribute
    return value


def __dir__():
    return __all__
