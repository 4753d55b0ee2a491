"""Score a checkpoint: greedy answers to GSM8K-format questions, checked by the verifier.

This is the seed's three lines, made into a function:

    prompts   = [encode_prompt([{"role": "user", "content": q}]) for q, _ in qa_pairs]
    responses = batched_generate(model, prompts, max_new_tokens, device=device, greedy=greedy)
    correct   = sum(is_correct(resp, gsm8k_gold_answer(ans)) for (q, ans), resp in zip(qa_pairs, responses))

It returns the accuracy *and* one record per question, so you can read the failures and compare two
stages item by item (which questions did GRPO fix? which did it break?). The reward in each record is
`reward_gsm8k` — the same number the RL stages were trained on — next to the plain correct/incorrect.
"""

import re
import warnings

from rewards import extract_answer, gsm8k_gold_answer, is_correct, parse_number, reward_gsm8k

from lessons_lib.calculator import evaluate_expression
from lessons_lib.engine import as_engine
from lessons_lib.generation import Generation


def score_responses(qa_pairs, responses, start_index=0, details=None) -> list[dict]:
    """One record per (question, answer) pair and its response — the checking half of scoring.

    Split out so you can check responses you got elsewhere; `start_index` offsets `index` (a
    sharded run scores a slice of the full list). With `details` (the `Generation`s behind the
    responses) each record also says how many tokens were generated and whether the model stopped
    by itself (`finished=False` means it ran out of `max_new_tokens`: truncated).
    """
    records = []
    for i, ((question, answer), response) in enumerate(zip(qa_pairs, responses, strict=True)):
        gold = gsm8k_gold_answer(answer)
        extra = {} if details is None else {"n_tokens": len(details[i].token_ids),
                                            "finished": bool(details[i].finished)}
        records.append({
            "index": start_index + i,
            "question": question,
            "response": response,
            "extracted": extract_answer(response),  # None when the model gave no (usable) answer
            "gold": gold,
            "correct": bool(is_correct(response, gold)),  # the headline metric: right or wrong
            "reward": float(reward_gsm8k(response, gold)),  # what RL optimised: 1.0 + 0.2 format bonus
            **extra,
        })
    return records


def truncated_but_credited(records) -> list[dict]:
    """Records marked correct although the model ran out of `max_new_tokens` (`finished is False`).

    The checker has no rule for "unfinished": its last-number fallback reads whatever number a cut-off
    answer ends on, and sometimes that is the gold (a right intermediate result, or the answer written
    before the model rambled on). Counting them shows how much of a score rests on answers the model
    never finished. Records without `finished` (responses scored without their `Generation`s) are
    never counted: nothing says they were cut off.
    """
    return [r for r in records if r.get("finished") is False and r["correct"]]


def accuracy_of(records) -> float:
    """Fraction of records marked correct (0.0 for an empty list, rather than dividing by zero)."""
    return sum(r["correct"] for r in records) / len(records) if records else 0.0


def gsm8k_accuracy(model, qa_pairs, max_new_tokens=256, device=None, greedy=True, batch_size=64,
                   strategy=None, progress=True) -> tuple[float, list[dict]]:
    """Greedy-decode an answer to every question and check it against the gold number.

    `model` is any engine (`lessons_lib.engine`): a course model (GPT or Llama, decoded by
    `batched_generate`) or a Hugging Face model (`hf_model.load_hf_model`); each brings its own
    prompt format and decoder, the checker and the records are these same functions.
    `qa_pairs` is a list of `(question, answer_field)` as returned by `load_qa_pairs` — the answer
    field is GSM8K's worked solution ending in `#### N`; only N is used. Returns
    `(accuracy, records)` where each record holds index, question, response, extracted, gold,
    correct and reward (plus n_tokens and finished). Greedy decoding makes the score
    deterministic, so two stages are compared on the model alone, not on sampling luck.

    A question too long to leave `max_new_tokens` of room in the model's context (real GSM8K
    questions on a small-context model) is not generated: it counts as wrong, its record gets
    `skipped`, and a warning says how many.
    """
    qa_pairs = list(qa_pairs)
    if not qa_pairs:  # e.g. an empty shard when there are more processes than questions
        return 0.0, []
    engine = as_engine(model)
    prompts = [engine.encode_question(q) for q, _ in qa_pairs]
    room = engine.context_length - max_new_tokens  # longest prompt that leaves room for the answer
    fits = [i for i, p in enumerate(prompts) if len(p) <= room]
    generations = engine.generate([prompts[i] for i in fits], max_new_tokens=max_new_tokens, device=device,
                                  greedy=greedy, batch_size=batch_size, strategy=strategy,
                                  progress=progress) if fits else []
    by_index = dict(zip(fits, generations))
    details = [by_index.get(i, Generation(text="")) for i in range(len(prompts))]  # no room: no answer
    records = score_responses(qa_pairs, [g.text for g in details], details=details)
    if len(fits) < len(prompts):
        for i in sorted(set(range(len(prompts))) - set(fits)):
            records[i]["skipped"] = "prompt too long for the model's context"
        warnings.warn(f"{len(prompts) - len(fits)} of {len(prompts)} prompts are longer than {room} tokens "
                      f"(context {engine.context_length} - max_new_tokens {max_new_tokens}); they were "
                      f"not generated and count as wrong. Lower max_new_tokens to give them room.")
    return accuracy_of(records), records


