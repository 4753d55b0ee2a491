"""`make checkpoints`: train every stage from nothing, score them, and write the manifest.

    python -m lessons_lib.pipeline --out checkpoints            # the shipped run (<= 30 min, 2 CPU cores)
    python -m lessons_lib.pipeline --out /tmp/seed1 --seed 1    # another seed of the same recipe
    python -m lessons_lib.pipeline --out /tmp/gold --teacher gold   # the ablation: a perfect teacher
    python -m lessons_lib.pipeline --out /tmp/ck --micro        # the whole pipeline in ~2 minutes

Order: base_pretrained -> sft -> (preference pairs + reward model) -> dpo -> ppo -> grpo ->
sft_continued (the control: SFT trained further on the same demonstrations for as many
sequences as GRPO trained on). Every post-SFT stage starts from sft.pt. Then each checkpoint is
scored greedily on the 500-problem synthetic *test* split by the repo's scorer, and
`manifest.json` records sha256, parameters, config, seconds, accuracy with its 95% Wilson
interval, KL at the end of PPO/GRPO, and exact McNemar p-values against SFT and the control.
SFT learns from a flawed teacher (`synthetic.TRAPS`); every other stage sees only gold final
answers. Everything is seeded; nothing here looks at the test split before the final scoring.
"""
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from lessons_lib import train_base, train_dpo, train_grpo, train_ppo, train_reward_model, train_sft
from lessons_lib.checkpoint import CheckpointError, load_checkpoint
from lessons_lib.cli import ArgumentParser, UsageError, check_writable, cli_errors
from lessons_lib.scoring import gsm8k_accuracy
from lessons_lib.stage_table import file_sha256, mcnemar_exact, wilson_interval
from lessons_lib.synthetic import TEACHERS, TRAPS, synthetic_problems, teacher_qa_pairs, trap_report
from lessons_lib.training import parse_bool, qa

from lessons_lib.stages import STAGE_NAMES as STAGES  # noqa: E402  (the one stage registry)
MODEL = dict(n_layer=4, n_head=4, n_embd=128, max_seq_len=1280)  # ~1.0M params; 1280 positions hold the longest real GSM8K question + 256 new tokens

FULL = {
    "base": dict(MODEL, steps=600, batch_size=16, docs=8000, doc_offset=2000, lr=6e-3),
    "sft": dict(pool=1000, teacher_samples=4, steps=2400, decay_steps=1800, batch_size=16, lr=3e-3, eval_every=50,
                acc_every=400, patience=6, dev_loss_n=200, dev_acc_n=100, max_new_tokens=160),
    "reward_model": dict(prompts=1024, samples=4, temperature=1.0, steps=40, batch_size=16, heldout_frac=0.5,
                         max_new_tokens=160),
    "dpo": dict(steps=60, batch_size=16, lr=2e-5, beta=0.1, nll_coef=0.5, max_new_tokens=160),
    "ppo": dict(steps=40, prompts_per_step=32, samples_per_prompt=2, lr=1e-4, kl_coef=0.04, eval_every=10,
                temperature=0.7, max_new_tokens=160),
    "grpo": dict(steps=80, prompts_per_step=8, group_size=8, lr=1e-4, kl_coef=0.04, eval_every=20,
                 temperature=0.7, max_new_tokens=160),
    "test_n": 500,
}
MICRO = {  # same code paths, tiny sizes: for the smoke test
    "base": dict(n_layer=1, n_head=2, n_embd=32, max_seq_len=640, steps=6, batch_size=4, docs=40, doc_offset=0,
                 lr=3e-3, log_every=2),
    "sft": dict(pool=16, steps=4, batch_size=4, eval_every=2, acc_every=2, patience=2, dev_loss_n=8, dev_acc_n=4, max_new_tokens=48),
    "reward_model": dict(prompts=8, samples=4, gold_fallback=True, steps=2, batch_size=4, max_new_tokens=48, log_every=1),
    "dpo": dict(steps=2, batch_size=4, dev_acc_n=4, max_new_tokens=48, log_every=1),
    "ppo": dict(steps=2, prompts_per_step=4, samples_per_prompt=2, eval_every=2, dev_acc_n=4, max_new_tokens=48),
    "grpo": dict(steps=2, prompts_per_step=2, group_size=4, eval_every=2, dev_acc_n=4, max_new_tokens=48),
    "test_n": 8,
}


