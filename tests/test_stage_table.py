"""Stage table: safe concurrent appends, precise errors, Wilson, exact McNemar, rendering, plot."""

import hashlib
import json
import math
import multiprocessing as mp
from fractions import Fraction

import pytest

from lessons_lib import jsonl, stage_table as st, stats


def _row(label, correct, n=100, dataset="synthetic", split="test", **kw):
    return {"label": label, "dataset": dataset, "split": split, "n": n, "correct": correct,
            "accuracy": correct / n, **kw}


def _records(correct_flags, questions=None):
    return [{"index": i, "question": (questions or {}).get(i, f"q{i}"), "correct": c}
            for i, c in enumerate(correct_flags)]


# ---- appending ------------------------------------------------------------------------------

def _append_many(path, writer, count):
    payload = "x" * 3000  # long lines: a torn write would show up as interleaved bytes
    for i in range(count):
        jsonl.append_jsonl(path, {"writer": writer, "i": i, "payload": payload})


def test_two_processes_appending_lose_nothing_and_never_interleave(tmp_path):
    path = tmp_path / "table.jsonl"
    ctx = mp.get_context("spawn")  # real separate processes, not threads
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 300)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    rows = [json.loads(line) for line in lines]  # every line parses: no interleaving
    for w in (0, 1):
        assert [r["i"] for r in rows if r["writer"] == w] == list(range(300))  # none lost, in order


def test_append_creates_parent_dirs_and_round_trips(tmp_path):
    path = tmp_path / "deep" / "dir" / "t.jsonl"
    st.append_row(path, _row("sft", 40))
    st.append_row(path, _row("grpo", 60))
    assert [r["label"] for r in st.read_rows(path)] == ["sft", "grpo"]


def test_broken_line_is_reported_with_file_and_line_and_the_rest_is_read(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_row("a", 1)) + "\n\n" + '{"label": "b", "n": 3,\n' + json.dumps(_row("c", 2)) + "\n")
    with pytest.warns(st.StageTableWarning, match=rf"{path.name}:3: not valid JSON.*sed -i '3d'"):
        assert [r["label"] for r in st.read_rows(path)] == ["a", "c"]


def test_lines_that_are_not_rows_are_skipped_and_a_file_without_rows_is_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(st.StageTableError, match=r"t.jsonl holds no stage-table rows.*line 1: expected a JSON object"):
        st.read_rows(path)
    path.write_text(json.dumps({"label": "x"}) + "\n")
    with pytest.raises(st.StageTableError, match="lacks"):
        st.read_rows(path)
    bad = [{"label": "x"}, {"label": "zero", "n": 0, "correct": 0}, _row("neg", -1), _row("p", 1, parent=["list"])]
    path.write_text("\n".join(json.dumps(r) for r in [_row("ok", 1), *bad]) + "\n")
    with pytest.warns(st.StageTableWarning) as caught:
        assert [r["label"] for r in st.read_rows(path)] == ["ok"]
    assert [str(w.message).split(": ")[0].rsplit(":", 1)[1] for w in caught] == ["2", "3", "4", "5"]
    with pytest.raises(st.StageTableError, match="no such file"):
        st.read_rows(tmp_path / "missing.jsonl")
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(st.StageTableError, match=r"t.jsonl:2: not valid JSON"):  # records: strict
        st.read_records(path)


def test_duplicate_label_keeps_latest_in_first_position_and_says_so():
    rows = [_row("base", 1), _row("sft", 30), _row("grpo", 50), _row("sft", 35)]
    kept, dropped = st.latest_rows(rows)
    assert [(r["label"], r["correct"]) for r in kept] == [("base", 1), ("sft", 35), ("grpo", 50)]
    assert dropped == 1
    text = st.render_table(rows)
    assert "35.0%" in text and "30.0%" not in text
    assert "1 older row(s) with a repeated label were replaced" in text