score_model = gsm8k_accuracy  # its name when a Hugging Face model had a scorer of its own (notebook 10, tests)


# ---------------------------------------------------------------------------------------------
# reading failures: why was a record wrong?

_CALC = re.compile(r"<<([^<>=]*)=([^<>]*)>>(\s*-?\d[\d,]*(?:\.\d+)?)?")  # <<48/2=24>>24: expr, result, copy
_PLAIN = re.compile(r"(?<![\w.])(\d[\d.,]*(?:\s*[-+*/x×]\s*\d[\d.,]*)+)\s*=\s*(-?\d[\d.,]*)")  # 3 * 4 = 12


def _wrong(expr: str, result: str) -> bool:
    """True when `expr` evaluates and `result` is a number that differs (beyond 2-place rounding)."""
    value = evaluate_expression(expr.replace(",", "").replace("x", "*").replace("×", "*"))
    claimed = parse_number(result.strip().rstrip(".,"))
    return value is not None and claimed is not None and abs(value - claimed) > 0.01


def arithmetic_errors(text: str) -> list[str]:
    """Written calculations in `text` whose result is wrong, e.g. `["7*8=54"]`.

    Checks `<<EXPR=R>>` annotations, the number copied right after one (`<<6*5=30>>35` is a slip),
    and plain `a op b = c` statements. An expression the calculator can't evaluate is skipped: we
    only flag what we can prove wrong.
    """
    errors = []
    for expr, result, copied in _CALC.findall(text):
        if _wrong(expr, result) or (copied.strip() and _wrong(result, copied)):
            errors.append(f"<<{expr}={result}>>{copied.strip()}")
    for expr, result in _PLAIN.findall(_CALC.sub("", text)):  # annotations removed: no double counting
        if _wrong(expr, result):
            errors.append(f"{expr.strip()}={result.strip()}")
    return errors


# Numbers a solution may use without copying them: written as words, or common knowledge (7 days,
# 60 minutes, 12 months...). Generous on purpose: a number is only called "unsupported" when it
# can't have come from anywhere.
_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "hundred": 100,
                 "thousand": 1000, "dozen": 12, "twice": 2, "double": 2, "half": 2, "triple": 3, "quarter": 4}
_COMMON_NUMBERS = {1, 2, 3, 4, 7, 10, 12, 24, 30, 52, 60, 100, 365, 1000}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # 2.5 is one number, not 2 and 5


def unsupported_numbers(question: str, response: str) -> list[float]:
    """Operands of the response's `<<expr=...>>` calculations that appear nowhere before them: not
    in the question (as digits or a word like "dozen"), not the result of an earlier calculation,
    not a common-knowledge number. "Then she spends $45" answered with `<<288-41=247>>` -> [41.0]:
    a copying slip, not a reasoning choice. (A slip that lands on a number that does exist, such as
    `5*2` for "5 each to 5 friends", can't be told apart from a wrong choice and is not flagged.)"""
    known = {float(n) for n in _NUMBER.findall(question.replace(",", ""))} | _COMMON_NUMBERS
    known |= {v for w, v in _NUMBER_WORDS.items() if re.search(rf"\b{w}\b", question, re.IGNORECASE)}
    unsupported = []
    for expr, result, _ in _CALC.findall(response.replace(",", "")):
        unsupported += [float(n) for n in _NUMBER.findall(expr) if float(n) not in known]
        known |= {float(n) for n in _NUMBER.findall(result)}  # an earlier result may be used later
    return unsupported


FAILURE_CATEGORIES = ("correct", "truncated", "no answer", "wrong arithmetic", "wrong number copied",
                      "wrong reasoning")


def failure_category(record: dict) -> str:
    """Sort a scored record into one of FAILURE_CATEGORIES, checked in this order:

    correct; truncated (ran out of max_new_tokens before finishing); no answer (finished, but no
    number could be extracted); wrong arithmetic (a written calculation is wrong); wrong number
    copied (a calculation uses a number found nowhere before it: `unsupported_numbers`); wrong
    reasoning (every calculation is right and uses numbers that exist, the final number is not:
    wrong numbers or operations chosen).
    """
    if record["correct"]:
        return "correct"
    if record.get("finished") is False:
        return "truncated"
    if record["extracted"] is None:
        return "no answer"
    if arithmetic_errors(record["response"]):
        return "wrong arithmetic"
    if record.get("question") and unsupported_numbers(record["question"], record["response"]):
        return "wrong number copied"
    return "wrong reasoning"
