"""Score one checkpoint and append a row to a stage table; or render the table.

The seed's command line, kept:

    for s in base_pretrained sft dpo ppo grpo; do
      python scripts/eval_post_training.py --ckpt checkpoints/$s.pt --label $s --limit 200 \\
          --append logs/stage_table.jsonl
    done
    python scripts/eval_post_training.py --table logs/stage_table.jsonl

Each row records what is needed to trust and reproduce the number (checkpoint sha256, dataset, n,
settings, timing, library version, where the per-item records went). With per-item records saved
(`--records`, on by default next to the table) the table adds exact McNemar paired tests of each
stage against the row it started from (`--parent`, default: the checkpoint's own meta) and against a
compute-matched control (`--control`).

A real model: `--hf MODEL` (a Hugging Face hub id, a local folder written by `save_pretrained`, or a
`.gguf` file) scores any causal LM through the same records, rows and table (lessons_lib/real_model.py;
needs `pip install -e ".[hf]"`, and `gguf` for a .gguf). `--engine course` decodes a Llama-family model
with the course's own `batched_generate` (the default for Llama), `--engine transformers` with
transformers' `generate`. The engine, `--prompt_format` chat / fewshot / plain, `--fewshot_k`,
`--dtype` and `--revision` are recorded in the row:

    python scripts/eval_post_training.py --hf Qwen/Qwen2.5-0.5B-Instruct --label qwen-instruct \\
        --limit 200 --append logs/real.jsonl

Beyond one device: `torchrun --nproc_per_node N scripts/eval_post_training.py ...` shards the
questions across the N processes (gloo on CPU, NCCL on CUDA), gathers every record on rank 0, and
rank 0 writes exactly one row — the same row a single process would write.

Data safety (docs/reliability.md): arguments and every output file are checked before the model is
loaded; the records file can never be the table or another row's records; a row is appended on a
line of its own and fsynced; if it still cannot be written, it is printed so the result survives.

This file is the command only: the arguments are `lessons_lib/eval_args.py`, the work is
`lessons_lib/evaluation.py` (which `make table` also runs, in-process).
"""

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from lessons_lib.cli import cli_errors  # noqa: E402
from lessons_lib.eval_args import parse_args  # noqa: E402
from lessons_lib.evaluation import (LONG_PROMPTS_WARNING, add_printed_row, end_distributed, failures,  # noqa: E402
                                    run_scoring, show_table)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=LONG_PROMPTS_WARNING)  # the row line says it
    with cli_errors(*failures(table_only=bool(args.table or args.add_row))):
        try:
            show_table(args) if args.table else add_printed_row(args) if args.add_row else run_scoring(args)
        finally:
            end_distributed()


if __name__ == "__main__":
    main()
