"""A seeded generator of grade-school word problems in GSM8K's exact format.

Real GSM8K is far beyond a ~1M-parameter model trained for minutes on a laptop CPU (it scores ~0%),
so the course trains on a synthetic task with the *same shape*:

    question: "Mia bakes 3 dozen cookies. Her brother is 9 years old. She eats 4 of them ..."
    answer:   "Mia bakes 3*12 = <<3*12=36>>36 cookies.\\n ... \\n#### 20"

Why it is built this way (measured on this machine, see issue 4):
- The calculator of the generation engine does the arithmetic (`<<a*b=` -> it forces `c>>`), so a
  tiny model's errors are not carrying mistakes, which RL cannot fix.
- The difficulty is *reasoning*: 2-4 steps, distractor sentences with irrelevant numbers, operations
  implied by words ("twice as many", "half of", "a dozen", "3 fewer than") and several paraphrases per
  template. Errors become *choices* (which number, which operation) -- exactly what RL can sharpen.

Splits: every problem has a key (template name, core numbers). A hash of the key decides its split,
so no (template, numbers) combination is ever shared between train, dev and test.
"""
import argparse
import hashlib
import json
import random
import re
from fractions import Fraction

from functools import lru_cache

from lessons_lib.calculator import format_result

SPLITS = ("train", "dev", "test")
SPLIT_SIZES = {"train": 10000, "dev": 500, "test": 500}  # default sizes (test is fixed at 500)
SPLIT_SEEDS = {"train": 1, "dev": 2, "test": 3}          # each split draws from its own stream
DEFAULT_DISTRACTORS = (0, 0, 1)                          # distractor count per problem, drawn uniformly

NAMES = ["Mia", "Liam", "Ava", "Noah", "Emma", "Omar", "Zoe", "Ravi", "Lena", "Tom", "Sara", "Kenji",
         "Nora", "Ben", "Ines", "Leo", "Maya", "Sam", "Ada", "Ivan"]
PRONOUN = {n: ("she" if n in {"Mia", "Ava", "Emma", "Zoe", "Lena", "Sara", "Nora", "Ines", "Maya", "Ada"}
               else "he") for n in NAMES}


def _step(expr: str, unit: str = "") -> tuple[str, int]:
    """One worked line, GSM8K's annotation kept, prose dropped: '<<expr=r>>r unit'. Returns (line, r).
    Terse on purpose: every byte of the solution costs training time on a laptop CPU (GSM8K also
    writes `expr = ` before the annotation; a tiny model then has to copy each expression twice),
    and the reasoning lives in *which* numbers and operations appear, not in the prose around them."""
    value = _evaluate(expr)
    r = format_result(value)
    tail = f" {unit}" if unit else ""
    return f"<<{expr}={r}>>{r}{tail}", int(value)


def _evaluate(expr: str) -> Fraction:
    """Exact value of our own tiny expressions ('3*12', '36-4-10', '90/2'): terms joined by + and -,
    each term numbers joined by * and /. (The tests check every annotation against the real
    calculator; this shortcut is 10x faster than its general parser, which matters for 10k problems.)"""
    value = Fraction(0)
    for sign, term in re.findall(r"([+-]?)([^+-]+)", expr):
        parts = re.split(r"([*/])", term)
        t = Fraction(int(parts[0]))
        for op, num in zip(parts[1::2], parts[2::2]):
            t = t * int(num) if op == "*" else t / int(num)
        value += -t if sign == "-" else t
    if value.denominator != 1 or value < 0:
        raise ValueError(f"template produced a bad expression {expr!r}")  # a bug in a template
    return value


def _pick(rng: random.Random, *options: str) -> str:
    """One of several paraphrases (the model must read, not pattern-match one wording)."""
    return rng.choice(options)


# ----------------------------------------------------------------------------------------------
# Templates. Each takes (rng, name) and returns (numbers, fact sentences, question, steps, answer).
# `numbers` is the template's core numbers: together with the template name it is the split key.
# ----------------------------------------------------------------------------------------------

