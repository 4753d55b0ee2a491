"""The exercises' solutions (`solutions/`) pass the notebooks' own check cells and say what is true.

How the exercises work is in `solutions/README.md`. In short: a notebook cell tagged `exercise` holds the
learner's function (its body is `raise NotImplementedError`), and a self-contained cell tagged `check`
compares it with the library (`lessons_lib.exercises.check`). Here every check cell runs again, with the
names defined in `solutions/nbNN_<notebook>.py` standing in for the learner's, so a solution that drifts
from the library (or a check that cannot be passed) fails `make test`. The written answers of the other
exercises are tested against the library below, one test per notebook.
"""
import importlib
import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessons_lib import GPT, GPTConfig, encode_prompt, evaluate_expression, load_checkpoint, losses
from lessons_lib.check_verifier import load_model_solutions, MODELS
from lessons_lib.data import load_qa_pairs
from lessons_lib.exercises import NOT_WRITTEN, same_number
from lessons_lib.generation import _left_pad
from lessons_lib.hf_model import fewshot_examples, fewshot_prompt, left_pad, save_tiny_model
from lessons_lib.model import build_attention_mask
from lessons_lib.stage_table import read_rows
from rewards import extract_answer, gsm8k_gold_answer, is_correct, reward_gsm8k

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def tagged(notebook, tag):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [cell for cell in cells if tag in cell.get("metadata", {}).get("tags", [])]


def solutions_of(notebook):
    """notebooks/01_answer_extraction.ipynb -> the module solutions.nb01_answer_extraction."""
    return importlib.import_module(f"solutions.nb{notebook.stem}")


WITH_EXERCISES = [nb for nb in NOTEBOOKS if tagged(nb, "check")]
CHECKS = [pytest.param(nb, i, id=f"{nb.stem}-check{i}") for nb in WITH_EXERCISES for i in range(len(tagged(nb, "check")))]


@pytest.mark.parametrize("notebook, i", CHECKS)
def test_the_solution_passes_the_notebooks_check_cell(notebook, i, capsys):
    source = "".join(tagged(notebook, "check")[i]["source"])
    namespace = dict(vars(solutions_of(notebook)))  # the solution's names in place of the learner's
    exec(compile(source, f"{notebook.name}, check cell {i}", "exec"), namespace)  # raises on a disagreement
    out = capsys.readouterr().out
    assert "cases agree with the library" in out and NOT_WRITTEN not in out


@pytest.mark.parametrize("notebook", WITH_EXERCISES, ids=lambda nb: nb.stem)
def test_the_notebook_leaves_its_exercises_to_the_learner(notebook):
    exercises, checks = tagged(notebook, "exercise"), tagged(notebook, "check")
    assert len(exercises) == len(checks) >= 1
    for cell in exercises:
        assert "raise NotImplementedError" in "".join(cell["source"])  # no solution under the question
    for cell in checks:  # ...and the saved run shows the check waiting for the learner
        assert NOT_WRITTEN in "".join("".join(o.get("text", "")) for o in cell["outputs"])


def test_the_reworked_notebooks_have_exercises():
    assert {nb.stem[:2] for nb in WITH_EXERCISES} >= {"00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10"}


# --- 00 · start here ----------------------------------------------------------------------------------

def test_00_written_answers():
    from lessons_lib.tokenizer import render
    s = importlib.import_module("solutions.nb00_start_here")
    for response in s.TAG_ANSWER_DISAGREES:  # the regex and the checker really disagree there
        assert not same_number(s.tag_answer(response), extract_answer(response))
    assert extract_answer("<answer>17 or 18</answer>") is None and s.NOTEBOOK_FOR_17_OR_18 == "01_answer_extraction"
    assert render(encode_prompt(s.TWO_TURNS)) == s.TWO_TURNS_RENDERED
    assert (len(s.JANET), len(encode_prompt([{"role": "user", "content": s.JANET}]))) == (s.JANET_CHARACTERS, s.JANET_TOKENS)


