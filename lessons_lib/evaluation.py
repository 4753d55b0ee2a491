"""Score one checkpoint into one stage-table row: the library behind scripts/eval_post_training.py.

`run_scoring(args)` does, in this order: check every output file (`check_outputs`, before anything
is loaded, so no result is lost at the end), load the questions, load the model (`load_model`),
score this process's shard of the questions (`score_checkpoint`; under torchrun each rank scores
`shard(...)` and rank 0 `gather`s), then build the row and save it (`save_records`, `save_row`: a
row that cannot be appended is printed, never lost). `run_scorings` runs several command lines in
one process (`make table`). The arguments are `eval_args.parse_args`'s.

Data safety: docs/reliability.md.
"""
import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

from lessons_lib.cli import UsageError, check_writable
from lessons_lib.eval_args import torchrun_world
from lessons_lib.data import DatasetFormatError, DatasetUnavailableError
from lessons_lib.stage_table import (StageTableError, append_row, default_records_path, display_path, make_row, read_rows,
                                     records_problem, render_table, resolve_path, write_records)


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
    warn_missing_references(args, label, rows)
    records = records_destination(args, label)
    if records is None:
        return None
    check_writable(records, "--records")  # first: a name too long can't even be looked up
    if args.append and Path(args.append).absolute() in records.absolute().parents:
        raise UsageError(f"--records {records} is inside --append {args.append}: the table is a file, it cannot "
                         f"also be the records' folder; name the table differently (e.g. {args.append}.jsonl)")
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


def warn_missing_references(args, label, rows) -> None:
    """--parent/--control naming this row itself, or a label with no row in the table: a warning (the
    row is still written; its paired test appears once that label is scored on the same questions)."""
    here = {r["label"] for r in rows if (r.get("dataset"), r.get("split")) == (args.dataset, args.split)}
    for flag in ("parent", "control"):
        ref = getattr(args, flag)
        if ref is not None and ref == label:
            warnings.warn(f"--{flag} {ref!r} is this row itself: no paired test will be shown for it")
        elif ref is not None and args.append and ref not in here:
            warnings.warn(f"--{flag} {ref!r}: {args.append} has no row with that label on "
                          f"{args.dataset}/{args.split} yet; the paired test appears once it is scored")


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
    world = torchrun_world()
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


def end_distributed() -> None:
    """Close the process group `dist_setup` started, if any (under torchrun, at the end of main)."""
    dist = sys.modules.get("torch.distributed")  # not the environment: it may be stray or malformed
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
# the model: a course checkpoint or a Hugging Face model, and scoring it (kept small and apart:
# the engine interface plugs in here)

def default_label(args) -> str:
    """The row's name when --label is not given: the checkpoint's file stem, or the model folder's name."""
    return Path(args.ckpt).stem if args.ckpt else Path(str(args.hf).rstrip("/")).name


def load_model(args, device):
    """(model, what the row records about it): the one place where a course checkpoint and a Hugging
    Face model (--hf) differ in this script; the scorer takes either."""
    if args.hf:
        from lessons_lib.real_model import load_real_model
        model = load_real_model(args.hf, args.engine, args.revision, args.dtype, device, args.prompt_format,
                                args.fewshot_k)
        return model, {"ckpt": model.weights, **model.info}  # ckpt: the weights file, hashed
    from lessons_lib.checkpoint import load_checkpoint
    model = load_checkpoint(args.ckpt, device=device)
    return model, {"ckpt": args.ckpt, "ckpt_sha256": model.sha256}  # the bytes that were loaded


def score_checkpoint(model, qa_pairs, args, rank=0, world=1, device=None):
    """Score this rank's shard, gather all shards: (records in question order, generated tokens, seconds)."""
    from lessons_lib.scoring import gsm8k_accuracy
    mine, start = shard(qa_pairs, rank, world)
    t0 = time.perf_counter()
    _, records = gsm8k_accuracy(model, mine, max_new_tokens=args.max_new_tokens, device=device,
                             greedy=True, batch_size=args.batch_size, strategy=args.strategy,
                             progress=not args.no_progress and rank == 0)
    for r in records:
        r["index"] += start  # position in the full question list, not in this shard
    gathered = gather((records, time.perf_counter() - t0), world)
    records = [r for recs, _ in gathered for r in recs]
    seconds = max(s for _, s in gathered)  # wall time = the slowest rank
    return records, sum(r["n_tokens"] for r in records), seconds


# ---------------------------------------------------------------------------------------------
# saving: records, then the row

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


