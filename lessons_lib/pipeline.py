"""`make checkpoints`: train every stage from nothing, score them, and write the manifest.

    python -m lessons_lib.pipeline --out checkpoints            # the shipped run (<= 30 min, 2 CPU cores)
    python -m lessons_lib.pipeline --out /tmp/seed1 --seed 1    # another seed of the same recipe
    python -m lessons_lib.pipeline --out /tmp/gold --teacher gold   # the ablation: a perfect teacher
    python -m lessons_lib.pipeline --out /tmp/ck --micro        # the whole pipeline in ~2 minutes

Order: base_pretrained -> sft -> (preference pairs + reward model) -> dpo -> ppo -> ppo_rm (PPO on
the reward model) -> grpo -> sft_continued (the control: SFT trained further on the same
demonstrations for as many optimizer steps and sequences as GRPO). Every post-SFT stage starts from sft.pt. Then each checkpoint is
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

from lessons_lib.checkpoint import CheckpointError, load_checkpoint
from lessons_lib.cli import ArgumentParser, UsageError, check_writable, cli_errors
from lessons_lib.scoring import gsm8k_accuracy
from lessons_lib.jsonl import write_jsonl
from lessons_lib.stage_table import file_sha256
from lessons_lib.stats import mcnemar_exact, wilson_interval
from lessons_lib.stages import CONTROL, PARENT, STAGE_NAMES as STAGES, stage
from lessons_lib.synthetic import TEACHERS, TRAPS, synthetic_problems, teacher_qa_pairs, trap_report
from lessons_lib.train_base import BaseConfig
from lessons_lib.train_dpo import DPOConfig
from lessons_lib.train_grpo import GRPOConfig, optimizer_steps_and_batch
from lessons_lib.train_ppo import PPOConfig, ppo_rm_config
from lessons_lib.train_reward_model import RewardModelConfig
from lessons_lib.train_sft import SFTConfig, control_config
from lessons_lib.training import parse_bool, synthetic_pairs

CONFIGS = {"base_pretrained": BaseConfig, "sft": SFTConfig, "reward_model": RewardModelConfig, "dpo": DPOConfig,
           "ppo": PPOConfig, "ppo_rm": ppo_rm_config, "grpo": GRPOConfig}  # each one's defaults are the shipped recipe
RL_STAGES = ("ppo", "ppo_rm", "grpo")
TEST_N = 500  # the synthetic test split, scored greedily once every stage is trained

MICRO = {  # the only override of the shipped recipe: same code paths, tiny sizes (the smoke test, ~1 minute)
    "base_pretrained": dict(n_layer=1, n_head=2, n_embd=32, max_seq_len=640, steps=6, batch_size=4, docs=40,
                            doc_offset=0, lr=3e-3, log_every=2),
    "sft": dict(pool=16, steps=4, batch_size=4, eval_every=2, acc_every=2, patience=2, dev_loss_n=8, dev_acc_n=4,
                max_new_tokens=48),
    "reward_model": dict(prompts=8, samples=4, gold_fallback=True, steps=2, batch_size=4, max_new_tokens=48,
                         log_every=1),
    "dpo": dict(steps=2, batch_size=4, dev_acc_n=4, max_new_tokens=48, log_every=1),
    "ppo": dict(steps=2, prompts_per_step=4, samples_per_prompt=2, eval_every=2, dev_acc_n=4, max_new_tokens=48,
                curve_prompts=4),
    "ppo_rm": dict(steps=2, prompts_per_step=4, samples_per_prompt=2, eval_every=2, dev_acc_n=4, max_new_tokens=48,
                   curve_prompts=4),
    "grpo": dict(steps=2, prompts_per_step=2, group_size=4, eval_every=2, dev_acc_n=4, max_new_tokens=48),
    "test_n": 8,
}


def stage_configs(out: Path, micro: bool = False, sft_best_step: int | None = None, seed: int = 0,
                  teacher: str = "flawed") -> dict:
    """Each stage's config: its dataclass defaults (the shipped recipe), the micro overrides when
    asked, paths into `out`, the run's seed and SFT's teacher. The control continues SFT at the
    learning rate SFT had at the step it kept (known once SFT has run: `sft_best_step`)."""
    ck = lambda name: str(Path(out) / f"{name}.pt")  # noqa: E731
    paths = {"sft": dict(init=ck("base_pretrained"), teacher=teacher), "reward_model": dict(init=ck("sft")),
             "dpo": dict(init=ck("sft"), pairs=str(Path(out) / "logs" / "preference_pairs.jsonl")),
             "ppo": dict(init=ck("sft"), reward_model=ck("reward_model")),  # ppo only logs the reward model's score
             "ppo_rm": dict(init=ck("sft"), reward_model=ck("reward_model")), "grpo": dict(init=ck("sft"))}
    cfgs = {name: cls().updated(seed=seed, **(MICRO[name] if micro else {}), **paths.get(name, {}))
            for name, cls in CONFIGS.items()}
    steps, batch = optimizer_steps_and_batch(cfgs["grpo"])  # the control: as many sequences as GRPO, in as many steps
    cfgs["sft_continued"] = control_config(cfgs["sft"], sft_best_step or cfgs["sft"].steps, steps, batch, ck("sft"))
    return cfgs


def score_on_test(out: Path, name: str, test_pairs) -> dict:
    """Greedy accuracy of one checkpoint on the test split, records saved for paired comparisons."""
    t0 = time.time()
    model = load_checkpoint(out / f"{name}.pt", device="cpu")
    acc, records = gsm8k_accuracy(model, test_pairs, max_new_tokens=256, progress=False)
    write_jsonl(out / "logs" / f"test_records_{name}.jsonl",
                ({k: r[k] for k in ("index", "extracted", "gold", "correct", "response")} for r in records))
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


PARALLEL_LANES = [["grpo", "sft_continued"], ["reward_model", "dpo", "ppo", "ppo_rm"]]  # all start from sft.pt
FIRST_LANE_THREADS = 1  # one thread: a full-size rerun is bit-identical (two threads were 1.8x faster but were not, see docs)


def _train_lane(names, cfgs, out, progress, use_wandb=False, threads: int = 1, resume: bool = False) -> dict:
    """Train stages one after another in this process, on `threads` CPU threads (see `run`). With
    `resume`, a stage already trained in `out` with the very same recipe is reused, not retrained."""
    torch.set_num_threads(threads)
    summaries = {}
    for name in names:
        summaries[name] = reusable_summary(out, name, cfgs[name]) if resume else None
        if summaries[name] is not None:
            print(f"[pipeline] {name:16s} reused (same recipe, checkpoint unchanged)", flush=True)
            continue
        summaries[name] = stage(name).train_module().train(cfgs[name], out, progress=progress, use_wandb=use_wandb)
        _save_summary(out, name, cfgs[name], summaries[name])
        _print_summary(name, summaries[name])
    return summaries


def _summary_path(out, name) -> Path:
    return Path(out) / "logs" / f"{name}.summary.json"


def _recipe(cfg, out) -> dict:
    """A stage's config with paths inside `out` written relative to it (a moved run folder resumes)."""
    prefix = str(Path(out)) + "/"
    return {k: "<out>/" + v[len(prefix):] if isinstance(v, str) and v.startswith(prefix) else v
            for k, v in cfg.to_dict().items()}