def test_00_who_copies_the_teacher_on_the_notebooks_question():
    from lessons_lib.synthetic import synthetic_problems
    s = importlib.import_module("solutions.nb00_start_here")
    ckpt = Path(__file__).resolve().parent.parent / "checkpoints"
    models = {name: load_checkpoint(ckpt / f"{name}.pt", device="cpu") for name in ("sft", "grpo", "sft_continued")}
    assert s.who_copies_the_teacher(models, synthetic_problems("test")[3]) == ["sft", "sft_continued"]


# --- 01 · answer extraction ---------------------------------------------------------------------------

def test_01_written_answers():
    s = importlib.import_module("solutions.nb01_answer_extraction")
    assert not is_correct(s.RIGHT_BUT_SCORED_WRONG, "18") and is_correct(s.FIXED_WITH_A_TAG, "18")
    assert {text: is_correct(text, "1450000") for text in s.VERDICTS_FOR_1450000} == s.VERDICTS_FOR_1450000
    assert s.verdicts_changed(load_model_solutions(), load_qa_pairs("gsm8k", "test")) == 0
    assert extract_answer("<answer>16-18</answer>") is None and extract_answer("The eggs cost 20-2 = 18") == "18"


def test_01_last_number_agrees_with_the_fallback_on_real_text():
    """On every GPT-3 solution (rule 3 reads them all) the mini version agrees with the library except
    on the few that only the library understands: fractions like 7/14 and a run of 1482 digits."""
    last_number = importlib.import_module("solutions.nb01_answer_extraction").last_number
    texts = [row[model]["solution"] for row in load_model_solutions() for model in MODELS]
    disagree = [t for t in texts if not same_number(last_number(t), extract_answer(t))]
    assert len(disagree) == 3 and all("/" in t[-20:] or "3" * 1000 in t for t in disagree)


# --- 02 · clipped reward ------------------------------------------------------------------------------

def test_02_clipped_reward_is_the_librarys_on_real_outputs():
    s = importlib.import_module("solutions.nb02_clipped_reward")
    test = load_qa_pairs("gsm8k", "test")
    for row, (_, answer) in zip(load_model_solutions(), test):
        text, gold = row["175b_verification"]["solution"], gsm8k_gold_answer(answer)
        tagged_text = text.rpartition("A:")[0] + f"<answer>{gold}</answer>"
        assert s.clipped_reward(text, gold) == reward_gsm8k(text, gold)
        assert s.clipped_reward(tagged_text, gold) == reward_gsm8k(tagged_text, gold)


def test_02_written_answers():
    s = importlib.import_module("solutions.nb02_clipped_reward")
    assert "or" in s.BOTH_PAY_1_2 and "19" in s.BOTH_PAY_1_2
    assert reward_gsm8k(s.BOTH_PAY_1_2, "18") == 1.2
    attempts = [("hedge", "<answer>17 or 18</answer>"), ("honest", "<answer>18</answer>"), ("wrong", "17")]
    assert s.paid_only_by_naive(attempts) == ["hedge"]
    golds = [gsm8k_gold_answer(a) for _, a in load_qa_pairs("gsm8k", "test")]
    zeros, seed, strict = s.always_zero(golds)
    assert zeros == golds.count("0")
    assert seed == pytest.approx(sum(reward_gsm8k("<answer>0</answer>", g) for g in golds) / len(golds))
    assert strict == pytest.approx(sum(is_correct("<answer>0</answer>", g) * 1.2 for g in golds) / len(golds))


def test_02_a_bigger_bonus_is_worth_what_the_solution_says(monkeypatch):
    import rewards.gsm8k
    monkeypatch.setattr(rewards.gsm8k, "FORMAT_BONUS", 0.5)  # the library's reward with a 0.5 bonus
    on_wrong = reward_gsm8k("<answer>17</answer>", "18") - reward_gsm8k("17", "18")
    on_right = reward_gsm8k("<answer>18</answer>", "18") - reward_gsm8k("18", "18")
    s = importlib.import_module("solutions.nb02_clipped_reward")
    assert s.tag_worth(0.5) == pytest.approx((on_wrong, on_right)) == (0.5, 0.2)


# --- 03 · bucketed generation -------------------------------------------------------------------------

prompts = st.lists(st.lists(st.integers(0, 263), min_size=1, max_size=6), min_size=1, max_size=4)


