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

Data safety (docs/reliability.md): arguments and every output file are checked before the model is
loaded; the records file can never be the table or another row's records; a row is appended on a
line of its own and fsynced; if it still cannot be written, it is printed so the result survives.
"""

import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from lessons_lib.cli import (ArgumentParser, UsageError, check_device, check_writable, cli_errors,  # noqa: E402
                             positive_int)
from lessons_lib.data import GSM8K_SPLITS, DatasetFormatError, DatasetUnavailableError  # noqa: E402
from lessons_lib.stage_table import (StageTableError, append_row, default_records_path, make_row,  # noqa: E402
                                     read_rows, records_problem, render_table, resolve_path, write_records)

SPLITS = {"gsm8k": GSM8K_SPLITS, "synthetic": ("train", "dev", "test")}


def parse_args(argv=None):
    p = ArgumentParser(description="Score a checkpoint on GSM8K-format questions (greedy) and "
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
    p.add_argument("--limit", type=positive_int, default=None, help="score only the first N questions (default: all)")
    p.add_argument("--append", metavar="FILE.jsonl", help="append the row to this stage-table JSONL")
    p.add_argument("--table", metavar="FILE.jsonl", help="render the table in this JSONL and exit "
                   "(a label appended twice: the latest row wins, and the table says so)")
    p.add_argument("--markdown", action="store_true", help="with --table: print Markdown instead of plain text")
    p.add_argument("--plot", metavar="FILE.png", help="with --table: also save a bar plot with 95%% intervals")
    p.add_argument("--dataset", choices=["synthetic", "gsm8k"], default="gsm8k",
                   help="gsm8k (default): real GSM8K via lessons_lib.load_qa_pairs (GSM8K_DIR or `datasets`); "
                        "synthetic: the course's held-out GSM8K-format set (test = 500 problems)")
    p.add_argument("--split", default="test", help="dataset split to score (default: test)")
    p.add_argument("--max_new_tokens", type=positive_int, default=256, help="generation budget per answer (default: 256)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="prompts decoded together (default: 64)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available; "
                   "under torchrun on CUDA each rank uses cuda:LOCAL_RANK)")
    p.add_argument("--strategy", choices=["bucket", "pad", "sequential"], default=None,
                   help="batching strategy of batched_generate (default: the fastest exact one)")
    p.add_argument("--records", metavar="PATH.jsonl", default=None,
                   help="where to save per-item records (default with --append: "
                        "<table dir>/records/<table file>/<dataset>/<split>/<label>-<hash>.jsonl); 'none' to skip")
    p.add_argument("--parent", metavar="LABEL", default=None,
                   help="label of the row this stage started from, for the paired test "
                        "(default: the checkpoint's meta 'parent', if any)")
    p.add_argument("--control", metavar="LABEL", default=None,
                   help="label of a compute-matched control row to also pair-test against (e.g. sft_continued)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default: 1 — the course's tiny models decode fastest on one thread; "
                        "several threads on tiny matmuls mostly wait on each other, badly so on a busy CPU)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    try:
        validate_args(args)
    except UsageError as e:
        p.error(str(e))  # one line, exit status 2
    return args


def validate_args(args) -> None:
    """Usage checks that need neither the model nor the data (raise UsageError)."""
    if args.table:
        if not Path(args.table).is_file():
            raise UsageError(f"--table {args.table}: no such file (score a checkpoint with --append {args.table} first)")
        if args.plot:
            check_plot_path(args.plot)
        return
    if not args.ckpt and not args.hf:
        raise UsageError("give --ckpt PATH to score a checkpoint, --hf MODEL to score a Hugging Face model, "
                         "or --table FILE.jsonl to render a table")
    if args.ckpt and args.hf:
        raise UsageError("give --ckpt or --hf, not both")
    hf_only = [f"--{f}" for f in ("revision", "dtype", "prompt_format", "fewshot_k") if getattr(args, f) is not None]
    if hf_only and not args.hf:
        raise UsageError(f"{', '.join(hf_only)} only apply to --hf models")
    if args.fewshot_k is not None and args.fewshot_k < 1:
        raise UsageError(f"--fewshot_k {args.fewshot_k}: show at least one example")
    if args.plot or args.markdown:
        raise UsageError("--plot and --markdown go with --table FILE.jsonl (render the table after scoring)")
    if args.ckpt and not Path(args.ckpt).is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such file (build the course's with `make checkpoints`)")
    if args.label is not None and not args.label.strip():
        raise UsageError("--label is empty: name the row, e.g. --label sft")
    if args.split not in SPLITS[args.dataset]:
        raise UsageError(f"--split {args.split!r}: {args.dataset} has the splits {', '.join(SPLITS[args.dataset])}")
    check_device(args.device)


def check_plot_path(path) -> None:
    """--plot must name a writable file in an existing folder, in a format matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise UsageError(f"--plot {path}: end the name with one of .{', .'.join(sorted(formats))} (e.g. .png)")
    check_writable(path, "--plot", make_dirs=False)


