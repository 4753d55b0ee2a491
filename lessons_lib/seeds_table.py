"""Does the pipeline's result hold on every seed? The course's targets, checked on each seed's manifest.

A claim about training ("GRPO beats SFT by 10 points") is only worth making if it survives a
rerun with another seed, so the pipeline is run for seeds 0, 1 and 2 (`python -m lessons_lib.pipeline
--seed N --out DIR`) and this module puts the three manifests side by side:

    python -m lessons_lib.seeds_table checkpoints/manifest.json checkpoints/seeds/seed1.json \\
        checkpoints/seeds/seed2.json --write checkpoints/manifest.json

It prints each stage's test accuracy per seed, the paired margins with their exact McNemar p-values,
the KL at the end of PPO and GRPO, the mean and the worst seed, and whether every target holds.
`--write` stores the same table in the shipped manifest (under "seeds").
"""
import argparse
import json
import sys
from pathlib import Path

from lessons_lib.stages import STAGE_NAMES

# (name, comparison key in the manifest or None, minimum margin in points, p-value bound): the targets
MARGIN_TARGETS = [
    ("dpo >= sft + 3, p < 0.01", "dpo_vs_sft", 3.0, 0.01),
    ("ppo >= sft + 5, p < 0.001", "ppo_vs_sft", 5.0, 0.001),
    ("grpo >= sft + 10, p < 0.001", "grpo_vs_sft", 10.0, 0.001),
    ("grpo >= control + 8, p < 0.001", "grpo_vs_sft_continued", 8.0, 0.001),
]


def margin(cmp: dict, n: int) -> float:
    """A paired difference in points: (questions fixed - questions broken) / n."""
    return 100.0 * (cmp["fixed"] - cmp["broke"]) / n


def sft_settled(manifest: dict) -> tuple[bool, str]:
    """Early stopping fired (SFT stopped before its step budget, keeping an earlier step) and the
    compute-matched control stays within 3 points of SFT with p >= 0.05: more of the same SFT
    would not have moved the baseline RL is compared with."""
    sft = manifest["stages"]["sft"]
    n = sft["n"]
    drift = manifest["comparisons"]["sft_continued_vs_sft"]
    fired = sft["steps_run"] < sft["config"]["steps"] and sft["best_step"] < sft["steps_run"]
    close = abs(margin(drift, n)) <= 3.0 and drift["p"] >= 0.05
    return fired and close, (f"kept step {sft['best_step']} of {sft['steps_run']} run ({sft['config']['steps']} "
                             f"budgeted); control {margin(drift, n):+.1f}, p={drift['p']:.2g}")


def target_checks(manifest: dict) -> list[tuple[str, str, bool]]:
    """(target, what was measured, holds?) for one seed's manifest."""
    stages, n = manifest["stages"], manifest["stages"]["sft"]["n"]
    base, sft = 100 * stages["base_pretrained"]["accuracy"], 100 * stages["sft"]["accuracy"]
    settled, how = sft_settled(manifest)
    checks = [("base_pretrained <= 10%", f"{base:.1f}%", base <= 10.0),
              ("sft in 20-60%", f"{sft:.1f}%", 20.0 <= sft <= 60.0),
              ("sft settled", how, settled)]
    for name, key, points, p_max in MARGIN_TARGETS:
        cmp = manifest["comparisons"][key]
        got = margin(cmp, n)
        checks.append((name, f"{got:+.1f} (+{cmp['fixed']}/-{cmp['broke']}, p={cmp['p']:.2g})",
                       got >= points and cmp["p"] < p_max))
    return checks


def stages_in(manifests: list[dict]) -> list[str]:
    """The registry's stages that every manifest has (a manifest written before `ppo_rm` existed lacks it)."""
    return [s for s in STAGE_NAMES if all(s in m["stages"] for m in manifests)]


