"""Solutions to the exercises of `notebooks/00_start_here.ipynb`. Try them first!"""
import re

from lessons_lib.tokenizer import ASSISTANT, BOS, EOT, USER


# Exercise 1 · the chat template for one user question, by hand.
def my_encode_prompt(question):
    """The prompt ids for one user question: [BOS, USER, *bytes, EOT, ASSISTANT]."""
    return [BOS, USER, *question.encode("utf-8"), EOT, ASSISTANT]


# Exercise 2 · the number in the last <answer> tag, with a regular expression.
_TAG = re.compile(r"<answer>\s*(-?\d[\d,]*(?:\.\d+)?)\s*</answer>")


def tag_answer(response):
    """The number in the last <answer>…</answer> tag (commas removed), or None."""
    found = _TAG.findall(response)
    return found[-1].replace(",", "") if found else None


# ...and two responses on which it disagrees with extract_answer, and why.
TAG_ANSWER_DISAGREES = {
    # two tags: the regex reads the last one (18); extract_answer sees two different numbers in the
    # tags, calls the response ambiguous, and that means no answer at all (None)
    "<answer>17</answer> or maybe <answer>18</answer>": "two tags with different numbers: ambiguous, no answer",
    # no tag: the regex gives up (None); extract_answer reads GSM8K's '#### N' line (rule 2), 18
    "She makes 9 * 2 = 18 dollars.\n#### 18": "no tag: extract_answer reads the '#### 18' line (rule 2)",
}

# Exercise 3 · notebook 01 (answer extraction): an ambiguous tag is "no answer" (rule 1), and a response
# without an answer earns no reward (notebook 02).
NOTEBOOK_FOR_17_OR_18 = "01_answer_extraction"

# Exercise 4 · every message ends with <|eot|>: the assistant's earlier reply ends at the <|eot|> after
# "Hello!", and the prompt ends with a newly opened <|assistant|> turn.
TWO_TURNS = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "2+2?"}]
TWO_TURNS_RENDERED = "<|bos|><|user|>Hi<|eot|><|assistant|>Hello!<|eot|><|user|>2+2?<|eot|><|assistant|>"

# Exercise 5 · 34 characters, 40 tokens: the curly apostrophe ’ is 3 UTF-8 bytes (3 tokens, 2 more
# than its 1 character), and the template adds 4 special tokens (BOS, USER, EOT, ASSISTANT).
JANET = "Janet’s ducks lay 16 eggs per day."
JANET_CHARACTERS, JANET_TOKENS = 34, 40

# Exercise 6 · see the notebook's trap-kind column: SFT and the control copy the teacher on most trap
# questions, DPO, PPO and GRPO much less often (the solution depends on the shipped checkpoints, so it
# is a function: which of the five trained stages answer the teacher's number on a test question).
def who_copies_the_teacher(models, problem):
    """The stages whose greedy answer to a trap-kind problem is the teacher's wrong number."""
    from lessons_lib import chat
    from rewards import gsm8k_gold_answer
    copied = gsm8k_gold_answer(problem["flawed_answer"])
    return [s for s, m in models.items() if chat.ask(m, problem["question"])["extracted"] == copied]