def stage_configs(config: dict, out: Path, sft_best_step: int | None = None, seed: int = 0,
                  teacher: str = "flawed", use_wandb: bool = False) -> dict:
    """Each stage's full config: its module DEFAULTS, overridden by the pipeline config, with paths
    pointing into `out`, the run's seed and SFT's teacher. The control continues SFT at the learning
    rate SFT had at the step it kept (known once SFT has run: `sft_best_step`), held constant."""
    cfgs = _stage_configs(config, out, sft_best_step)
    cfgs["sft"]["teacher"] = cfgs["sft_continued"]["teacher"] = teacher
    for cfg in cfgs.values():
        cfg.update(seed=seed, use_wandb=use_wandb)
    return cfgs


def _stage_configs(config: dict, out: Path, sft_best_step: int | None) -> dict:
    ck = lambda name: str(out / f"{name}.pt")  # noqa: E731
    grpo = {**train_grpo.DEFAULTS, **config["grpo"], "init": ck("sft")}
    sft = {**train_sft.DEFAULTS, **config["sft"], "init": ck("base_pretrained")}
    # the control trains on as many sequences as GRPO did, in as many optimizer steps
    cont_batch = grpo["prompts_per_step"] * grpo["group_size"] // grpo["minibatches"]
    cont_steps = grpo["steps"] * grpo["minibatches"]
    return {
        "base_pretrained": {**train_base.DEFAULTS, **config["base"]},
        "sft": sft,
        "reward_model": {**train_reward_model.DEFAULTS, **config["reward_model"], "init": ck("sft")},
        "dpo": {**train_dpo.DEFAULTS, **config["dpo"], "init": ck("sft"),
                "pairs": str(out / "logs" / "preference_pairs.jsonl")},
        "ppo": {**train_ppo.DEFAULTS, **config["ppo"], "init": ck("sft")},
        "grpo": grpo,
        "sft_continued": {**sft, "init": ck("sft"), "stage": "sft_continued", "parent": "sft",
                          "early_stop": False, "steps": cont_steps, "batch_size": cont_batch,
                          "lr": train_sft.lr_at(sft_best_step or sft["steps"], sft), "min_lr_frac": 1.0,
                          "warmup": 1, "eval_every": max(1, cont_steps // 4), "acc_every": max(1, cont_steps // 4)},
    }


MODULES = {"base_pretrained": train_base, "sft": train_sft, "reward_model": train_reward_model,
           "dpo": train_dpo, "ppo": train_ppo, "grpo": train_grpo, "sft_continued": train_sft}


def score(out: Path, stage: str, test_pairs) -> dict:
    """Greedy accuracy of one checkpoint on the test split, records saved for paired comparisons."""
    t0 = time.time()
    model = load_checkpoint(out / f"{stage}.pt", device="cpu")
    acc, records = gsm8k_accuracy(model, test_pairs, max_new_tokens=256, progress=False)
    with open(out / "logs" / f"test_records_{stage}.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in ("index", "extracted", "gold", "correct", "response")}) + "\n")
    correct = sum(r["correct"] for r in records)
    lo, hi = wilson_interval(correct, len(records))
    traps = trap_report(synthetic_problems("test", len(records)), records)
    return {"accuracy": acc, "correct": correct, "n": len(records), "ci95": [round(lo, 4), round(hi, 4)],
            "trap_acc": round(traps["trap_acc"], 4), "clean_acc": round(traps["clean_acc"], 4),
            "copies_teacher": traps["copies_teacher"], "score_seconds": round(time.time() - t0, 1),
            "_correct": [r["correct"] for r in records]}


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Paired exact McNemar test of a vs b on the same questions."""
    fixed = sum(x and not y for x, y in zip(a, b))
    broke = sum(y and not x for x, y in zip(a, b))
    return {"fixed": fixed, "broke": broke, "p": mcnemar_exact(fixed, broke)}


PARALLEL_LANES = [["grpo", "sft_continued"], ["reward_model", "dpo", "ppo"]]  # all start from sft.pt; ~equal wall time
FIRST_LANE_THREADS = 1  # one thread: a full-size rerun is bit-identical (two threads were 1.8x faster but were not, see docs)


def _train_lane(names, cfgs, out, progress, threads: int = 1) -> dict:
    """Train stages one after another in this process, on `threads` CPU threads (see `run`)."""
    torch.set_num_threads(threads)
    summaries = {}
    for name in names:
        summaries[name] = MODULES[name].train(cfgs[name], out, progress=progress)
        _print_summary(name, summaries[name])
    return summaries


def _score_lane(names, out, test_n) -> dict:
    torch.set_num_threads(1)
    test_pairs = qa("test", test_n)
    return {name: score(out, name, test_pairs) for name in names}


def _print_summary(name, summary):
    print(f"[pipeline] {name:16s} done in {summary['seconds']:6.1f}s  "
          + "  ".join(f"{k}={v}" for k, v in summary.items() if k not in ("stage", "seconds")), flush=True)


def _in_parallel(fn, lanes, *args) -> dict:
    """Run fn(lane, *args) for each lane in its own process; merge the returned dicts."""
    with ProcessPoolExecutor(len(lanes), mp_context=get_context("spawn")) as pool:
        results = [pool.submit(fn, lane, *args) for lane in lanes]
        return {k: v for r in results for k, v in r.result().items()}


class _PhaseClock:
    """Wall-clock seconds of each phase of the run (what the 30-minute budget is spent on)."""

    def __init__(self):
        self.laps, self._t = {}, time.time()

    def lap(self, name: str):
        now = time.time()
        self.laps[name], self._t = round(now - self._t, 1), now


def run(out, micro: bool = False, progress: bool = True, seed: int = 0, teacher: str = "flawed",
        use_wandb: bool = False) -> dict:
    """Train all stages into `out`, score them on test, write out/manifest.json; return it.

    Base and SFT run alone, on one thread (two were 1.8x faster, but a full-size rerun on two threads
    once came out different; on one it is bit-identical). After SFT the independent stages run as two
    one-thread processes side by side: same results as running them in turn (each stage is seeded on
    its own), half the wall time."""
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    config = MICRO if micro else FULL
    run_args = dict(seed=seed, teacher=teacher, use_wandb=use_wandb)
    cfgs, t_start, clock = stage_configs(config, out, **run_args), time.time(), _PhaseClock()
    stages = _train_lane(["base_pretrained", "sft"], cfgs, out, progress, FIRST_LANE_THREADS)
    clock.lap("base_and_sft")
    cfgs = stage_configs(config, out, sft_best_step=stages["sft"]["best_step"], **run_args)
    stages.update(_in_parallel(_train_lane, PARALLEL_LANES, cfgs, out, progress))
    clock.lap("rl_lanes")
    scores = _in_parallel(_score_lane, [STAGES[0::2], STAGES[1::2]], out, config["test_n"])
    clock.lap("scoring")
    stages["phases"] = clock.laps
    for name in STAGES:
        stages[name].update(scores[name])
    for name in STAGES:
        print(f"[pipeline] {name:16s} test accuracy {stages[name]['accuracy']:.3f} "
              f"(95% CI {stages[name]['ci95'][0]:.3f}-{stages[name]['ci95'][1]:.3f})", flush=True)
    return write_manifest(out, config, cfgs, stages, time.time() - t_start, micro)


def write_manifest(out: Path, config, cfgs, stages, seconds, micro) -> dict:
    correct = {name: stages[name].pop("_correct") for name in STAGES}
    comparisons = {f"{a}_vs_{b}": mcnemar(correct[a], correct[b]) for a, b in
                   [("dpo", "sft"), ("ppo", "sft"), ("grpo", "sft"), ("grpo", "sft_continued"),
                    ("sft_continued", "sft"), ("ppo", "sft_continued"), ("dpo", "sft_continued")]}
    sft_cfg = cfgs["sft"]
    demos = teacher_qa_pairs("train", sft_cfg["pool"], sft_cfg["teacher"], sft_cfg["teacher_rate"],
                             sft_cfg["teacher_samples"])
    gold = [pair for pair in qa("train", sft_cfg["pool"]) for _ in range(sft_cfg["teacher_samples"])]
    manifest = {"config": "micro" if micro else "full", "seed": sft_cfg["seed"], "total_seconds": round(seconds, 1),
                "teacher": {"name": sft_cfg["teacher"], "mistake_rate": sft_cfg["teacher_rate"], "traps": TRAPS,
                            "samples_per_problem": sft_cfg["teacher_samples"], "demonstrations": len(demos),
                            "pool_accuracy": round(  # how often the SFT demonstrations are right
                                sum(d == g for (_, d), (_, g) in zip(demos, gold)) / len(demos), 4)},
                "test_set": {"dataset": "synthetic", "split": "test", "n": config["test_n"],
                             "decoding": "greedy", "calculator": True, "max_new_tokens": 256},
                "phase_seconds": stages["phases"], "torch": torch.__version__, "threads": {
                    "base_and_sft": FIRST_LANE_THREADS, "each_rl_lane": 1},
                "stages": {}, "comparisons": comparisons, "reward_model": stages["reward_model"]}
    for name in STAGES:
        path = out / f"{name}.pt"
        model = load_checkpoint(path, device="cpu")
        manifest["stages"][name] = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
                                    "parameters": model.num_params(), "parent": model.meta.get("parent"),
                                    "config": {k: v for k, v in cfgs[name].items() if k != "use_wandb"},
                                    **stages[name]}
    with open(out / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"[pipeline] wrote {out / 'manifest.json'} (total {seconds / 60:.1f} min)", flush=True)
    return manifest


def same_weights(out_a, out_b) -> dict:
    """{stage: True if the two runs' checkpoints hold bit-identical tensors}. (The files themselves
    differ: each records its own wall-clock seconds.)"""
    same = {}
    for name in STAGES:
        a, b = (load_checkpoint(Path(d) / f"{name}.pt", device="cpu").state_dict() for d in (out_a, out_b))
        same[name] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return same


def main(argv=None):
    ap = ArgumentParser(prog="python -m lessons_lib.pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="checkpoints", help="folder for the six .pt files, logs/ and manifest.json")
    ap.add_argument("--micro", action="store_true", help="tiny config: the whole pipeline in ~2 minutes")
    ap.add_argument("--seed", type=int, default=0, help="seed of every stage (the shipped checkpoints: 0)")
    ap.add_argument("--teacher", choices=TEACHERS, default="flawed",
                    help="who writes the SFT demonstrations: the flawed teacher (default) or gold (the ablation)")
    ap.add_argument("--use_wandb", type=parse_bool, default=False, metavar="true|false",
                    help="also mirror every stage's metrics to Weights & Biases (offline unless WANDB_MODE says otherwise)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="hide the tqdm bars")
    ap.add_argument("--compare", metavar="DIR", help="train nothing: say whether --out and DIR (a rerun) hold "
                    "bit-identical weights, stage by stage")
    args = ap.parse_args(argv)
    if args.compare:
        with cli_errors(CheckpointError):
            same = same_weights(args.out, args.compare)
            for name, ok in same.items():
                print(f"{name:16s} {'identical' if ok else 'DIFFERENT'}")
        raise SystemExit(0 if all(same.values()) else 1)
    if args.seed < 0:
        ap.error(f"--seed {args.seed}: use a seed >= 0")
    try:
        check_writable(Path(args.out) / "manifest.json", "--out")  # before half an hour of training
    except UsageError as e:
        ap.error(str(e))
    with cli_errors():
        run(args.out, micro=args.micro, progress=args.progress, seed=args.seed, teacher=args.teacher,
            use_wandb=args.use_wandb)


if __name__ == "__main__":
    main()