def test_same_label_on_two_datasets_is_not_a_duplicate():
    rows = [_row("sft", 30), _row("sft", 0, n=200, dataset="gsm8k")]
    kept, dropped = st.latest_rows(rows)
    assert len(kept) == 2 and dropped == 0
    text = st.render_table(rows)
    assert "[synthetic / test]" in text and "[gsm8k / test]" in text


# ---- statistics -----------------------------------------------------------------------------

def test_wilson_matches_hand_computation_and_edges():
    lo, hi = stats.wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = stats.wilson_interval(0, 200)
    assert lo == 0.0 and hi == pytest.approx(0.01884, abs=1e-4)  # not the degenerate [0, 0]
    lo, hi = stats.wilson_interval(200, 200)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.01884, abs=1e-4)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_against_binomial_by_hand():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # 2 * (1/2)^6
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # symmetric
    expected = float(2 * Fraction(sum(math.comb(12, i) for i in range(3)), 2 ** 12))
    assert stats.mcnemar_exact(10, 2) == pytest.approx(expected)  # 0.03857...
    assert 0 < stats.mcnemar_exact(200, 5) < 1e-40  # tiny p-values do not underflow to 0


def test_paired_counts_fixed_and_broke():
    old = _records([True, True, False, False, False])
    new = _records([True, False, True, True, False])
    c = stats.paired_counts(new, old)
    assert (c["both_right"], c["fixed"], c["broke"], c["both_wrong"], c["n"]) == (1, 2, 1, 1, 5)
    assert c["fixed_ids"] == [2, 3] and c["broke_ids"] == [1]
    assert c["p"] == pytest.approx(1.0)


def test_paired_difference_interval_matches_newcombe_and_behaves():
    # Cavo et al. 2012 (Fagerland, Lydersen & Laake, "Statistical analysis of contingency tables", ch. 8):
    # 59 both, 6 only the first, 16 only the second, 80 neither -> -0.0621 (95% CI -0.1186 to -0.0046)
    lo, hi = stats.paired_difference_interval(59, 6, 16, 80)
    assert (lo, hi) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert stats.paired_difference_interval(59, 16, 6, 80) == pytest.approx((-hi, -lo))  # swap the stages: negate
    lo, hi = stats.paired_difference_interval(150, 0, 0, 50)  # never disagree: around 0, not zero-width
    assert lo == pytest.approx(-hi) and 0 < hi < 0.03
    lo, hi = stats.paired_difference_interval(0, 30, 0, 0)  # all 30 fixed: +100 points, and never above it
    assert hi == 1.0 and 0.8 < lo < 1.0
    assert stats.paired_difference_interval(0, 0, 0, 0) == (-1.0, 1.0)


def test_paired_difference_interval_is_the_normal_one_for_large_n():
    a, b, c, d = 40_000, 9_000, 6_000, 45_000  # 100,000 questions: Newcombe and delta ± z·se agree
    n, delta = a + b + c + d, (b - c) / (a + b + c + d)
    se = math.sqrt(((b + c) / n - delta ** 2) / n)
    assert stats.paired_difference_interval(a, b, c, d) == pytest.approx((delta - stats.Z95 * se, delta + stats.Z95 * se), abs=2e-4)


def test_difference_by_sample_size_uses_the_first_n_shared_questions():
    new = _records([i % 10 == 0 for i in range(300)])       # right on 0, 10, 20, ...
    old = _records([i in (5, 155, 255) for i in range(300)])  # right on three others
    rows = stats.difference_by_sample_size(new, list(reversed(old)), sizes=(100, 10, 200, 301))  # any order
    assert [r["n"] for r in rows] == [10, 100, 200]  # sorted; 301 > the 300 shared questions: left out
    assert [(r["fixed"], r["broke"]) for r in rows] == [(1, 1), (10, 1), (20, 2)]
    assert [r["delta"] for r in rows] == pytest.approx([0.0, 9.0, 9.0])
    lo, hi = stats.paired_difference_interval(0, 10, 1, 89)
    assert (rows[1]["lo"], rows[1]["hi"]) == pytest.approx((100 * lo, 100 * hi))
    assert rows[1]["p"] == stats.mcnemar_exact(10, 1)


