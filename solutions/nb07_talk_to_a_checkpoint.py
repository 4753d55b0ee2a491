"""Solutions to the exercises of `notebooks/07_talk_to_a_checkpoint.ipynb`. Try them first!"""
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


# Exercise 3 · which stages copy the teacher on a trap-kind problem, and which are right.
def verdicts(models, problem):
    """{stage: "gold" | "teacher" | "other"} for the greedy answer of every stage to one trap-kind problem."""
    gold, copied = gsm8k_gold_answer(problem["answer"]), gsm8k_gold_answer(problem["flawed_answer"])
    out = {}
    for stage, model in models.items():
        got = chat.ask(model, problem["question"])["extracted"]
        out[stage] = "gold" if got == gold else "teacher" if got == copied else "other"
    return out


def grpo_broke(problems, records, traps):
    """Trap-kind test questions that SFT gets right and GRPO gets wrong: [(index, GRPO's response)]."""
    _, broke = disagreements(records["grpo"], records["sft"])
    return [(i, records["grpo"][i]["response"]) for i in broke if problems[i]["template"] in traps]


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


TEMPERATURE = """\
A lower temperature sharpens the model's probabilities towards its greedy choice, which on a trap question
is the teacher's step: fewer right samples, fewer mixed groups, less for GRPO to learn from. A higher one
gives more varied samples, more of them right, but also more nonsense. RL wants mixed groups: samples that
are sometimes right, so the pipeline samples at a temperature that keeps SFT's right step in play."""
