"""Solutions to the exercises of `notebooks/10_score_a_real_model.ipynb`. Try them first!"""
import torch


# Exercise 1 · left padding for a real model: tensors, as transformers' `generate` takes them.
def my_left_pad(prompts, pad_id):
    """Prompts (lists of token ids) -> (ids, mask, positions), three (B, P) integer tensors.

    Every prompt ends in the last column, so the next token of every row is written in the same
    place; the mask says which columns are real (from the lengths: a prompt may contain pad_id);
    positions count from each row's first real token, so a padded prompt sees the positions it would
    see alone (transformers derives them the same way: mask.cumsum(-1) - 1).
    """
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # pads: 0 (never attended to, any value works)
    return ids, mask, positions


# Exercise 2 · lm-evaluation-harness' gsm8k prompt.
def my_fewshot_prompt(question, examples):
    """Each shot is doc_to_text "Question: {q}\\nAnswer:", target_delimiter " ", the full solution;
    shots are joined by fewshot_delimiter "\\n\\n"; then the question's doc_to_text."""
    shots = [f"Question: {q}\nAnswer: {a}" for q, a in examples]
    return "\n\n".join(shots + [f"Question: {question}\nAnswer:"])


# Exercise 3 · a third row with --prompt_format plain. Leave aside what any two runs differ in (how
# long they took, where the records went, what the model answered): the plain row differs from
# tiny-chat's only in its label and its prompt format. fewshot_k is None in both (only the fewshot
# format uses examples). ckpt_sha256 is the same because it hashes the weights file, and both rows
# loaded the same weights: a prompt format is a way of asking the model, not another model. So two
# formats of one model are two rows of a table, and a paired test between them is fair (same questions).
PLAIN_DIFFERS_FROM_CHAT_IN = {"label", "prompt_format"}

# Exercise 4 · why is the course engine faster on a CPU?
WHY_THE_COURSE_ENGINE_IS_FASTER = """\
Measured by `make bench` on the course-size model: transformers' default cache grows by concatenation,
copying the whole cache every step (its static cache removes most of the gap); its prefill runs the
left-padded rectangle, pads included, where the course prefills each prompt alone; and each step of
`generate` does more Python work. On a GPU a 1M-parameter model is all overhead either way; for a real
model the matrix products dominate and the two engines do the same products, so the gap shrinks (not
measured here)."""
