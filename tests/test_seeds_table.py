"""Tests for lessons_lib/seeds_table.py: the course's targets, checked per seed, and the seeds table."""
import json

from lessons_lib.seeds_table import main, seed_summary, summarize, target_checks


def manifest(seed=0, base=0.02, sft=0.40, fixed=None, steps_run=900, best_step=700):
    """A minimal pipeline manifest: accuracies on n=500 and (fixed, broke) per comparison."""
    n = 500
    acc = {"base_pretrained": base, "sft": sft, "dpo": sft + 0.05, "ppo": sft + 0.10, "grpo": sft + 0.20,
           "sft_continued": sft + 0.01}
    fixed = fixed or {"dpo_vs_sft": (30, 5), "ppo_vs_sft": (60, 10), "grpo_vs_sft": (110, 10),
                      "grpo_vs_sft_continued": (105, 10), "sft_continued_vs_sft": (20, 15)}
    stages = {s: {"accuracy": a, "n": n} for s, a in acc.items()}
    stages["sft"].update(steps_run=steps_run, best_step=best_step, config={"steps": 1200})
    stages["ppo"]["final_kl"], stages["grpo"]["final_kl"] = 0.02, 0.03
    comparisons = {k: {"fixed": f, "broke": b, "p": 1e-6 if f - b > 20 else 0.5} for k, (f, b) in fixed.items()}
    return {"seed": seed, "stages": stages, "comparisons": comparisons, "total_seconds": 1200.0}


def test_every_target_holds_on_a_good_seed():
    checks = target_checks(manifest())
    assert [ok for _, _, ok in checks] == [True] * 7
    assert seed_summary(manifest())["margins"]["grpo_vs_sft"]["points"] == 20.0  # (110 - 10) / 500


def test_each_target_can_fail():
    assert not dict((n, ok) for n, _, ok in target_checks(manifest(base=0.2)))["base_pretrained <= 10%"]
    assert not dict((n, ok) for n, _, ok in target_checks(manifest(sft=0.7)))["sft in 20-60%"]
    unsettled = dict((n, ok) for n, _, ok in target_checks(manifest(steps_run=1200, best_step=1200)))
    assert not unsettled["sft settled"]  # early stopping never fired
    small = manifest(fixed={"dpo_vs_sft": (20, 10), "ppo_vs_sft": (60, 10), "grpo_vs_sft": (110, 10),
                            "grpo_vs_sft_continued": (105, 10), "sft_continued_vs_sft": (40, 15)})
    checks = dict((n, ok) for n, _, ok in target_checks(small))
    assert not checks["dpo >= sft + 3, p < 0.01"]  # +2 points
    assert not checks["sft settled"]  # the control drifted +5


def test_summary_mean_and_worst_seed(tmp_path, capsys):
    seeds = [manifest(0), manifest(1, fixed={"dpo_vs_sft": (30, 5), "ppo_vs_sft": (60, 10),
                                              "grpo_vs_sft": (70, 10), "grpo_vs_sft_continued": (105, 10),
                                              "sft_continued_vs_sft": (20, 15)})]
    summary = summarize(seeds)
    assert summary["worst"]["margins"]["grpo_vs_sft"] == 12.0 and summary["mean"]["margins"]["grpo_vs_sft"] == 16.0
    assert summary["all_targets_hold"]
    paths = []
    for m in seeds:
        paths.append(tmp_path / f"seed{m['seed']}.json")
        paths[-1].write_text(json.dumps(m))
    assert main([str(p) for p in paths] + ["--write", str(paths[0])]) == 0
    assert json.loads(paths[0].read_text())["seeds"]["all_targets_hold"] is True
    out = capsys.readouterr().out
    assert "| worst |" in out and out.count("all hold") == 2
    paths[1].write_text(json.dumps(manifest(1, base=0.3)))
    assert main([str(p) for p in paths]) == 1  # one seed misses one target: the exit status says so