def _save_summary(out, name, cfg, summary) -> None:
    """What `--resume` needs to reuse a stage: its recipe, its summary, and the hash of its checkpoint."""
    record = {"config": _recipe(cfg, out), "summary": summary, "sha256": file_sha256(Path(out) / f"{name}.pt")}
    tmp = _summary_path(out, name).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(_summary_path(out, name))


def reusable_summary(out, name, cfg) -> dict | None:
    """The summary of `name` if `out` already holds it trained with exactly `cfg` (and its checkpoint
    is the file that run wrote), else None."""
    path, ckpt = _summary_path(out, name), Path(out) / f"{name}.pt"
    if not (path.is_file() and ckpt.is_file()):
        return None
    record = json.loads(path.read_text())
    if record.get("config") != _recipe(cfg, out) or record.get("sha256") != file_sha256(ckpt):
        return None
    return record["summary"]


def _score_lane(names, out, test_n) -> dict:
    torch.set_num_threads(1)
    test_pairs = synthetic_pairs("test", test_n)
    return {name: score_on_test(out, name, test_pairs) for name in names}


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
        use_wandb: bool = False, resume: bool = False, stop_after: str | None = None) -> dict | None:
    """Train all stages into `out`, score them on test, write out/manifest.json; return it.

    Base and SFT run alone, on one thread (two were 1.8x faster, but a full-size rerun on two threads
    once came out different; on one it is bit-identical). After SFT the independent stages run as two
    one-thread processes side by side: same results as running them in turn (each stage is seeded on
    its own), half the wall time. `resume` reuses stages already trained in `out` with the same
    recipe; `stop_after="sft"` trains base and SFT only (no scoring, no manifest)."""
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    test_n = MICRO["test_n"] if micro else TEST_N
    run_args = dict(micro=micro, seed=seed, teacher=teacher)
    cfgs, t_start, clock = stage_configs(out, **run_args), time.time(), _PhaseClock()
    stages = _train_lane(["base_pretrained", "sft"], cfgs, out, progress, use_wandb, FIRST_LANE_THREADS, resume)
    clock.lap("base_and_sft")
    if stop_after == "sft":
        return None
    cfgs = stage_configs(out, sft_best_step=stages["sft"]["best_step"], **run_args)
    stages.update(_in_parallel(_train_lane, PARALLEL_LANES, cfgs, out, progress, use_wandb, 1, resume))
    clock.lap("rl_lanes")
    scores = _in_parallel(_score_lane, [STAGES[0::2], STAGES[1::2]], out, test_n)
    clock.lap("scoring")
    stages["phases"] = clock.laps
    for name in STAGES:
        stages[name].update(scores[name])
    for name in STAGES:
        print(f"[pipeline] {name:16s} test accuracy {stages[name]['accuracy']:.3f} "
              f"(95% CI {stages[name]['ci95'][0]:.3f}-{stages[name]['ci95'][1]:.3f})", flush=True)
    return write_manifest(out, test_n, cfgs, stages, time.time() - t_start, micro)