def seed_summary(manifest: dict) -> dict:
    """One seed's row: accuracies (%), margins (points) with p, final KLs, and its target checks."""
    stages, n = manifest["stages"], manifest["stages"]["sft"]["n"]
    return {"seed": manifest.get("seed"),
            "accuracy": {s: round(100 * stages[s]["accuracy"], 1) for s in stages_in([manifest])},
            "margins": {key: {"points": round(margin(manifest["comparisons"][key], n), 1),
                              "p": manifest["comparisons"][key]["p"]} for _, key, _, _ in MARGIN_TARGETS},
            "final_kl": {s: stages[s].get("final_kl") for s in ("ppo", "ppo_rm", "grpo") if s in stages},
            "targets": {name: ok for name, _, ok in target_checks(manifest)},
            "total_minutes": round(manifest["total_seconds"] / 60, 1)}


def summarize(manifests: list[dict]) -> dict:
    """Every seed's summary, plus the mean and the worst seed of each accuracy and margin."""
    rows = [seed_summary(m) for m in manifests]
    acc = {s: [r["accuracy"][s] for r in rows] for s in stages_in(manifests)}
    marg = {k: [r["margins"][k]["points"] for r in rows] for _, k, _, _ in MARGIN_TARGETS}
    return {"seeds": rows,
            "mean": {"accuracy": {s: round(sum(v) / len(v), 1) for s, v in acc.items()},
                     "margins": {k: round(sum(v) / len(v), 1) for k, v in marg.items()}},
            "worst": {"margins": {k: min(v) for k, v in marg.items()},
                      "max_p": {k: max(r["margins"][k]["p"] for r in rows) for k in marg}},
            "all_targets_hold": all(all(r["targets"].values()) for r in rows)}


SHORT = {"base_pretrained": "base", "sft_continued": "control"}


def render(summary: dict) -> str:
    """The seeds table as Markdown: accuracies, margins (p), KL, minutes, targets."""
    stages = list(summary["mean"]["accuracy"])
    kls = [s for s in ("ppo", "ppo_rm", "grpo") if all(s in r["final_kl"] for r in summary["seeds"])]
    head = ("| seed | " + " | ".join(SHORT.get(s, s) for s in stages) + " | dpo−sft | ppo−sft | grpo−sft | grpo−control "
            f"| KL {' / '.join(kls)} | minutes | targets |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in summary["seeds"]:
        a, m = r["accuracy"], r["margins"]
        cells = [str(r["seed"])] + [f"{a[s]:.1f}" for s in stages]
        cells += [f"{m[k]['points']:+.1f} (p={m[k]['p']:.1g})" for _, k, _, _ in MARGIN_TARGETS]
        cells += [" / ".join(f"{r['final_kl'][s]:.3f}" for s in kls), f"{r['total_minutes']:.1f}",
                  "all hold" if all(r["targets"].values()) else
                  "missed: " + ", ".join(k for k, ok in r["targets"].items() if not ok)]
        lines.append("| " + " | ".join(cells) + " |")
    mean, worst = summary["mean"], summary["worst"]
    lines.append("| mean | " + " | ".join(f"{mean['accuracy'][s]:.1f}" for s in stages) + " | "
                 + " | ".join(f"{mean['margins'][k]:+.1f}" for _, k, _, _ in MARGIN_TARGETS) + " | | | |")
    lines.append("| worst | " + "| " * len(stages) + " | ".join(
        f"{worst['margins'][k]:+.1f} (p={worst['max_p'][k]:.1g})" for _, k, _, _ in MARGIN_TARGETS) + " | | | |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Put several seeds' pipeline manifests side by side and check the "
                                 "course's targets on each.")
    ap.add_argument("manifests", nargs="+", help="manifest.json files, one per seed")
    ap.add_argument("--write", metavar="MANIFEST", help="also store the table in this manifest under 'seeds'")
    args = ap.parse_args(argv)
    try:
        manifests = [json.loads(Path(p).read_text()) for p in args.manifests]
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: {e}")
    summary = summarize(manifests)
    print(render(summary))
    for m in manifests:
        for name, got, ok in target_checks(m):
            print(f"seed {m.get('seed')}: {'ok ' if ok else 'MISS'} {name:32s} {got}")
    if args.write:
        target = json.loads(Path(args.write).read_text())
        target["seeds"] = {**summary, "files": [str(p) for p in args.manifests]}
        Path(args.write).write_text(json.dumps(target, indent=1) + "\n")
    return 0 if summary["all_targets_hold"] else 1


if __name__ == "__main__":
    sys.exit(main())
