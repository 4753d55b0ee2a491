"""Solutions to the exercises of `notebooks/09_talk_to_a_checkpoint.ipynb`. Try them first!"""
import torch

from lessons_lib import batched_generate, chat, encode_prompt
from rewards import extract_answer, gsm8k_gold_answer, is_correct, reward_gsm8k


# Exercise 1 · ask, from its parts.
def my_ask(model, question, gold):
    """One greedy answer -> {"response", "extracted", "correct", "reward"}."""
    prompt = encode_prompt([{"role": "user", "content": question}])
    [response] = batched_generate(model, [prompt], max_new_tokens=256, greedy=True, progress=False)
    return {"response": response, "extracted": extract_answer(response), "correct": bool(is_correct(response, gold)),
            "reward": float(reward_gsm8k(response, gold))}


# Exercise 2 · where two stages disagree, question by question.
def disagreements(records_a, records_b):
    """(indices only a gets right, indices only b gets right), matched on record["index"]."""
    b_right = {r["index"]: bool(r["correct"]) for r in records_b}
    a_only = [r["index"] for r in records_a if r["index"] in b_right and r["correct"] and not b_right[r["index"]]]
    b_only = [r["index"] for r in records_a if r["index"] in b_right and not r["correct"] and b_right[r["index"]]]
    return a_only, b_only


# Exercise 3 · which stages copy the teacher on a trap-kind problem, and which are right. On fits[1]
# (test question 15, marbles) SFT and the control copy the teacher, DPO, PPO and GRPO write the gold.
# DPO still answers the teacher's number on 36 test questions (27 of them age, 7 garden, 2 marbles);
# SFT copies the teacher on all 36, PPO is right on 33 of them and GRPO on 31 (the rest: other numbers).
def verdicts(models, problem):
    """{stage: "gold" | "teacher" | "other"} for the greedy answer of every stage to one trap-kind problem."""
    gold, copied = gsm8k_gold_answer(problem["answer"]), gsm8k_gold_answer(problem["flawed_answer"])
    out = {}
    for stage, model in models.items():
        got = chat.ask(model, problem["question"])["extracted"]
        out[stage] = "gold" if got == gold else "teacher" if got == copied else "other"
    return out


def still_copies(problems, records, stage="dpo"):
    """Test questions on which `stage` still answers the teacher's wrong number: [(index, its response)].
    `records` are the stage's scored test records, in the order of `problems`."""
    return [(i, r["response"]) for i, (p, r) in enumerate(zip(problems, records, strict=True))
            if "flawed_answer" in p and r["extracted"] == gsm8k_gold_answer(p["flawed_answer"])]


# Exercise 4 · a distractor sentence: the templates already put one in a third of the problems, so a
# trained stage has learned to ignore it; whether an answer changes is read off `with_distractor`.
def with_distractor(question, sentence="It is 30 degrees outside."):
    """The question with an irrelevant sentence before its last sentence (the question itself)."""
    head, _, last = question.rpartition(". ")
    return f"{head}. {sentence} {last}" if head else f"{sentence} {question}"


# Exercise 5 · temperature: counts of right and teacher-copying samples at a temperature.
def sample_counts(model, problem, temperature, n=16, seed=0):
    """(right, the teacher's number) among n samples of one model on one trap-kind problem."""
    prompt = encode_prompt([{"role": "user", "content": problem["question"]}])
    texts = batched_generate(model, [prompt] * n, greedy=False, temperature=temperature,
                             generator=torch.Generator().manual_seed(seed), progress=False)
    got = [extract_answer(t) for t in texts]
    return got.count(gsm8k_gold_answer(problem["answer"])), got.count(gsm8k_gold_answer(problem["flawed_answer"]))


# On the notebook's marbles question (test question 3), 16 samples of SFT (right, the teacher's number):
SFT_SAMPLES_BY_TEMPERATURE = {0.7: (2, 14), 1.0: (1, 13), 1.3: (1, 10)}
TEMPERATURE = """\
A lower temperature sharpens the model's probabilities towards its greedy choice, which on a trap
question is the teacher's step: at 0.7 SFT copies the teacher in 14 of 16 samples, at 1.0 in 13, at 1.3
in 10, and the samples that are neither grow (0, 2 and 5 of 16). Sixteen samples are too few to count
the right ones (2, 1 and 1): with 64 samples, 13, 21 and 19 are right at 0.7, 1.0 and 1.3. GRPO learns
only from groups whose samples differ in reward. The pipeline's PPO and GRPO sample at 0.7
(`manifest.json`, each stage's config): SFT still writes the right step in about one sample in five
there (13 of 64), enough for mixed groups, and its samples stay clean; a higher temperature gives a
few more right samples but also more answers that are neither."""
