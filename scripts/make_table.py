"""`make table`: score every shipped checkpoint and print the across-stage table(s).

What it does, for real every time (no cached numbers):

1. For each dataset — the held-out synthetic GSM8K-format test set (500 problems) and, when it is
   available (`GSM8K_DIR` or the `datasets` library), real GSM8K test (first 200, as in the seed) —
   it runs exactly the seed's loop (each dataset in its own process, two at a time with the default
   `--jobs 2`: the tiny models decode fastest on one thread, so two cores score two datasets at once):

       for s in base_pretrained sft dpo ppo grpo sft_continued; do
         python scripts/eval_post_training.py --ckpt checkpoints/$s.pt --label $s --append TABLE ...
       done

2. Prints each table: accuracy with a Wilson 95% interval, and exact McNemar paired tests of each
   stage against the checkpoint it started from (sft vs base_pretrained; dpo, ppo, grpo vs sft) and
   of the RL stages against the compute-matched control `sft_continued` (SFT trained further for as
   long as GRPO trained — shown as a marked control row).
3. Writes `outputs/stage_table_<dataset>.jsonl` (+ per-item records), `outputs/stage_table.md` and
   the plot `outputs/stage_table.png`. The tables are started fresh on each run.

Honest expectations: tiny CPU-trained models score about 0% on real GSM8K; the synthetic set is where
the climb is visible on a laptop. Point `--ckpt_dir` at your own checkpoints to score them instead.
"""

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a clone without installing

from lessons_lib import evaluation  # noqa: E402  (the scorer's work, run in-process)
from lessons_lib.cli import ArgumentParser, UsageError, check_device, check_writable, cli_errors, positive_int  # noqa: E402
from lessons_lib.stage_table import StageTableError, read_rows, render_table  # noqa: E402

