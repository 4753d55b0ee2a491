"""Solutions to the exercises of notebook 08 (score a real model). Try them yourself first!

tests/test_notebook_solutions.py checks these against the library, as the notebook's check cells do.
"""
import torch


def my_left_pad(prompts, pad_id):
    """Exercise 1: left-pad token-id lists into one batch.

    Every prompt ends in the last column, so the next token of every row is written in the same
    place; the mask says which columns are real; positions count from each row's first real token,
    so a padded prompt sees the positions it would see alone (transformers: mask.cumsum(-1) - 1).
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # pads: 0 (never attended to, any value works)
    return ids, mask, positions


def my_fewshot_prompt(question, examples):
    """Exercise 2: lm-evaluation-harness' gsm8k prompt. Each shot is doc_to_text "Question: {q}\\nAnswer:",
    target_delimiter " ", the full solution, fewshot_delimiter "\\n\\n"; then the question's doc_to_text."""
    shots = [f"Question: {q}\nAnswer: {a}" for q, a in examples]
    return "\n\n".join(shots + [f"Question: {question}\nAnswer:"])


# Exercise 3 (a row with --prompt_format plain): the rows differ in "prompt_format" (and the
# records' responses); "ckpt_sha256" is the same, because the weights are the same. Two prompt formats
# of one model are two rows of the table, and a paired test between them is fair: same questions.
#
# Exercise 4 (why is the course engine faster on a CPU?): measured by `make bench` on the course-size
# model: transformers' default cache grows by concatenation, copying the whole cache every step (its
# static cache removes most of the gap); its prefill runs the left-padded rectangle, pads included,
# where the course prefills each prompt alone; and each step of `generate` does more Python work.
# On a GPU a 1M-parameter model is all overhead either way; for a real model the matrix products
# dominate and the two engines do the same products, so the gap shrinks (not measured here).