def t_cookies(rng, name):
    k, e, g, f = rng.randint(2, 9), rng.randint(1, 9), rng.randint(2, 5), rng.randint(2, 5)
    if 12 * k - e - g * f <= 0:
        return None
    p = PRONOUN[name]
    facts = [_pick(rng, f"{name} bakes {k} dozen cookies.", f"{name} made {k} dozen cookies for a party."),
             _pick(rng, f"{p.capitalize()} eats {e} of them.", f"{name} eats {e} cookies right away."),
             _pick(rng, f"Then {p} gives {g} cookies to each of {f} friends.",
                   f"Each of {p == 'she' and 'her' or 'his'} {f} friends gets {g} cookies.")]
    question = _pick(rng, "How many cookies are left?", f"How many cookies does {name} have left?")
    s1, baked = _step(f"{k}*12", "cookies")
    s2, given = _step(f"{g}*{f}", "cookies")
    s3, left = _step(f"{baked}-{e}-{given}", "cookies left")
    return (k, e, g, f), facts, question, [s1, s2, s3], left


def t_marbles(rng, name, flaw=False):
    other, third = rng.sample([n for n in NAMES if n != name], 2)
    x, d = rng.randint(3, 30), rng.randint(1, 9)
    mult, word = rng.choice([(2, "twice as many"), (3, "three times as many")])
    if mult * x - d <= 0:
        return None
    facts = [_pick(rng, f"{name} has {x} marbles.", f"{name} owns {x} marbles."),
             _pick(rng, f"{other} has {word} marbles as {name}.", f"{other} has {word} marbles as {name} does."),
             _pick(rng, f"{third} has {d} fewer marbles than {other}.", f"{third} has {d} marbles less than {other}.")]
    question = _pick(rng, "How many marbles do the three of them have altogether?",
                     "How many marbles do they have in total?")
    s1, b = _step(f"{x}*{mult}", "marbles")
    s2, c = _step(f"{b}{'+' if flaw else '-'}{d}", "marbles")  # flaw: "fewer" read as more
    s3, total = _step(f"{x}+{b}+{c}", "marbles")
    return (x, mult, d), facts, question, [s1, s2, s3], total


def t_half_money(rng, name):
    x, y = 2 * rng.randint(5, 60), rng.randint(1, 20)
    if x // 2 - y <= 0:
        return None
    p = PRONOUN[name]
    facts = [_pick(rng, f"{name} has ${x}.", f"{name} saved {x} dollars."),
             _pick(rng, f"{p.capitalize()} spends half of it on a book.", f"{name} spends half of the money on a game."),
             _pick(rng, f"Then {p} spends ${y} on lunch.", f"After that {p} pays {y} dollars for a ticket.")]
    question = _pick(rng, f"How much money does {name} have left?", "How many dollars are left?")
    s1, half = _step(f"{x}/2", "dollars")
    s2, left = _step(f"{half}-{y}", "dollars left")
    return (x, y), facts, question, [s1, s2], left


def t_pages(rng, name):
    p, d, q = rng.randint(3, 25), rng.randint(2, 7), rng.randint(1, 20)
    n = p * d + q + rng.randint(5, 80)
    facts = [_pick(rng, f"A book has {n} pages.", f"{name}'s book is {n} pages long."),
             _pick(rng, f"{name} reads {p} pages every day for {d} days.", f"For {d} days, {name} reads {p} pages a day."),
             _pick(rng, f"On the next day {name} reads {q} more pages.", f"Then {name} reads another {q} pages.")]
    question = _pick(rng, "How many pages are left to read?", f"How many pages does {name} still have to read?")
    s1, first = _step(f"{p}*{d}", "pages")
    s2, read = _step(f"{first}+{q}", "pages are read")
    s3, left = _step(f"{n}-{read}", "pages are left")
    return (n, p, d, q), facts, question, [s1, s2, s3], left


def t_change(rng, name):
    k, price, extra = rng.randint(2, 6), rng.randint(2, 12), rng.randint(1, 9)
    bill = rng.choice([50, 100])
    if k * price + extra >= bill:
        return None
    facts = [_pick(rng, f"{name} buys {k} notebooks that cost ${price} each.", f"Notebooks cost ${price} each and {name} buys {k} of them."),
             _pick(rng, f"{PRONOUN[name].capitalize()} also buys a pen for ${extra}.", f"A pen costs ${extra} and {name} buys one too."),
             _pick(rng, f"{name} pays with a ${bill} bill.", f"{name} hands the cashier ${bill}.")]
    question = _pick(rng, f"How much change does {name} get?", "How many dollars of change are given back?")
    s1, notebooks = _step(f"{k}*{price}", "dollars")
    s2, total = _step(f"{notebooks}+{extra}", "dollars")
    s3, change = _step(f"{bill}-{total}", "dollars")
    return (k, price, extra, bill), facts, question, [s1, s2, s3], change


