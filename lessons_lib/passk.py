"""pass@k and maj@k: what a checkpoint can answer when it may try k times.

Greedy accuracy asks for one answer. Sampling k answers per problem asks two more questions:
- pass@k: is *any* of k samples right? (the verifier picks it: an upper bound on what reranking or
  RL could extract). The unbiased estimator of Chen et al. (2021, eq. 1) from n >= k samples of
  which c are right: pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems.
- maj@k: is the *most common* final answer of k samples right? (self-consistency, Wang et al. 2023:
  no verifier needed at answer time).

Yue et al. (2025) found that RL with verifiable rewards raises pass@1 but that the base model catches
up at large k: RL sharpens what the model could already sample rather than teaching new answers.
`python -m lessons_lib.passk` measures both on the course's stages, separately on the flawed
teacher's trap kinds and the clean kinds (a separate command: it samples 16 x 500 answers per stage,
minutes, not part of `make table`):

    python -m lessons_lib.passk --ckpt_dir checkpoints --k 16 --temperature 0.7 --out checkpoints/passk.json
"""
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from rewards import _answers_match, extract_answer, gsm8k_gold_answer
from lessons_lib.stats import wilson_interval
from lessons_lib.synthetic import TRAPS, synthetic_problems

Z95 = 1.959964


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021) eq. 1: the probability that k of n samples drawn without replacement include
    at least one of the c right ones, 1 - C(n-c, k) / C(n, k), as a product (no huge binomials)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_answer(answers: list[str | None]) -> str | None:
    """The most common extracted answer (None = no number, never a vote); ties go to the answer that
    appeared first, so the vote is deterministic."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% interval over problems (pass@k is a mean of per-problem
    probabilities, not a count, so Wilson does not apply)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1))
    half = Z95 * sd / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def sample_answers(model, qa_pairs, k: int, temperature: float, max_new_tokens: int, seed: int,
                   progress: bool = True) -> list[list[str]]:
    """k sampled answers to each question (the same prompt k times: prefilled once and shared)."""
    from lessons_lib.generation import batched_generate
    from lessons_lib.training import user_prompt
    out, chunk = [], 32  # questions per call: 32 x 16 rows, bars that move
    generator = torch.Generator().manual_seed(seed)
    for s in tqdm(range(0, len(qa_pairs), chunk), desc="sampling", disable=not progress):
        prompts = [user_prompt(q) for q, _ in qa_pairs[s:s + chunk] for _ in range(k)]
        texts = batched_generate(model, prompts, max_new_tokens=max_new_tokens, greedy=False, temperature=temperature,
                                 generator=generator, batch_size=64, progress=False)
        out += [texts[i:i + k] for i in range(0, len(texts), k)]
    return out


def problem_records(samples: list[list[str]], qa_pairs) -> list[dict]:
    """Per problem: how many of its samples are right, and each sample's extracted answer."""
    records = []
    for texts, (_, answer) in zip(samples, qa_pairs):
        gold = gsm8k_gold_answer(answer)
        extracted = [extract_answer(t) for t in texts]
        records.append({"gold": gold, "extracted": extracted,
                        "right": [_answers_match(e, gold) for e in extracted]})
    return records


def summarize(records: list[dict], ks: list[int]) -> dict:
    """pass@k (unbiased, from all n samples) and maj@k (the vote of the first k samples) for each k,
    with 95% intervals."""
    n = len(records[0]["right"])
    out = {}
    for k in ks:
        p, lo, hi = mean_interval([pass_at_k(n, sum(r["right"]), k) for r in records])
        votes = sum(_answers_match(majority_answer(r["extracted"][:k]), r["gold"]) for r in records)
        mlo, mhi = wilson_interval(votes, len(records))
        out[str(k)] = {"pass": round(p, 4), "pass_ci95": [round(lo, 4), round(hi, 4)],
                       "maj": round(votes / len(records), 4), "maj_ci95": [round(mlo, 4), round(mhi, 4)]}
    return out