from lessons_lib.stages import CONTROL, PARENT, STAGE_NAMES as STAGES  # noqa: E402  (the one stage registry)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0] + " Each run re-scores everything.")
    p.add_argument("--ckpt_dir", default=str(REPO / "checkpoints"),
                   help="folder with <stage>.pt files (default: the repo's checkpoints/)")
    p.add_argument("--out_dir", default=str(REPO / "outputs"),
                   help="where tables, records, stage_table.md and the plot go (default: the repo's outputs/, git-ignored)")
    p.add_argument("--synthetic_limit", type=positive_int, default=None, help="synthetic test problems (default: all 500)")
    p.add_argument("--gsm8k_limit", type=positive_int, default=200, help="real GSM8K test problems (default: 200, the seed's --limit 200)")
    p.add_argument("--skip_gsm8k", action="store_true", help="score the synthetic set only")
    p.add_argument("--max_new_tokens", type=positive_int, default=256, help="generation budget per answer (default: 256)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="prompts decoded together (default: 64)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads per process (default: 1, fastest for tiny models)")
    p.add_argument("--jobs", type=positive_int, default=min(2, os.cpu_count() or 1),
                   help="datasets scored side by side, one process each (default: 2, or 1 on a 1-core machine)")
    p.add_argument("--no_progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    try:
        check_device(args.device)
        check_writable(Path(args.out_dir) / "stage_table.md", "--out_dir")  # before minutes of scoring
    except UsageError as e:
        p.error(str(e))
    return args


def gsm8k_available() -> tuple[bool, str]:
    """Whether real GSM8K test can be loaded here, and why not."""
    from lessons_lib.data import load_qa_pairs
    try:
        load_qa_pairs("gsm8k", "test", limit=1)
        return True, ""
    except Exception as e:  # DatasetUnavailableError, or no network for `datasets`
        return False, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def check_own_tables(out_dir: Path, datasets) -> None:
    """make table rewrites its tables each run: refuse to, if one holds rows it did not write."""
    for dataset in datasets:
        table = out_dir / f"stage_table_{dataset}.jsonl"
        if not table.exists() or table.stat().st_size == 0:
            continue
        try:
            foreign = sorted({r["label"] for r in read_rows(table)} - set(STAGES))
        except StageTableError as e:
            raise UsageError(f"{table} is not a table make table wrote ({e}); move it away or delete it") from None
        if foreign:
            raise UsageError(f"{table} holds rows make table did not write ({', '.join(map(repr, foreign[:5]))}) and "
                             f"make table rewrites it each run: move them to a table of your own, or delete the file")


def stage_argvs(dataset, limit, ckpts, args, table, quiet) -> list[list[str]]:
    """The seed's loop over stages for one dataset, as eval_post_training command lines (parents first)."""
    argvs = []
    for stage, ckpt in ckpts.items():
        argv = ["--ckpt", str(ckpt), "--label", stage, "--append", str(table), "--dataset", dataset,
                "--max_new_tokens", str(args.max_new_tokens), "--batch_size", str(args.batch_size),
                "--threads", str(args.threads)]
        argv += ["--limit", str(limit)] if limit else []
        argv += ["--parent", PARENT[stage]] if stage in PARENT else []
        argv += ["--control", CONTROL[stage]] if stage in CONTROL else []
        argv += ["--device", args.device] if args.device else []
        argv += ["--no_progress"] if quiet else []
        argvs.append(argv)
    return argvs


def score_datasets(datasets, ckpts, args) -> dict:
    """Score every dataset; with --jobs > 1 each dataset runs in its own process. Returns the tables."""
    out_dir = Path(args.out_dir)
    tables = {d: out_dir / f"stage_table_{d}.jsonl" for d in datasets}
    for table in tables.values():
        table.unlink(missing_ok=True)  # a fresh table each run: every number below was just measured
    jobs = min(args.jobs, len(datasets))
    quiet = args.no_progress or jobs > 1  # one bar per process would garble: then one bar, counting rows
    work = {d: stage_argvs(d, limit, ckpts, args, tables[d], quiet) for d, limit in datasets.items()}
    if jobs == 1:
        for argvs in work.values():
            evaluation.run_scorings(argvs)
        return tables
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm
    context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(evaluation.run_scorings, argvs) for argvs in work.values()]
        with tqdm(total=sum(map(len, work.values())), desc="checkpoints scored", unit="run",
                  disable=args.no_progress) as bar:
            while wait(futures, timeout=2, return_when=FIRST_EXCEPTION).not_done:
                bar.update(rows_written(tables) - bar.n)  # rows land one by one, durably
                if any(f.done() and f.exception() for f in futures):
                    break
            bar.update(rows_written(tables) - bar.n)
        for f in futures:
            f.result()  # re-raises a worker's error here, as if it had run in this process
    return tables


def rows_written(tables) -> int:
    """Rows appended so far (for the progress bar: counts lines, never parses a half-read one)."""
    return sum(t.read_bytes().count(b"\n") for t in tables.values() if t.exists())


def save_plot(tables, path):
    """One panel per dataset: accuracy per stage with Wilson 95% bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lessons_lib.plots import plot_stage_accuracy
    fig, axes = plt.subplots(1, len(tables), figsize=(7 * len(tables), 3.8), squeeze=False)
    for ax, (dataset, table) in zip(axes[0], tables.items()):
        plot_stage_accuracy(read_rows(table), ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    with cli_errors(*evaluation.failures()):
        make_tables(args)


def make_tables(args):
    t0 = time.perf_counter()
    ckpt_dir, out_dir = Path(args.ckpt_dir), Path(args.out_dir)
    ckpts = {s: ckpt_dir / f"{s}.pt" for s in STAGES if (ckpt_dir / f"{s}.pt").exists()}
    missing = [s for s in STAGES if s not in ckpts]
    if not ckpts:
        raise UsageError(f"no checkpoints in {ckpt_dir}. Build them with `make checkpoints`, "
                         f"or pass --ckpt_dir with files named {', '.join(s + '.pt' for s in STAGES)}.")
    if missing:
        print(f"note: missing {', '.join(missing)} in {ckpt_dir}; scoring the rest", flush=True)
    datasets = {"synthetic": args.synthetic_limit}
    if not args.skip_gsm8k:
        ok, why = gsm8k_available()
        if ok:
            datasets["gsm8k"] = args.gsm8k_limit
        else:
            print(f"note: real GSM8K not available, scoring the synthetic set only ({why}). "
                  f"Restore data/gsm8k/ (git checkout -- data/gsm8k) or set GSM8K_DIR to a folder with test.jsonl to add it.", flush=True)
    check_own_tables(out_dir, datasets)
    tables = score_datasets(datasets, ckpts, args)
    rows = [row for table in tables.values() for row in read_rows(table)]
    print("\n" + render_table(rows))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stage_table.md").write_text(render_table(rows, markdown=True) + "\n")
    save_plot(tables, out_dir / "stage_table.png")
    print(f"\nwrote {', '.join(str(t) for t in tables.values())}, {out_dir / 'stage_table.md'}, "
          f"{out_dir / 'stage_table.png'}  ({time.perf_counter() - t0:.0f}s in all)")


if __name__ == "__main__":
    main()
