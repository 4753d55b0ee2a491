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

A real model: `--hf MODEL` (a Hugging Face hub id or a local folder written by `save_pretrained`)
scores any causal LM through the same records, rows and table (lessons_lib/hf_model.py; needs
`pip install -e ".[hf]"`). `--prompt_format` chat / fewshot / plain, `--fewshot_k`, `--dtype`
and `--revision` are recorded in the row:

    python scripts/eval_post_training.py --hf Qwen/Qwen2.5-0.5B-Instruct --label qwen-instruct \\
        --limit 200 --append logs/real.jsonl

Beyond one device: `torchrun --nproc_per_node N scripts/eval_post_training.py ...` shards the
questions across the N processes (gloo on CPU, NCCL on CUDA), gathers every record on rank 0, and
rank 0 writes exactly one row — the same row a single process would write.
"""

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from lessons_lib.stage_table import (StageTableError, append_row, make_row, read_rows, render_table,
                                     write_records)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Score a checkpoint on GSM8K-format questions (greedy) and "
                                "append one row to a stage table, or render that table.",
                                epilog="example: eval_post_training.py --ckpt checkpoints/sft.pt --label sft "
                                "--limit 200 --append logs/stage_table.jsonl; then --table logs/stage_table.jsonl")
    p.add_argument("--ckpt", help="checkpoint to score (a .pt written by lessons_lib.save_checkpoint)")
    p.add_argument("--hf", metavar="MODEL", help="score a Hugging Face causal LM instead: a hub id or a local "
                   "folder from save_pretrained (needs: pip install -e '.[hf]')")
    p.add_argument("--revision", default=None, help="with --hf: hub branch, tag or commit to load")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16", "float64"],
                   help="with --hf: weights dtype (default auto: bfloat16 on CUDA, float32 elsewhere)")
    p.add_argument("--prompt_format", default=None, choices=["chat", "fewshot", "plain"],
                   help="with --hf: chat = the model's chat template (default when it has one); fewshot = K "
                        "GSM8K train problems as 'Question: ...\\nAnswer: ...' (lm-evaluation-harness' gsm8k; "
                        "default without a template); plain = the question alone")
    p.add_argument("--fewshot_k", type=int, default=None, help="with --prompt_format fewshot: problems shown (default 5)")
    p.add_argument("--label", help="row name in the table, e.g. sft (default: the checkpoint's file stem)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N questions (default: all)")
    p.add_argument("--append", metavar="FILE.jsonl", help="append the row to this stage-table JSONL")
    p.add_argument("--table", metavar="FILE.jsonl", help="render the table in this JSONL and exit "
                   "(a label appended twice: the latest row wins, and the table says so)")
    p.add_argument("--markdown", action="store_true", help="with --table: print Markdown instead of plain text")
    p.add_argument("--plot", metavar="FILE.png", help="with --table: also save a bar plot with 95%% intervals")
    p.add_argument("--dataset", choices=["synthetic", "gsm8k"], default="gsm8k",
                   help="gsm8k (default): real GSM8K via lessons_lib.load_qa_pairs (GSM8K_DIR or `datasets`); "
                        "synthetic: the course's held-out GSM8K-format set (test = 500 problems)")
    p.add_argument("--split", default="test", help="dataset split to score (default: test)")
    p.add_argument("--max_new_tokens", type=int, default=256, help="generation budget per answer (default: 256)")
    p.add_argument("--batch_size", type=int, default=64, help="prompts decoded together (default: 64)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available; "
                   "under torchrun on CUDA each rank uses cuda:LOCAL_RANK)")
    p.add_argument("--strategy", choices=["bucket", "pad", "sequential"], default=None,
                   help="batching strategy of batched_generate (default: the fastest exact one)")
    p.add_argument("--records", metavar="PATH.jsonl", default=None,
                   help="where to save per-item records (default with --append: "
                        "<table dir>/records/<table stem>/<label>.jsonl); 'none' to skip")
    p.add_argument("--parent", metavar="LABEL", default=None,
                   help="label of the row this stage started from, for the paired test "
                        "(default: the checkpoint's meta 'parent', if any)")
    p.add_argument("--control", metavar="LABEL", default=None,
                   help="label of a compute-matched control row to also pair-test against (e.g. sft_continued)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1 — the course's tiny models decode fastest on one thread; "
                        "several threads on tiny matmuls mostly wait on each other, badly so on a busy CPU)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if not args.table and not args.ckpt and not args.hf:
        p.error("give --ckpt PATH to score a checkpoint, --hf MODEL to score a Hugging Face model, "
                "or --table FILE.jsonl to render a table")
    if args.ckpt and args.hf:
        p.error("give --ckpt or --hf, not both")
    hf_only = [f"--{f}" for f in ("revision", "dtype", "prompt_format", "fewshot_k") if getattr(args, f) is not None]
    if hf_only and not args.hf:
        p.error(f"{', '.join(hf_only)} only apply to --hf models")
    return args


# ---------------------------------------------------------------------------------------------
# torchrun: one shard of the questions per process

def dist_setup(device):
    """(rank, world, device). Starts a process group only when launched by torchrun (WORLD_SIZE>1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch
    import torch.distributed as dist
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), world, device or "cpu"