@settings(max_examples=50, deadline=None)
@given(prompts)
def test_03_left_pad_is_the_librarys(batch):
    ids, mask, positions = importlib.import_module("solutions.nb03_bucketed_generation").left_pad(batch)
    lib = _left_pad(batch, "cpu")
    assert [ids, mask, positions] == [t.tolist() for t in lib]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=6), st.integers(1, 6), st.integers(1, 3))
def test_03_attention_mask_is_the_librarys(row, T, batch):
    T = min(T, len(row))
    key_mask = torch.tensor([row] * batch)
    mine = importlib.import_module("solutions.nb03_bucketed_generation").attention_mask(key_mask, T, len(row) - T)
    assert torch.equal(mine, build_attention_mask(key_mask, T, len(row) - T, "cpu")[:, 0])


def test_03_written_answers():
    s = importlib.import_module("solutions.nb03_bucketed_generation")
    config = GPTConfig()
    cache = GPT(config).new_kv_cache(2, 16)  # 2 rows, 16 positions, float32
    stored = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
    assert s.kv_cache_mib(config, rows=2, positions=16) * 2**20 == stored
    assert s.kv_cache_mib(config) == 320 and s.kv_cache_mib(config, bytes_per_value=2) == 160
    assert all(evaluate_expression(expr) is None for expr in s.REFUSED_EXPRESSIONS)


# --- 04 · scoring a checkpoint ------------------------------------------------------------------------

def test_04_my_failure_category_is_the_librarys_on_each_category():
    from lessons_lib.scoring import failure_category
    mine = importlib.import_module("solutions.nb04_scoring_a_checkpoint").my_failure_category
    question = "Ann has 3 apples and 5 pears. How many fruits?"
    cases = [{"correct": True, "finished": False, "extracted": "8", "response": "<<3+5=8>>8"},  # credited, cut off
             {"correct": False, "finished": False, "extracted": "3", "response": "Ann has 3"},
             {"correct": False, "finished": True, "extracted": None, "response": "fruits!"},
             {"correct": False, "extracted": None, "response": "fruits!"},  # no `finished`: not truncated
             {"correct": False, "finished": True, "extracted": "9", "response": "<<3+5=9>>9"},
             {"correct": False, "finished": True, "extracted": "44", "response": "<<3+41=44>>44"},
             {"correct": False, "finished": True, "extracted": "15", "response": "<<3*5=15>>15"}]
    for record in cases:
        for with_question in ({"question": question}, {}):
            assert mine({**record, **with_question}) == failure_category({**record, **with_question})


def test_04_written_answers():
    s = importlib.import_module("solutions.nb04_scoring_a_checkpoint")
    problems = [{"flawed_answer": "#### 7"}, {"flawed_answer": "#### 7"}, {"flawed_answer": "#### 7"}, {}]
    records = [{"index": 0, "correct": False, "extracted": "7"}, {"index": 1, "correct": False, "extracted": "6"},
               {"index": 2, "correct": True, "extracted": "5"}, {"index": 3, "correct": False, "extracted": "1"}]
    assert [r["index"] for r in s.wrong_trap_answers_not_copied(problems, records)] == [1]
    manifest = json.loads((Path(__file__).resolve().parent.parent / "checkpoints" / "manifest.json").read_text())
    name, change = s.biggest_mover(manifest)
    assert name in {"trap_acc", "clean_acc", "copies_teacher"} and isinstance(change, float)
    response = "<<18*6=108>>108 dollars\n<<108*3=324>>324 dollars\n<<324-7=317>>317 dollars left\n<answer>317</answer>"
    cuts = s.credited_cut_points(response, "317")
    assert cuts == [k for k in range(1, len(response)) if is_correct(response[:k], "317")]
    assert min(cuts) == response.index("=317") + 4 and max(cuts) == len(response) - 1  # from the last result on
    gold = gsm8k_gold_answer(load_qa_pairs("synthetic", "test", limit=1)[0][1])
    assert reward_gsm8k(s.a_response_worth_0_2(gold), gold) == 0.2


# --- 05 · the stage table -----------------------------------------------------------------------------