def write_manifest(out: Path, test_n: int, cfgs, stages, seconds, micro) -> dict:
    correct = {name: stages[name].pop("_correct") for name in STAGES}
    comparisons = {f"{a}_vs_{b}": mcnemar(correct[a], correct[b]) for a, b in comparison_pairs()}
    sft_cfg = cfgs["sft"]
    demos = teacher_qa_pairs("train", sft_cfg.pool, sft_cfg.teacher, sft_cfg.teacher_rate, sft_cfg.teacher_samples)
    gold = [pair for pair in synthetic_pairs("train", sft_cfg.pool) for _ in range(sft_cfg.teacher_samples)]
    manifest = {"config": "micro" if micro else "full", "seed": sft_cfg.seed, "total_seconds": round(seconds, 1),
                "teacher": {"name": sft_cfg.teacher, "mistake_rate": sft_cfg.teacher_rate, "traps": TRAPS,
                            "samples_per_problem": sft_cfg.teacher_samples, "demonstrations": len(demos),
                            "pool_accuracy": round(  # how often the SFT demonstrations are right
                                sum(d == g for (_, d), (_, g) in zip(demos, gold)) / len(demos), 4)},
                "test_set": {"dataset": "synthetic", "split": "test", "n": test_n,
                             "decoding": "greedy", "calculator": True, "max_new_tokens": 256},
                "phase_seconds": stages["phases"], "torch": torch.__version__, "threads": {
                    "base_and_sft": FIRST_LANE_THREADS, "each_rl_lane": 1},
                "stages": {}, "comparisons": comparisons, "reward_model": stages["reward_model"],
                "rl": {name: rl_settings(cfgs[name], stages[name]) for name in RL_STAGES}}
    for name in STAGES:
        path = out / f"{name}.pt"
        model = load_checkpoint(path, device="cpu")
        manifest["stages"][name] = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
                                    "parameters": model.num_params(), "parent": model.meta.get("parent"),
                                    "config": cfgs[name].to_dict(),
                                    **stages[name]}
    with open(out / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"[pipeline] wrote {out / 'manifest.json'} (total {seconds / 60:.1f} min)", flush=True)
    return manifest


def comparison_pairs() -> list[tuple[str, str]]:
    """Every paired test the manifest records: each stage against its parent and its control (the
    stage registry), and the two PPOs against each other (verifier vs learned reward)."""
    return [(s, PARENT[s]) for s in STAGES if s in PARENT] + [(s, CONTROL[s]) for s in STAGES if s in CONTROL] \
        + [("ppo_rm", "ppo")]


def rl_settings(cfg, summary: dict) -> dict:
    """What an RL stage did, in the terms the papers use: sampling temperature (every log-prob is taken
    at it), loss aggregation, epochs and minibatches over each batch, and how often the clip acted."""
    return {"reward": getattr(cfg, "reward", "verifier"), "temperature": cfg.temperature,
            "loss_agg": getattr(cfg, "loss_agg", "token-mean"), "epochs": cfg.epochs, "minibatches": cfg.minibatches,
            "kl_coef": cfg.kl_coef, "kl_estimator": "k3 in the loss" if hasattr(cfg, "loss_agg") else "k1 in the reward",
            "mean_clip_frac": summary.get("mean_clip_frac"), "final_kl": summary.get("final_kl")}


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
    ap.add_argument("--resume", action="store_true", help="reuse every stage --out already holds, trained with the "
                    "same recipe (a stopped run picks up where it left off; the phase times then count only new work)")
    ap.add_argument("--stop_after", choices=["sft"], help="train base and SFT only (then tune the RL stages on them)")
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
            use_wandb=args.use_wandb, resume=args.resume, stop_after=args.stop_after)


if __name__ == "__main__":
    main()