def test_paired_counts_refuses_different_questions():
    with pytest.raises(ValueError, match="different questions"):
        stats.paired_counts(_records([True]), _records([True], questions={0: "other"}))


# ---- rendering ------------------------------------------------------------------------------

def _table_with_records(tmp_path):
    flags = {"base_pretrained": [False] * 40, "sft": [i % 2 == 0 for i in range(40)],
             "grpo": [i % 4 != 3 for i in range(40)], "sft_continued": [i % 3 != 2 for i in range(40)]}
    parents = {"sft": "base_pretrained", "grpo": "sft", "sft_continued": "sft"}
    table = tmp_path / "t.jsonl"
    for label, f in flags.items():
        rec = tmp_path / f"{label}.jsonl"
        st.write_records(rec, _records(f))
        st.append_row(table, _row(label, sum(f), n=40, records=str(rec), parent=parents.get(label),
                                  control="sft_continued" if label == "grpo" else None))
    return table


def test_render_table_with_intervals_and_paired_tests(tmp_path):
    text = st.render_table(st.read_rows(_table_with_records(tmp_path)))
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["stage", "synthetic", "acc", "95%"]
    sft = next(line for line in lines if line.startswith("sft "))
    assert "50.0%" in sft and "+50.0 vs base_pretrained (+20/-0, p=" in sft
    grpo = next(line for line in lines if line.startswith("grpo"))
    assert "+25.0 vs sft (+10/-0, p=0.0020)" in grpo and "vs sft_continued" in grpo
    assert any(line.startswith("sft_continued (control)") for line in lines)
    assert "Wilson" in text and "McNemar" in text


def test_render_markdown(tmp_path):
    md = st.render_table(st.read_rows(_table_with_records(tmp_path)), markdown=True)
    assert "| stage | synthetic acc | 95% CI | n |" in md
    assert md.count("\n| ") >= 5 and "---:" in md


def test_table_without_records_has_no_paired_columns():
    text = st.render_table([_row("base", 2), _row("sft", 40, parent="base")])
    assert "vs parent" not in text.splitlines()[1]
    assert "40.0%" in text