def test_05_written_answers():
    from lessons_lib.stats import mcnemar_exact
    s = importlib.import_module("solutions.nb05_stage_table")
    manifest = json.loads((Path(__file__).resolve().parent.parent / "checkpoints" / "manifest.json").read_text())
    comparisons = manifest["comparisons"]
    for alpha in (0.05, 0.001):
        listed = s.significant(comparisons, alpha)
        assert all(comparisons[k]["p"] < alpha and comparisons[k]["fixed"] > comparisons[k]["broke"] for k in listed)
        assert all(comparisons[k]["p"] >= alpha or comparisons[k]["fixed"] <= comparisons[k]["broke"]
                   for k in set(comparisons) - set(listed))
    ref = [{"index": i, "correct": c} for i, c in enumerate([True, True, True, False])]
    new = [{"index": i, "correct": c} for i, c in enumerate([False, False, True, True])]
    control = [{"index": i, "correct": c} for i, c in enumerate([False, True, False, False])]
    assert s.broken_by_both(new, control, ref) == {0}
    assert 3_500 <= s.questions_needed() <= 5_000 and 10_000 <= s.questions_needed(0.01, 0.15) <= 14_000
    for delta, discordant in [(0.02, 106 / 500), (0.01, 0.15)]:
        m = round(discordant * s.questions_needed(delta, discordant))
        fixed = round(m * (0.5 + delta / (2 * discordant)))  # at the expected counts the test is significant...
        assert mcnemar_exact(fixed, m - fixed) < 0.05 and mcnemar_exact(fixed // 4, (m - fixed) // 4) > 0.05  # ...not at a quarter


# --- 06 · post-training losses -----------------------------------------------------------------------

def test_06_written_answers():
    s = importlib.import_module("solutions.nb06_post_training_losses")
    one = losses.group_advantages(torch.tensor([1.2] + [0.2] * 7), group_size=8)
    seven = losses.group_advantages(torch.tensor([1.2] * 7 + [0.2]), group_size=8)
    assert torch.allclose(one, torch.tensor([s.ONE_RIGHT[0]] + [s.ONE_RIGHT[1]] * 7), atol=1e-4)
    assert torch.allclose(seven, torch.tensor([s.SEVEN_RIGHT[0]] * 7 + [s.SEVEN_RIGHT[1]]), atol=1e-4)
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = s.BOTH_DOWN
    assert policy_chosen < ref_chosen and policy_rejected < ref_rejected  # both answers less likely
    loss, _, _ = losses.dpo_loss(*(torch.tensor([x]) for x in s.BOTH_DOWN), beta=0.1)
    assert loss.item() < 0.5


def test_06_clip_binds_is_the_librarys_clip_fraction():
    clip_binds = importlib.import_module("solutions.nb06_post_training_losses").clip_binds
    for ratio in [0.013 + 0.05 * i for i in range(50)]:  # 0.013 .. 2.463, never on a band edge
        for advantage in (-2.0, -0.5, 0.0, 0.5, 2.0):
            for eps in (0.1, 0.2, 0.3):
                _, fraction = losses.ppo_clipped_loss(torch.tensor([[math.log(ratio)]]), torch.zeros(1, 1),
                                                      torch.tensor([advantage]), torch.ones(1, 1), eps)
                assert clip_binds(ratio, advantage, eps) == bool(fraction.item()), (ratio, advantage, eps)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**31 - 1))
def test_06_group_advantages_is_the_librarys(groups, size, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (groups * size,), generator=g).float() * 0.6  # ties and zero-spread groups
    mine = importlib.import_module("solutions.nb06_post_training_losses").group_advantages(rewards, size)
    assert torch.allclose(mine, losses.group_advantages(rewards, size), atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=4), st.floats(0.5, 1.0), st.floats(0.0, 1.0),
       st.integers(0, 2**31 - 1))
def test_06_gae_is_the_librarys(lengths, gamma, lam, seed):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths) + 1
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    rewards, values = torch.randn(len(lengths), T, generator=g) * mask, torch.rand(len(lengths), T, generator=g)
    mine = importlib.import_module("solutions.nb06_post_training_losses").gae(rewards, values, mask, gamma, lam)
    for a, b in zip(mine, losses.gae(rewards, values, mask, gamma, lam)):
        assert torch.allclose(a, b, atol=1e-5)