def t_age(rng, name, flaw=False):
    other = rng.choice([n for n in NAMES if n != name])
    x, a, y = rng.randint(3, 20), rng.randint(1, 9), rng.randint(2, 10)
    facts = [_pick(rng, f"{name} is {x} years old.", f"{name}'s age is {x}."),
             _pick(rng, f"{other} is {a} years older than twice {name}'s age.",
                   f"{other}'s age is {a} more than double {name}'s age.")]
    question = _pick(rng, f"How old will {other} be in {y} years?", f"What will {other}'s age be {y} years from now?")
    if flaw:  # flaw: "a years older than twice x" read as twice (x + a)
        s1, older = _step(f"{x}+{a}", "years")
        s2, now = _step(f"{older}*2", "years old")
    else:
        s1, twice = _step(f"{x}*2", "years")
        s2, now = _step(f"{twice}+{a}", "years old")
    s3, later = _step(f"{now}+{y}", "years old")
    return (x, a, y), facts, question, [s1, s2, s3], later


def t_wages(rng, name):
    w, h, d, s = rng.randint(5, 20), rng.randint(2, 8), rng.randint(2, 6), rng.randint(5, 60)
    if w * h * d - s <= 0:
        return None
    facts = [_pick(rng, f"{name} earns ${w} an hour.", f"{name} is paid {w} dollars per hour."),
             _pick(rng, f"{PRONOUN[name].capitalize()} works {h} hours a day for {d} days.",
                   f"For {d} days, {name} works {h} hours each day."),
             _pick(rng, f"Then {name} spends ${s} on shoes.", f"{name} spends {s} dollars of it on a gift.")]
    question = _pick(rng, f"How much money does {name} have left?", "How many dollars are left?")
    s1, daily = _step(f"{w}*{h}", "dollars")
    s2, total = _step(f"{daily}*{d}", "dollars")
    s3, left = _step(f"{total}-{s}", "dollars left")
    return (w, h, d, s), facts, question, [s1, s2, s3], left


def t_garden(rng, name, flaw=False):
    r, c, t = rng.randint(2, 12), rng.randint(3, 25), rng.randint(1, 3)
    if (r * c + 12 * t) % 2:
        return None
    dozen = "a dozen" if t == 1 else f"{t} dozen"
    facts = [_pick(rng, f"{name} plants {r} rows of {c} flowers.", f"{name}'s garden has {r} rows with {c} flowers in each row."),
             _pick(rng, f"Later {PRONOUN[name]} plants {dozen} more flowers.", f"{name} adds {dozen} more flowers."),
             _pick(rng, "Half of all the flowers are red.", "Exactly half of the flowers are red.")]
    question = _pick(rng, "How many flowers are red?", f"How many red flowers does {name} have?")
    s1, rows = _step(f"{r}*{c}", "flowers")
    s2, more = _step(f"{t}*{10 if flaw else 12}", "flowers")  # flaw: a dozen taken to be 10
    s3, total = _step(f"{rows}+{more}", "flowers")
    s4, red = _step(f"{total}/2", "flowers")
    return (r, c, t), facts, question, [s1, s2, s3, s4], red


def t_classes(rng, name, flaw=False):
    c, s, a, b = rng.randint(2, 6), rng.randint(12, 30), rng.randint(1, 9), rng.randint(2, 9)
    facts = [_pick(rng, f"A school has {c} classes with {s} students each.", f"There are {c} classes of {s} students at {name}'s school."),
             _pick(rng, f"{a} students are sick today.", f"Today {a} students stay home."),
             _pick(rng, f"{b} teachers also come to school.", f"There are {b} teachers at school today.")]
    question = _pick(rng, "How many people are at school today?", "How many students and teachers are at school today?")
    s1, students = _step(f"{c}*{s}", "students")
    s2, present = _step(f"{students}{'+' if flaw else '-'}{a}", "students")  # flaw: counts the absent
    s3, people = _step(f"{present}+{b}", "people")
    return (c, s, a, b), facts, question, [s1, s2, s3], people


