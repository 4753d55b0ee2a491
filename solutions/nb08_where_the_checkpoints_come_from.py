"""Solutions to the exercises of `notebooks/08_where_the_checkpoints_come_from.ipynb`. Try them first!"""


# Exercise 1 · trap kinds vs clean kinds, from a stage's test records. Walk problems and records together
# (same order), count right answers on each side, and compare each trap answer with the number the
# teacher's flawed solution ends in.
def trap_vs_clean(problems, records):
    """Accuracy on the teacher's trap kinds and on the clean kinds, and answers copying the teacher."""
    from rewards import gsm8k_gold_answer
    from lessons_lib.synthetic import TRAPS

    right = {True: 0, False: 0}  # trap kind? -> right answers
    total = {True: 0, False: 0}  # trap kind? -> problems
    copies = 0
    for problem, record in zip(problems, records):
        trap = problem["template"] in TRAPS
        right[trap] += bool(record["correct"])
        total[trap] += 1
        if trap and record.get("extracted") == gsm8k_gold_answer(problem["flawed_answer"]):
            copies += 1
    return {"trap_acc": right[True] / max(1, total[True]), "clean_acc": right[False] / max(1, total[False]),
            "copies_teacher": copies}


# Exercise 2 · where the gap between the dev loss and the gold dev loss comes from. Split SFT's 200 dev
# problems by kind, and score the model on the teacher's demonstration and on the gold solution of each.
def dev_losses_by_kind(model, n=200):
    """{(kinds, whose): loss} for kinds in ("trap", "clean") and whose in ("teacher", "gold"): the mean
    per-token loss of `model` on the teacher's held-out demonstrations and on the gold solutions."""
    from lessons_lib import synthetic, training

    problems = synthetic.synthetic_problems("dev", n)
    losses_ = {}
    for kinds in ("trap", "clean"):
        chosen = [p for p in problems if (p["template"] in synthetic.TRAPS) == (kinds == "trap")]
        for whose, text in (("teacher", synthetic.teacher_answer), ("gold", lambda p: p["answer"])):
            examples = [training.sft_example(p["question"], text(p)) for p in chosen]
            losses_[kinds, whose] = training.dataset_loss(model, examples)
    return losses_


WHERE_THE_GAP_IS = """\
All of it is on the trap kinds. On the clean kinds the teacher writes the gold solution, so the two losses
are the same number. On the trap kinds the gold solutions cost the shipped SFT about 30% more per token
than the teacher's demonstrations (0.030 against 0.023 nats): the model puts most of its probability on
the teacher's step, and the gold step is what surprises it. A misreading is a few tokens of a reply of
about 90 that both versions share otherwise, and the clean kinds are half the problems: averaged over
all of it, that becomes the smaller gap of section 3 (about 18%), though those few tokens decide the
answer."""