# --- 07 · one RL step ---------------------------------------------------------------------------------

def test_07_written_answers():
    """The first-pass facts the answers state, on random groups: eq. 3 gives 0 at ratio 1 (token-mean need
    not), and DPO starts at log 2 whatever the pair, with no gradient for a pair of identical answers."""
    s = importlib.import_module("solutions.nb07_one_rl_step")
    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (16,), generator=g).float()
    rewards[:8] = torch.tensor([1.0] + [0.0] * 7)                 # at least one group with spread
    adv = losses.group_advantages(rewards, 8)
    lengths = torch.tensor([20] + [100] * 7 + [50] * 8)
    mask = (torch.arange(100)[None, :] < lengths[:, None]).float()
    logp = torch.randn(16, 100, generator=g)
    first = {mode: losses.ppo_clipped_loss(logp, logp, adv, mask, loss_agg=mode, norm=160)[0].item()
             for mode in losses.LOSS_AGGREGATIONS}
    assert abs(first["seq-mean-token-mean"] - s.EQ3_FIRST_PASS_LOSS) < 1e-6 and first["token-mean"] > 0.01
    same = torch.tensor([-12.5, -30.0])
    loss, _, _ = losses.dpo_loss(same, same - 3, same, same - 3)
    assert abs(loss.item() - s.DPO_FIRST_LOSS) < 1e-6
    policy = same.clone().requires_grad_(True)
    losses.dpo_loss(policy, policy, same, same)[0].backward()   # chosen = rejected: no gradient
    assert torch.all(policy.grad == 0)


# --- 08 · where the checkpoints come from -------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 60))
def test_08_trap_vs_clean_is_trap_report(seed, n):
    """Random verdicts and answers (some of them the teacher's wrong number) on the first n test problems."""
    from lessons_lib import synthetic
    rng = random.Random(seed)
    problems = synthetic.synthetic_problems("test", n)
    records = []
    for p in problems:
        options = [gsm8k_gold_answer(p["answer"]), None, "7"] + ([gsm8k_gold_answer(p["flawed_answer"])] * 2
                                                                  if "flawed_answer" in p else [])
        extracted = rng.choice(options)
        records.append({"extracted": extracted, "correct": extracted == gsm8k_gold_answer(p["answer"])})
    mine = importlib.import_module("solutions.nb08_where_the_checkpoints_come_from").trap_vs_clean(problems, records)
    report = synthetic.trap_report(problems, records)
    assert mine == {k: report[k] for k in ("trap_acc", "clean_acc", "copies_teacher")}


def test_08_the_dev_loss_gap_is_on_the_trap_kinds():
    from lessons_lib.checkpoint import load_checkpoint
    s = importlib.import_module("solutions.nb08_where_the_checkpoints_come_from")
    root = Path(__file__).resolve().parent.parent
    losses_ = s.dev_losses_by_kind(load_checkpoint(root / "checkpoints" / "sft.pt", device="cpu"))
    assert losses_["clean", "teacher"] == losses_["clean", "gold"]          # the teacher is gold on clean kinds
    assert 1.2 < losses_["trap", "gold"] / losses_["trap", "teacher"] < 1.4  # "about 30% more"
    assert "trap kinds" in s.WHERE_THE_GAP_IS


# --- 09 · talk to a checkpoint -----------------------------------------------------------------------

def test_09_my_ask_is_chat_ask_on_a_tiny_model():
    """A random tiny model writes anything, long and unfinished answers included: my_ask must agree."""
    from lessons_lib import chat
    my_ask = importlib.import_module("solutions.nb09_talk_to_a_checkpoint").my_ask
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, max_seq_len=512))
    for question, answer in load_qa_pairs("synthetic", "test", limit=3):
        gold = gsm8k_gold_answer(answer)
        assert my_ask(model, question, gold) == {k: chat.ask(model, question, gold=gold)[k]
                                                 for k in ("response", "extracted", "correct", "reward")}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=12), st.integers(0, 12))
