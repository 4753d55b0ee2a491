"""Solutions to the exercises of `notebooks/02_clipped_reward.ipynb`. Try them first!"""
from rewards import has_well_formed_answer, is_correct, reward_gsm8k

CORRECT, BONUS, CLIP = 1.0, 0.2, 1.2


# Exercise 1 · the course's reward from its two parts.
def clipped_reward(text, gold):
    """1.0 for a correct answer, + 0.2 for one well-formed `<answer>N</answer>` tag, at most 1.2."""
    r = CORRECT * is_correct(text, gold) + BONUS * has_well_formed_answer(text)
    return min(r, CLIP)


# Exercise 2 · the expected reward of a policy that is right with probability p and writes a
# well-formed tag with probability tag_rate, independently of being right.
def expected_reward(p, tag_rate=1.0, strict=False):
    """Mean reward: p for the point, plus the bonus on tagged answers (only correct ones if strict)."""
    bonus_paid_on = p if strict else 1.0  # strict pays the bonus only on correct answers
    return CORRECT * p + BONUS * tag_rate * bonus_paid_on  # never above 1.2: the clip is not needed


# Exercise 3 · 1.2 under both variants, with the word "or" and the number 19 outside the tag.
BOTH_PAY_1_2 = "Is it 18 or 19? 9 * 2 = 18, so not 19. <answer>18</answer>"


# Exercise 4 · a reward that looks for the gold as a substring.
def naive_reward(text, gold):
    return 1.0 if gold in text else 0.0


def paid_only_by_naive(attempts, gold="18"):
    """Names of the (name, response) attempts the substring reward pays but the course's does not."""
    return [name for name, response in attempts if naive_reward(response, gold) > reward_gsm8k(response, gold)]


# Exercise 5 · the policy "always answer <answer>0</answer>" on GSM8K's test split.
def always_zero(golds):
    """(golds equal to 0, mean seed reward, mean strict reward) of always answering 0 in a tag."""
    zeros = sum(g == "0" for g in golds)
    return zeros, (zeros * CORRECT + len(golds) * BONUS) / len(golds), zeros * (CORRECT + BONUS) / len(golds)


# Exercise 6 · a bonus of 0.5 under the same clip at 1.2.
def tag_worth(bonus=0.5, clip=CLIP):
    """(what a well-formed tag adds to a wrong answer, what it adds to a right one)."""
    return min(bonus, clip), min(CORRECT + bonus, clip) - CORRECT


WHICH_POLICY_A_BIG_BONUS_FAVOURS = """\
With a bonus of 0.5 the tag adds 0.5 to a wrong answer but only 0.2 to a right one (1.5 is clipped to 1.2).
Tagging a guess becomes the best value for money: a policy that cannot solve a question still collects 0.5,
almost half of what solving it would add, and the clip hides the difference for the answers we want most."""