def t_trip(rng, name, flaw=False):
    m, h, less = rng.randint(20, 60), rng.randint(2, 5), rng.randint(5, 15)
    facts = [_pick(rng, f"{name} drives {m} miles an hour for {h} hours on Monday.", f"On Monday, {name} drives for {h} hours at {m} miles per hour."),
             _pick(rng, f"On Tuesday {PRONOUN[name]} drives {less} fewer miles than on Monday.",
                   f"On Tuesday the trip is {less} miles shorter than on Monday.")]
    question = _pick(rng, f"How many miles does {name} drive on the two days?", "How many miles is that in total?")
    s1, mon = _step(f"{m}*{h}", "miles")
    s2, tue = _step(f"{mon}{'+' if flaw else '-'}{less}", "miles")  # flaw: "fewer" read as more
    s3, total = _step(f"{mon}+{tue}", "miles")
    return (m, h, less), facts, question, [s1, s2, s3], total


TEMPLATES = {f.__name__[2:]: f for f in [t_cookies, t_marbles, t_half_money, t_pages, t_change, t_age,
                                         t_wages, t_garden, t_classes, t_trip]}

# ----------------------------------------------------------------------------------------------
# The teacher. SFT demonstrations in practice are written by another model (distillation) and are
# often wrong: GPT-3's own GSM8K solutions (data/gsm8k/example_model_solutions.jsonl) are right
# 22-56% of the time. Our teacher has five systematic misreadings, one per "trap" template below.
# The teacher is sampled like a language model: each demonstration of a trap problem is flawed with
# probability TEACHER_MISTAKE_RATE (a seeded coin per problem and sample), and the SFT pool holds
# TEACHER_SAMPLES demonstrations of every problem, as distillation sets often do. So the same problem
# appears both ways and SFT learns the teacher's *rate* on each trap kind (it cannot memorise which
# problems the teacher got right); elsewhere the teacher writes the gold solution.
# A flawed demonstration is internally consistent: its calculator annotations are right *for the
# wrong expression*, later steps use the wrong value, and it ends in the teacher's wrong answer.
# Only SFT learns from the teacher; pretraining documents, RL prompts, dev and test keep gold.
# ----------------------------------------------------------------------------------------------

TRAPS = {  # template -> the teacher's misreading (see the `flaw` branch of each template)
    "trip": "'N fewer miles than on Monday' read as N more: adds instead of subtracting",
    "marbles": "'N fewer marbles than' read as N more: adds instead of subtracting",
    "classes": "the students who are sick or stay home are added instead of subtracted",
    "garden": "a dozen taken to be 10",
    "age": "'N years older than twice X' read as twice (X + N)",
}
TEACHER_MISTAKE_RATE = 0.7  # per trap demonstration: high enough that SFT's greedy answer copies the
                            # flaw, low enough that SFT still samples the right step (RL's headroom)
TEACHER_SAMPLES = 4         # demonstrations per problem in the SFT pool
TEACHERS = ("flawed", "gold")


def teacher_errs(key: str, rate: float = TEACHER_MISTAKE_RATE, sample: int = 0) -> bool:
    """Whether the teacher's `sample`-th demonstration of this (trap) problem is flawed: P = rate."""
    u = int(hashlib.sha256(f"teacher|{key}|{sample}".encode()).hexdigest()[:8], 16) / 16 ** 8
    return u < rate


def teacher_answer(problem: dict, teacher: str = "flawed", rate: float = TEACHER_MISTAKE_RATE,
                   sample: int = 0) -> str:
    """The teacher's `sample`-th demonstration for `problem` ("gold": always the gold solution)."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}: use one of {TEACHERS}")
    if teacher == "flawed" and "flawed_answer" in problem and teacher_errs(problem["key"], rate, sample):
        return problem["flawed_answer"]
    return problem["answer"]


def teacher_qa_pairs(split: str, limit: int | None = None, teacher: str = "flawed",
                     rate: float = TEACHER_MISTAKE_RATE, samples: int = 1) -> list[tuple[str, str]]:
    """(question, demonstration) pairs as the teacher writes them, `samples` per problem, problem by
    problem: the SFT pool (samples=TEACHER_SAMPLES) or held-out teacher data (samples=1)."""
    return [(p["question"], teacher_answer(p, teacher, rate, i))
            for p in synthetic_problems(split, limit) for i in range(samples)]


def trap_report(problems: list[dict], records: list[dict]) -> dict:
    """How a model fares on the teacher's trap kinds vs the clean kinds, from scoring records
    (`gsm8k_accuracy`) of `problems` (`synthetic_problems`, same order). `copies_teacher` counts trap
    problems answered with exactly the number the teacher's flawed solution ends in."""
    from rewards import gsm8k_gold_answer  # rewards imports nothing from here; keep the module light
    by = {t: [0, 0] for t in sorted({p["template"] for p in problems})}
    copies = 0
    for p, r in zip(problems, records, strict=True):
        by[p["template"]][0] += bool(r["correct"])
        by[p["template"]][1] += 1
        if "flawed_answer" in p and r.get("extracted") == gsm8k_gold_answer(p["flawed_answer"]):
            copies += 1
    trap = [sum(by[t][i] for t in by if t in TRAPS) for i in (0, 1)]
    clean = [sum(by[t][i] for t in by if t not in TRAPS) for i in (0, 1)]
    return {"trap_acc": trap[0] / max(1, trap[1]), "trap_n": trap[1], "clean_acc": clean[0] / max(1, clean[1]),
            "clean_n": clean[1], "copies_teacher": copies, "by_template": by}