def test_09_disagreements_is_paired_counts(rights, dropped):
    from lessons_lib.stats import paired_counts
    disagreements = importlib.import_module("solutions.nb09_talk_to_a_checkpoint").disagreements
    a = [{"index": i, "correct": x} for i, (x, _) in enumerate(rights)]
    b = [{"index": i, "correct": y} for i, (_, y) in enumerate(rights)][dropped:]  # b may miss some questions
    c = paired_counts(a, b)
    assert disagreements(a, b) == (c["fixed_ids"], c["broke_ids"])


def test_09_the_checkpoint_answers_are_what_the_solutions_say():
    """On the shipped checkpoints: the marbles question of the notebook, and DPO's remaining copies."""
    from lessons_lib.synthetic import synthetic_problems
    s = importlib.import_module("solutions.nb09_talk_to_a_checkpoint")
    ckpt = Path(__file__).resolve().parent.parent / "checkpoints"
    models = {name: load_checkpoint(ckpt / f"{name}.pt", device="cpu") for name in ("sft", "grpo")}
    problems = synthetic_problems("test")
    assert s.verdicts(models, problems[3]) == {"sft": "teacher", "grpo": "gold"}
    for temperature, counts in s.SFT_SAMPLES_BY_TEMPERATURE.items():  # 0.7: the notebook's 16 samples
        assert s.sample_counts(models["sft"], problems[3], temperature) == counts
    records = [json.loads(line) for line in (ckpt / "logs" / "test_records_dpo.jsonl").open()]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert len(s.still_copies(problems, records)) == manifest["stages"]["dpo"]["copies_teacher"] == 36


def test_09_with_distractor_keeps_the_question_last():
    with_distractor = importlib.import_module("solutions.nb09_talk_to_a_checkpoint").with_distractor
    question = "Ava has 4 boxes. She gives away 5 pencils. How many pencils are left?"
    assert with_distractor(question) == ("Ava has 4 boxes. She gives away 5 pencils. It is 30 degrees outside. "
                                         "How many pencils are left?")


# --- 10 · score a real model --------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(prompts, st.integers(0, 263))
def test_10_left_pad_is_the_librarys(batch, pad_id):
    ids, mask, positions = importlib.import_module("solutions.nb10_score_a_real_model").my_left_pad(batch, pad_id)
    ref_ids, ref_mask = left_pad(batch, pad_id)
    real = ref_mask.bool()  # the pad id may occur inside a prompt: the mask comes from the lengths
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert torch.equal(positions[real], _left_pad(batch, "cpu")[2][real])  # the course engine's positions


def test_10_fewshot_prompt_is_the_librarys():
    my_fewshot_prompt = importlib.import_module("solutions.nb10_score_a_real_model").my_fewshot_prompt
    for (question, _), k in zip(load_qa_pairs("gsm8k", "test", limit=9), range(9)):
        assert my_fewshot_prompt(question, fewshot_examples(k)) == fewshot_prompt(question, fewshot_examples(k))


def test_10_written_answers(tmp_path):
    """Score the notebook's tiny model twice, chat and plain, and compare the rows as exercise 3 asks."""
    s = importlib.import_module("solutions.nb10_score_a_real_model")
    script = Path(__file__).resolve().parent.parent / "scripts" / "eval_post_training.py"
    spec = importlib.util.spec_from_file_location("eval_post_training", script)
    evalpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evalpt)
    folder, table, threads = save_tiny_model(tmp_path / "tiny-qwen2"), tmp_path / "real.jsonl", torch.get_num_threads()
    try:
        for extra in (["--label", "tiny-chat"], ["--label", "tiny-plain", "--prompt_format", "plain"]):
            evalpt.main(["--hf", str(folder), "--limit", "3", "--max_new_tokens", "8", "--device", "cpu",
                         "--append", str(table), "--no_progress", *extra])
    finally:
        torch.set_num_threads(threads)  # the script sets its own (--threads)
    chat, plain = read_rows(table)
    per_run = {"seconds", "tokens_per_s", "records", "correct", "accuracy", "truncated_correct"}  # any two runs
    assert {k for k in chat.keys() | plain.keys() if chat.get(k) != plain.get(k)} - per_run == s.PLAIN_DIFFERS_FROM_CHAT_IN
    assert chat["ckpt_sha256"] == plain["ckpt_sha256"] and plain["fewshot_k"] is None