# ---------------------------------------------------------------------------------------------
# output destinations: all checked before the model is loaded

def check_outputs(args, label):
    """Check every file this run will write, before anything is loaded; return the records path
    (None: no records). The table must be a table, and the records file can be neither the table
    nor another row's records, nor any other existing file that is not a records file."""
    rows = []
    if args.append:
        check_writable(args.append, "--append")
        rows = existing_rows(args.append)
    records = records_destination(args, label)
    if records is None:
        return None
    check_writable(records, "--records")  # first: a name too long can't even be looked up
    if args.append and records.resolve() == Path(args.append).resolve():
        raise UsageError(f"--records {records} is the table itself: records need a file of their own "
                         f"(leave --records out for the default)")
    problem = records_problem(records)
    if problem:
        raise UsageError(f"--records {records} exists and is not a records file ({problem}); "
                         f"refusing to overwrite it: choose another path")
    for row in rows:
        key = (row.get("dataset"), row.get("split"), row["label"])
        if row.get("records") and resolve_path(row["records"]).resolve() == records.resolve() \
                and key != (args.dataset, args.split, label):
            raise UsageError(f"--records {records} holds the records of row {row['label']!r} "
                             f"({key[0]}/{key[1]}); overwriting them would break its paired tests: choose another path")
    return records


def existing_rows(table) -> list[dict]:
    """The rows already in --append's file ([] when new or empty); refuse a file that is not a table."""
    if not Path(table).exists() or Path(table).stat().st_size == 0:
        return []
    try:
        return read_rows(table)  # damaged lines: a warning each, the rows are kept
    except StageTableError as e:
        raise UsageError(f"--append {table} is not a stage table ({e}); choose another file") from None


def records_destination(args, label):
    """Where the per-item records go: --records, else the default beside the --append table, else None."""
    if args.records is not None:
        return None if args.records.lower() == "none" else Path(args.records)
    if args.append:
        return default_records_path(args.append, args.dataset, args.split, label)
    return None


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


def save_records(path, records):
    """Write the per-item records; on failure keep going without them (the row matters more)."""
    if path is None:
        return None
    try:
        write_records(path, records)
        return path
    except OSError as e:
        warnings.warn(f"could not write the records to {path} ({e.strerror or e}); "
                      f"the row is kept without them (no paired tests for it)")
        return None


def save_row(table, row) -> None:
    """Append the row; if that fails after all, print it: a measured result is never lost."""
    try:
        append_row(table, row)
    except OSError as e:
        print(json.dumps(row), flush=True)
        raise OSError(f"could not append the row to {table} ({e.strerror or e}); it is printed above "
                      f"as one JSON line: add it to the table by hand, on a line of its own") from e


def default_label(args) -> str:
    """The row's name when --label is not given: the checkpoint's file stem, or the model folder's name."""
    return Path(args.ckpt).stem if args.ckpt else Path(str(args.hf).rstrip("/")).name