DISTRACTORS = ["{other} is {n} years old.", "The shop is {n} miles away.", "It is {n} degrees outside.",
               "{other} has {n} stickers.", "The bus leaves at {n} o'clock.", "{other} owns {n} pencils.",
               "The park has {n} benches."]


def _distractor(rng: random.Random, name: str) -> str:
    """A sentence with an irrelevant number (the model must learn to ignore it)."""
    other = rng.choice([n for n in NAMES if n != name])
    return rng.choice(DISTRACTORS).format(other=other, n=rng.randint(2, 40))


def generate_problem(rng: random.Random, template: str | None = None, distractors=DEFAULT_DISTRACTORS) -> dict:
    """One problem: {"question", "answer", "template", "key"}; retries until the template accepts
    the numbers it drew (some combinations would give a negative or fractional answer)."""
    name_t = template or rng.choice(sorted(TEMPLATES))
    while True:
        name = rng.choice(NAMES)
        state = rng.getstate()  # to replay the same draws for the teacher's flawed solution
        out = TEMPLATES[name_t](rng, name)
        if out is not None:
            break
    numbers, facts, question, steps, answer = out
    for _ in range(rng.choice(distractors)):
        facts.insert(rng.randint(0, len(facts)), _distractor(rng, name))  # anywhere, even first
    problem = {"question": " ".join(facts + [question]), "answer": "\n".join(steps + [f"#### {answer}"]),
               "template": name_t, "key": f"{name_t}|{','.join(map(str, numbers))}"}
    if name_t in TRAPS:  # same numbers and wording, the teacher's misreading in the steps
        replay = random.Random()
        replay.setstate(state)
        *_, flawed_steps, flawed = TEMPLATES[name_t](replay, name, flaw=True)
        problem["flawed_answer"] = "\n".join(flawed_steps + [f"#### {flawed}"])
    return problem


def split_of(key: str) -> str:
    """Which split a (template, numbers) key belongs to: 10% test, 10% dev, 80% train, by hash."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def synthetic_problems(split: str, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The first `limit` problems of a split (prefix-stable: a smaller limit gives a prefix).
    Keys are unique within a split and never shared with another split."""
    return [dict(p) for p in _cached_problems(split, limit, seed)]  # copies: callers may mutate


@lru_cache(maxsize=16)
def _cached_problems(split: str, limit: int | None, seed: int) -> tuple[dict, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}: use one of {SPLITS}")
    n = SPLIT_SIZES[split] if limit is None else limit
    if split == "test" and n > SPLIT_SIZES["test"]:
        raise ValueError("the synthetic test split has exactly 500 problems")
    rng = random.Random(1000 * seed + SPLIT_SEEDS[split])
    out, seen = [], set()
    while len(out) < n:
        p = generate_problem(rng)
        if split_of(p["key"]) == split and p["key"] not in seen:
            seen.add(p["key"]); out.append(p)
    return tuple(out)


def synthetic_qa_pairs(split: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs in GSM8K format -- what `load_qa_pairs("synthetic", split)` returns."""
    return [(p["question"], p["answer"]) for p in synthetic_problems(split, limit)]


def main():
    ap = argparse.ArgumentParser(description="Print or dump synthetic GSM8K-format problems.")
    ap.add_argument("--split", default="train", choices=SPLITS)
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--jsonl", action="store_true", help="one JSON object per line (GSM8K's format)")
    args = ap.parse_args()
    for q, a in synthetic_qa_pairs(args.split, args.limit):
        print(json.dumps({"question": q, "answer": a}) if args.jsonl else f"Q: {q}\nA: {a}\n")


if __name__ == "__main__":
    main()