def test_plot_writes_png(tmp_path):
    from lessons_lib.plots import plot_stage_accuracy
    out = tmp_path / "plot.png"
    plot_stage_accuracy(st.read_rows(_table_with_records(tmp_path)), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_row_fields(tmp_path, monkeypatch):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    recs = [{"correct": True}, {"correct": False}, {"correct": True}, {"correct": True}]
    row = st.make_row("sft", recs, ckpt=ckpt, dataset="synthetic", split="test", max_new_tokens=64,
                      strategy=None, seconds=2.0, generated_tokens=100, records_path=tmp_path / "r.jsonl")
    assert (row["n"], row["correct"], row["accuracy"]) == (4, 3, 0.75)
    assert row["ckpt_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert row["ckpt"] == str(ckpt.resolve())  # outside the repo: absolute
    assert row["tokens_per_s"] == 50.0 and row["strategy"] == "auto"
    assert row["lessons_lib_version"]
    assert st.display_path(st.REPO_ROOT / "checkpoints" / "sft.pt") == "checkpoints/sft.pt"


def test_make_row_counts_truncated_but_credited_answers(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    make = lambda recs: st.make_row("sft", recs, ckpt=ckpt, dataset="synthetic", split="test", max_new_tokens=64,
                                    strategy=None, seconds=1.0, generated_tokens=10)
    recs = [{"correct": True, "finished": False}, {"correct": True, "finished": True},
            {"correct": False, "finished": False}, {"correct": True, "finished": False}]
    assert make(recs)["truncated_correct"] == 2  # right although cut off; the wrong cut-off one is not counted
    assert make([{"correct": True}, {"correct": False}])["truncated_correct"] is None  # unknown, not 0


def test_truncated_but_credited_answers_are_noted_and_old_rows_still_render():
    rows = [_row("base", 1), _row("sft", 40, truncated_correct=0), _row("grpo", 45, truncated_correct=7),
            _row("ppo", 44, truncated_correct=2)]
    text, md = st.render_table(rows), st.render_table(rows, markdown=True)
    note = text.splitlines()[-1]
    assert note.startswith("Correct but truncated") and "grpo 7 of 45 correct, ppo 2 of 44 correct" in note
    assert "not recorded for base" in note and "sft" not in note  # 0 is not listed; a missing count is unknown
    assert md.splitlines()[-1] == "_" + note + "_"
    old = [_row("base", 1), _row("sft", 40)]  # rows written before the field existed
    assert st.render_table(old) == st.render_table([{**r, "truncated_correct": 0} for r in old])  # no note
    assert "truncated" not in st.render_table(old)
    odd = [_row("sft", 40, truncated_correct="7"), _row("grpo", 3, truncated_correct=9)]  # hand-edited: not counts
    assert "truncated" not in st.render_table(odd)  # 9 > 3 correct: ignored, never a crash
    two = [_row("grpo", 45, truncated_correct=7), _row("grpo", 1, n=200, dataset="gsm8k", truncated_correct=1)]
    assert "grpo (synthetic/test) 7 of 45 correct, grpo (gsm8k/test) 1 of 1 correct" in st.render_table(two)


def test_skipped_prompts_are_noted():
    text = st.render_table([_row("sft", 0, n=200, dataset="gsm8k", skipped=23), _row("base", 0, n=200, dataset="gsm8k")])
    assert "counted wrong): sft 23/200" in text and "base" not in text.splitlines()[-1]


def test_p_values_keep_two_significant_digits_and_tiny_ones_say_so():
    assert stats.format_p(0.000999) == "p=0.0010"  # not 1e-03, which claims a tenth of the precision
    assert [stats.format_p(p) for p in (1.0, 0.868, 0.05, 0.002, 3.2e-5)] == ["p=1.0", "p=0.87", "p=0.050", "p=0.0020",
                                                                          "p=0.000032"]
    assert stats.format_p(1e-6) == "p=0.0000010" and stats.format_p(3e-62) == "p<1e-6"
    assert stats.format_p(0.00994) == "p=0.0099" and stats.format_p(0.00996) == "p=0.010"  # rounding moves the digits
    assert stats.format_p(0.5, " ") == "p = 0.50" and stats.format_p(0.0, " ") == "p < 1e-6"


def test_a_paired_comparison_on_fewer_questions_than_a_row_says_on_how_many(tmp_path):
    """sft 400/500 and grpo 50/100: '+50.0 vs sft' is on the 100 shared questions, and says so."""
    sft = [i >= 100 for i in range(500)]  # wrong on the first 100, right on the other 400
    grpo = [i % 2 == 0 for i in range(100)]
    table = tmp_path / "t.jsonl"
    for label, flags, parent in (("sft", sft, None), ("grpo", grpo, "sft")):
        st.write_records(tmp_path / f"{label}.jsonl", _records(flags))
        st.append_row(table, _row(label, sum(flags), n=len(flags), records=str(tmp_path / f"{label}.jsonl"),
                                  parent=parent))
    grpo_line = next(line for line in st.render_table(st.read_rows(table)).splitlines() if line.startswith("grpo"))
    assert "+50.0 vs sft (+50/-0 on n=100, p<1e-6)" in grpo_line
    (tmp_path / "same").mkdir()
    same = _table_with_records(tmp_path / "same")
    assert " on n=" not in st.render_table(st.read_rows(same))  # every row on the same 40 questions: no n shown
