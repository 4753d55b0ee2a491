"""Solutions to the exercises of `notebooks/05_stage_table.ipynb`. Try them first!"""
import math
from fractions import Fraction
from statistics import NormalDist


# Exercise 1 · the Wilson score interval. The clamps at 0 and 1 (and the exact ends at 0/n and n/n) keep
# it inside [0, 1]; the interval's centre is pulled towards 1/2, which is why it behaves at 0/n.
def my_wilson_interval(correct, n, z=1.959963984540054):
    """Wilson score interval (lo, hi) for `correct` successes out of `n`."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


# Exercise 2 · exact McNemar. Sum the binomial coefficients as integers and divide once, as a Fraction:
# 2**600 overflows a float, and a float sum of tiny terms would round p-values like 1e-40 away.
def my_mcnemar_exact(fixed, broke):
    """Two-sided exact McNemar p-value from the two discordant counts."""
    m, k = fixed + broke, min(fixed, broke)
    if m == 0:
        return 1.0
    tail = Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2 ** m)
    return float(min(Fraction(1), 2 * tail))


# Exercise 3 · which comparisons are gains significant at `alpha`.
def significant(comparisons, alpha=0.001):
    """Keys of `manifest["comparisons"]` ({"grpo_vs_sft": {"fixed", "broke", "p"}, ...}) where the
    first stage fixed more than it broke and the exact McNemar p is below `alpha`."""
    return sorted(k for k, c in comparisons.items() if c["fixed"] > c["broke"] and c["p"] < alpha)


# Exercise 4 · questions broken by GRPO and by the control alike.
def broken_by_both(records_new, records_control, records_ref):
    """Indices that both `records_new` and `records_control` got wrong where `records_ref` was right."""
    def broke(a):
        right = {r["index"] for r in records_ref if r["correct"]}
        return {r["index"] for r in a if not r["correct"] and r["index"] in right}
    return broke(records_new) & broke(records_control)


BROKEN_BY_BOTH = """\
Questions that two differently trained descendants of SFT both lose were, most likely, ones SFT got
right narrowly (a near-tie between two next tokens): any further training tips them. They are noise
around SFT, not something RL in particular broke."""


# Exercise 5 · how many questions for a true difference of `delta` with a share `discordant` of
# disagreements? Among the m = discordant * n disagreements, P(fixed) = 1/2 + delta / (2 * discordant).
# The normal approximation of the two-sided McNemar test at level alpha with the given power needs
# m = ((z_(1-alpha/2) * 1/2 + z_power * sqrt(q(1-q))) / (q - 1/2))^2 disagreements.
def questions_needed(delta=0.02, discordant=106 / 500, alpha=0.05, power=0.8):
    """Questions needed to detect a true accuracy difference `delta` (a fraction) at level `alpha` with
    probability `power`, when the two stages disagree on a share `discordant` of questions."""
    q = 0.5 + delta / (2 * discordant)
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    m = ((z_a * 0.5 + z_b * math.sqrt(q * (1 - q))) / (q - 0.5)) ** 2
    return math.ceil(m / discordant)


QUESTIONS_FOR_TWO_POINTS = """\
About 4,100 questions: with 21.2% of questions in disagreement (PPO and GRPO), a true 2-point
difference makes P(fixed) = 0.547 among the disagreements, and the test needs about 880 disagreements
to see that four times in five. The notebook's 500 questions give 106. For a 1-point difference between
stages that disagree on 15% of questions it would take about 12,000."""


# Exercise 6 · real GSM8K.
REAL_GSM8K = """\
Nothing is significant: every stage gets 0 to a handful of the 200 right, so there are almost no
disagreements, and a paired test with 3 disagreements cannot reach p < 0.05 (the smallest possible
p-value with m disagreements is 2 / 2**m = 0.25 at m = 3). The model is far too small for real GSM8K;
the course's climb is measured on the synthetic set."""