def shard(items, rank, world):
    """Contiguous slice `rank` of `world`, and its start index (so record indices stay global)."""
    per = -(-len(items) // world)  # ceil division: every item lands in exactly one shard
    start = min(rank * per, len(items))
    return items[start:start + per], start


def gather(obj, world):
    """Every rank's `obj` as a list in rank order (identity when not distributed)."""
    if world == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# scoring

def score_checkpoint(model, qa_pairs, args, rank=0, world=1, device=None):
    """Score this rank's shard, gather all shards: (records in question order, generated tokens, seconds)."""
    from lessons_lib.scoring import score_model
    mine, start = shard(qa_pairs, rank, world)
    t0 = time.perf_counter()
    _, records = score_model(model, mine, max_new_tokens=args.max_new_tokens, device=device,
                             greedy=True, batch_size=args.batch_size, strategy=args.strategy,
                             progress=not args.no_progress and rank == 0)
    for r in records:
        r["index"] += start  # position in the full question list, not in this shard
    gathered = gather((records, time.perf_counter() - t0), world)
    records = [r for recs, _ in gathered for r in recs]
    seconds = max(s for _, s in gathered)  # wall time = the slowest rank
    return records, sum(r["n_tokens"] for r in records), seconds


def save_records(args, label, records):
    """Write the per-item records where --records says (default: next to the --append table);
    return the path, or None when they are not saved."""
    path = args.records
    if path is None and args.append:
        table, safe = Path(args.append), re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        path = table.parent / "records" / table.stem / f"{safe}.jsonl"
    if not path or str(path).lower() == "none":
        return None
    write_records(path, records)
    return path


def load_model(args, device):
    """(model, default label, what the row records about it): the one place where a course checkpoint
    and a Hugging Face model (--hf) differ in this script; the scorer takes either."""
    if args.hf:
        from lessons_lib.hf_model import load_hf_model
        model = load_hf_model(args.hf, args.revision, args.dtype, device, args.prompt_format, args.fewshot_k)
        return model, model.name, {"ckpt": model.weights, **model.info}  # ckpt: the weights file, hashed
    from lessons_lib.checkpoint import load_checkpoint
    return load_checkpoint(args.ckpt, device=device), Path(args.ckpt).stem, {"ckpt": args.ckpt}


def run_scoring(args) -> dict | None:
    """Load, score and (on rank 0) print and append the row. Returns the row on rank 0, else None."""
    from lessons_lib.data import load_qa_pairs
    from lessons_lib.generation import DEFAULT_STRATEGY
    import torch
    torch.set_num_threads(args.threads)  # per process (under torchrun: per rank)
    rank, world, device = dist_setup(args.device)
    model, default_label, identity = load_model(args, device)
    label = args.label or default_label
    qa_pairs = load_qa_pairs(args.dataset, args.split, limit=args.limit)
    records, tokens, seconds = score_checkpoint(model, qa_pairs, args, rank, world, device)
    if rank != 0:
        return None
    row = make_row(label, records, **identity, dataset=args.dataset, split=args.split,
                   max_new_tokens=args.max_new_tokens, strategy=args.strategy or DEFAULT_STRATEGY,
                   seconds=seconds, generated_tokens=tokens, records_path=save_records(args, label, records),
                   parent=args.parent or model.meta.get("parent"), control=args.control,
                   stage=model.meta.get("stage"), world_size=world,
                   skipped=sum("skipped" in r for r in records))  # prompts with no room in the context
    if args.append:
        append_row(args.append, row)
    print(f"{label}: {row['correct']}/{row['n']} = {100 * row['accuracy']:.1f}% on {args.dataset}/{args.split} "
          f"({seconds:.1f}s, {row['tokens_per_s']} tok/s)" + (f" -> {args.append}" if args.append else "")
          + (f"  [{row['skipped']} prompts too long for the context: counted wrong]" if row["skipped"] else ""))
    return row


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=r"\d+ of \d+ prompts are longer")  # the row line says it
    if args.table:
        try:
            rows = read_rows(args.table)
        except StageTableError as e:
            sys.exit(f"error: {e}")
        print(render_table(rows, markdown=args.markdown))
        if args.plot:
            from lessons_lib.stage_table import plot_stage_accuracy
            plot_stage_accuracy(rows, args.plot)
        return
    from lessons_lib.hf_model import HFUnavailableError  # importable without transformers
    try:
        run_scoring(args)
    except HFUnavailableError as e:  # --hf without transformers: one line saying what to install
        sys.exit(f"error: {e}")
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    main()