def add_row_command(table, row) -> str:
    """The exact shell command that appends `row` to `table` later, with append_row's guarantees
    (own line, lock, fsync): what a user is told to run when the scorer could not append it."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "eval_post_training.py"
    return " ".join(shlex.quote(str(x)) for x in (sys.executable, script, "--append", Path(table).absolute(),
                                                   "--add_row", json.dumps(row)))


class RowPrinted(OSError):
    """The row could not be appended: it was printed to stdout, and the message says how to add it."""


def print_row(table, row, why) -> RowPrinted:
    """Print the row as one JSON line; return the error that says why and the exact command that
    adds it to `table` (None: no table, the printed row is the result)."""
    print(json.dumps(row), flush=True)
    add = f". Add it with: {add_row_command(table, row)}" if table else ""
    return RowPrinted(f"{why}; the row is printed above as one JSON line{add}")


def save_row(table, row) -> None:
    """Append the row; if that fails after all, print it: a measured result is never lost."""
    try:
        append_row(table, row)  # a failed write leaves the table as it was (append_row)
    except OSError as e:
        raise print_row(table, row, f"could not append the row to {table} ({e.strerror or e})") from e


def add_printed_row(args) -> None:
    """--add_row: append a row the scorer printed because it could not append it itself."""
    append_row(args.append, args.add_row)
    print(f"{args.add_row['label']}: added to {args.append}")


# ---------------------------------------------------------------------------------------------
# one run of the scorer

LONG_PROMPTS_WARNING = r"\d+ of \d+ prompts are longer"  # batched_generate's; counted in the row instead
MISSING_REFERENCE_WARNING = r"--(parent|control) '.*': .* has no row with that label"  # warn_missing_references'


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
                   seconds=seconds, generated_tokens=tokens, records_path=None,
                   parent=args.parent or model.meta.get("parent"), control=args.control,
                   stage=model.meta.get("stage"), world_size=world,
                   skipped=sum("skipped" in r for r in records))  # prompts with no room in the context
    keep_row(args, model, row, records, records_file)
    print(f"{label}: {row['correct']}/{row['n']} = {100 * row['accuracy']:.1f}% on {args.dataset}/{args.split} "
          f"({seconds:.1f}s, {row['tokens_per_s']} tok/s)" + (f" -> {args.append}" if args.append else "")
          + (f"  [{row['skipped']} prompts too long for the context: counted wrong]" if row["skipped"] else ""))
    return row


def keep_row(args, model, row, records, records_file) -> None:
    """Everything between scoring and the row on disk. Whatever fails here (a weights file removed
    mid-run, a cache cleaned, a folder gone), the row is printed with the command that adds it: the
    measured result is never lost. Only weights that changed under the scorer lose their row: it
    would name bytes that were not the ones measured."""
    from lessons_lib.hf_model import WeightsChangedError, check_weights_unchanged
    try:
        if args.hf:
            check_weights_unchanged(model)  # hashed before loading: still the same bytes?
        saved = save_records(records_file, records)
        row["records"] = display_path(saved) if saved else None
        if args.append:
            save_row(args.append, row)
    except (WeightsChangedError, RowPrinted):
        raise
    except Exception as e:
        raise print_row(args.append, row, f"the result was scored but not saved ({e!r})") from e


def run_scorings(argvs: list[list[str]]) -> None:
    """Several scorings one after another, in this process (`make table` runs one such list per worker)."""
    from lessons_lib.eval_args import parse_args
    warnings.filterwarnings("ignore", message=LONG_PROMPTS_WARNING)  # the row line says it
    warnings.filterwarnings("ignore", message=MISSING_REFERENCE_WARNING)  # make table scores them all, in any order
    for argv in argvs:
        run_scoring(parse_args(argv))


def show_table(args) -> None:
    rows = read_rows(args.table)
    if not rows:
        raise StageTableError(f"{args.table} has no rows yet: score a checkpoint with --append {args.table}")
    print(render_table(rows, markdown=args.markdown))
    if args.plot:
        from lessons_lib.plots import plot_stage_accuracy
        plot_stage_accuracy(rows, args.plot)


def failures(table_only=False) -> tuple:
    """The errors that are the user's data or files, not bugs: one `error:` line, exit status 1."""
    found = (StageTableError, DatasetFormatError, DatasetUnavailableError)
    if table_only:
        return found  # rendering a table never imports torch
    from lessons_lib.checkpoint import CheckpointError
    from lessons_lib.hf_model import HFUnavailableError  # importable without transformers
    from lessons_lib.hf_model import WeightsChangedError
    from lessons_lib.real_model import RealModelError
    return found + (CheckpointError, HFUnavailableError, WeightsChangedError, RealModelError)  # --hf without transformers: what to install