def load_model(args, device):
    """(model, what the row records about it): the one place where a course checkpoint and a Hugging
    Face model (--hf) differ in this script; the scorer takes either."""
    if args.hf:
        from lessons_lib.hf_model import load_hf_model
        model = load_hf_model(args.hf, args.revision, args.dtype, device, args.prompt_format, args.fewshot_k)
        return model, {"ckpt": model.weights, **model.info}  # ckpt: the weights file, hashed
    from lessons_lib.checkpoint import load_checkpoint
    model = load_checkpoint(args.ckpt, device=device)
    return model, {"ckpt": args.ckpt, "ckpt_sha256": model.sha256}  # the bytes that were loaded


LONG_PROMPTS_WARNING = r"\d+ of \d+ prompts are longer"  # batched_generate's; counted in the row instead


def run_scoring(args) -> dict | None:
    """Load, score and (on rank 0) print and append the row. Returns the row on rank 0, else None."""
    from lessons_lib.data import load_qa_pairs
    from lessons_lib.generation import DEFAULT_STRATEGY
    import torch
    torch.set_num_threads(args.threads)  # per process (under torchrun: per rank)
    rank, world, device = dist_setup(args.device)
    label = args.label or default_label(args)
    records_file = check_outputs(args, label)  # before anything is loaded: no result lost at the end
    qa_pairs = load_qa_pairs(args.dataset, args.split, limit=args.limit)  # golds checked here
    model, identity = load_model(args, device)
    records, tokens, seconds = score_checkpoint(model, qa_pairs, args, rank, world, device)
    if rank != 0:
        return None
    row = make_row(label, records, **identity, dataset=args.dataset, split=args.split,
                   max_new_tokens=args.max_new_tokens, strategy=args.strategy or DEFAULT_STRATEGY,
                   seconds=seconds, generated_tokens=tokens, records_path=save_records(records_file, records),
                   parent=args.parent or model.meta.get("parent"), control=args.control,
                   stage=model.meta.get("stage"), world_size=world,
                   skipped=sum("skipped" in r for r in records))  # prompts with no room in the context
    if args.append:
        save_row(args.append, row)
    print(f"{label}: {row['correct']}/{row['n']} = {100 * row['accuracy']:.1f}% on {args.dataset}/{args.split} "
          f"({seconds:.1f}s, {row['tokens_per_s']} tok/s)" + (f" -> {args.append}" if args.append else "")
          + (f"  [{row['skipped']} prompts too long for the context: counted wrong]" if row["skipped"] else ""))
    return row


def run_scorings(argvs: list[list[str]]) -> None:
    """Several scorings one after another, in this process (`make table` runs one such list per worker)."""
    warnings.filterwarnings("ignore", message=LONG_PROMPTS_WARNING)  # the row line says it
    for argv in argvs:
        run_scoring(parse_args(argv))


def show_table(args) -> None:
    rows = read_rows(args.table)
    if not rows:
        raise StageTableError(f"{args.table} has no rows yet: score a checkpoint with --append {args.table}")
    print(render_table(rows, markdown=args.markdown))
    if args.plot:
        from lessons_lib.stage_table import plot_stage_accuracy
        plot_stage_accuracy(rows, args.plot)


def failures(table_only=False) -> tuple:
    """The errors that are the user's data or files, not bugs: one `error:` line, exit status 1."""
    found = (StageTableError, DatasetFormatError, DatasetUnavailableError)
    if table_only:
        return found  # rendering a table never imports torch
    from lessons_lib.checkpoint import CheckpointError
    from lessons_lib.hf_model import HFUnavailableError  # importable without transformers
    return found + (CheckpointError, HFUnavailableError)  # --hf without transformers: what to install


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=LONG_PROMPTS_WARNING)  # the row line says it
    with cli_errors(*failures(table_only=bool(args.table))):
        try:
            show_table(args) if args.table else run_scoring(args)
        finally:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                import torch.distributed as dist
                if dist.is_initialized():
                    dist.destroy_process_group()


if __name__ == "__main__":
    main()