def stage_passk(path, n: int, k: int, temperature: float, max_new_tokens: int, seed: int, progress: bool) -> dict:
    """Sample k answers to each of the first n synthetic test problems with one checkpoint; pass@j and
    maj@j for j = 1, 2, 4, ..., k on all problems, on the trap kinds and on the clean kinds."""
    from lessons_lib.checkpoint import load_checkpoint
    from lessons_lib.training import synthetic_pairs
    t0 = time.time()
    model = load_checkpoint(path, device="cpu")
    qa = synthetic_pairs("test", n)
    records = problem_records(sample_answers(model, qa, k, temperature, max_new_tokens, seed, progress), qa)
    trap = [p["template"] in TRAPS for p in synthetic_problems("test", n)]
    ks = sorted({2 ** i for i in range(int(math.log2(k)) + 1)} | {k})
    return {"all": summarize(records, ks),
            "trap": summarize([r for r, t in zip(records, trap) if t], ks),
            "clean": summarize([r for r, t in zip(records, trap) if not t], ks),
            "right_per_problem": [sum(r["right"]) for r in records], "seconds": round(time.time() - t0, 1)}


def _lane(names, ckpt_dir, args_dict) -> dict:
    torch.set_num_threads(1)
    return {name: stage_passk(Path(ckpt_dir) / f"{name}.pt", **args_dict) for name in names}


def check_args(args) -> None:
    """Refuse (UsageError) what cannot run, before minutes of sampling."""
    from lessons_lib.cli import UsageError, check_writable
    if not 1 <= args.k <= 64:
        raise UsageError(f"--k {args.k}: use 1 to 64 samples per problem")
    if not 1 <= args.n <= 500:
        raise UsageError(f"--n {args.n}: the synthetic test split has 500 problems; use 1 to 500")
    if not (0 < args.temperature <= 5) or not 1 <= args.max_new_tokens <= 512 or not 1 <= args.lanes <= 16:
        raise UsageError("use --temperature in (0, 5], --max_new_tokens 1-512 and --lanes 1-16")
    missing = [s for s in args.stages if not (Path(args.ckpt_dir) / f"{s}.pt").is_file()]
    if missing:
        raise UsageError(f"--ckpt_dir {args.ckpt_dir}: no {', '.join(m + '.pt' for m in missing)} "
                         f"(`make checkpoints` trains them)")
    check_writable(Path(args.out), "--out")


def main(argv=None):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from lessons_lib.cli import ArgumentParser, UsageError, cli_errors
    from lessons_lib.stages import STAGE_NAMES
    ap = ArgumentParser(prog="python -m lessons_lib.passk", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_dir", default="checkpoints")
    ap.add_argument("--stages", nargs="+", default=STAGE_NAMES, choices=STAGE_NAMES)
    ap.add_argument("--k", type=int, default=16, help="samples per problem (1-64)")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (the RL rollouts': 0.7)")
    ap.add_argument("--n", type=int, default=500, help="synthetic test problems (1-500)")
    ap.add_argument("--max_new_tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lanes", type=int, default=2, help="processes side by side (one thread each)")
    ap.add_argument("--out", default="checkpoints/passk.json")
    args = ap.parse_args(argv)
    try:
        check_args(args)
    except UsageError as e:
        ap.error(str(e))  # one line, exit status 2, before any model is loaded
    settings = dict(n=args.n, k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                    seed=args.seed)
    lanes = [args.stages[i::args.lanes] for i in range(min(args.lanes, len(args.stages)))]
    with cli_errors():
        with ProcessPoolExecutor(len(lanes), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_lane, lane, args.ckpt_dir, {**settings, "progress": i == 0})
                       for i, lane in enumerate(lanes)]
            results = {k: v for f in futures for k, v in f.result().items()}
    report = {"settings": {**settings, "dataset": "synthetic", "split": "test", "decoding": "sampled",
                           "calculator": True, "estimator": "Chen et al. 2021 unbiased pass@k; maj@k = vote of the "
                           "first k samples"},
              "stages": {s: results[s] for s in args.stages}}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(render(report))


def render(report: dict) -> str:
    """pass@k and maj@k per stage as a plain-text table (all problems, then trap and clean kinds)."""
    lines = []
    for part in ("all", "trap", "clean"):
        ks = list(next(iter(report["stages"].values()))[part])
        lines.append(f"{part} problems: pass@k / maj@k (%)")
        lines.append(f"{'stage':16s}" + "".join(f"{'k=' + k:>14s}" for k in ks))
        for name, res in report["stages"].items():
            lines.append(f"{name:16s}" + "".join(f"{100 * res[part][k]['pass']:6.1f} / {100 * res[part][k]['maj']:5.1f}"
                                                 for k in ks))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
