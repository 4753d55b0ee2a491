"""The statistics of the stage table: an interval per row, a paired test and interval per pair of rows.

Two statistics make the table honest on a few hundred questions:

* **Wilson 95% interval** per row — how far the true accuracy could plausibly be from the measured
  one (±4 points at n=500, ±7 at n=200: a 3-point "gain" can be noise).
* **Exact McNemar test** between two stages scored on the *same* questions. Only the questions where
  they disagree carry information: `fixed` (new stage right, old wrong) and `broke` (the reverse).
  If the new stage were no better, each disagreement would be a fair coin flip, so
  p = P(a Binomial(fixed+broke, 1/2) at least as lopsided as observed), two-sided.

Newcombe's interval for the paired difference goes with the test, and `format_p` prints a p-value
with the precision it has. Plain Python (math, fractions): no torch, no numpy.
"""

import math
from fractions import Fraction

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal: a two-sided 95% interval


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion. Unlike p ± z·se it never leaves [0, 1] and stays
    sensible at 0/n and n/n — exactly where tiny models live (0% on real GSM8K)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends, no 1e-18 rounding residue
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(fixed: int, broke: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    Under "no difference" each of the `fixed + broke` disagreements is a fair coin, so
    p = min(1, 2 · P(Binomial(fixed+broke, 1/2) ≤ min(fixed, broke))). Computed with exact integers
    (Fraction) so tiny p-values like 1e-40 are not rounded to 0 along the way.
    """
    m, k = fixed + broke, min(fixed, broke)
    if m == 0:
        return 1.0
    tail = Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2 ** m)
    return float(min(Fraction(1), 2 * tail))


def paired_counts(records_new, records_old) -> dict:
    """Compare two stages question by question (matched on `index`, checked on `question`).

    Returns both_right, fixed (new right, old wrong), broke (new wrong, old right), both_wrong,
    n (questions in common), the exact McNemar p, and the fixed/broke index lists.
    """
    old_by_index = {r["index"]: r for r in records_old}
    counts = {"both_right": 0, "fixed": 0, "broke": 0, "both_wrong": 0}
    fixed_ids, broke_ids = [], []
    for r in records_new:
        old = old_by_index.get(r["index"])
        if old is None:
            continue
        if old.get("question") != r.get("question"):
            raise ValueError(f"item {r['index']}: the two runs asked different questions — "
                             "a paired test needs both stages scored on the same dataset and split")
        key = {(True, True): "both_right", (True, False): "fixed",
               (False, True): "broke", (False, False): "both_wrong"}[(bool(r["correct"]), bool(old["correct"]))]
        counts[key] += 1
        if key == "fixed":
            fixed_ids.append(r["index"])
        elif key == "broke":
            broke_ids.append(r["index"])
    n = sum(counts.values())
    return {**counts, "n": n, "p": mcnemar_exact(counts["fixed"], counts["broke"]),
            "fixed_ids": fixed_ids, "broke_ids": broke_ids}


def paired_difference_interval(both_right: int, fixed: int, broke: int, both_wrong: int,
                               z: float = Z95) -> tuple[float, float]:
    """95% interval for new − old accuracy, (fixed − broke)/n, of two stages on the same questions.

    Newcombe's square-and-add interval for paired data (1998, method 10): the Wilson interval of each
    stage's accuracy, combined through the correlation of their right/wrong answers (which the
    paired design has, and an unpaired interval would ignore). Stays inside [-1, 1], and is not
    zero-width when the stages never disagree, unlike delta ± z·se.
    """
    n = both_right + fixed + broke + both_wrong
    if n <= 0:
        return -1.0, 1.0
    new_right, old_right = both_right + fixed, both_right + broke
    p_new, p_old = new_right / n, old_right / n
    (lo_new, hi_new), (lo_old, hi_old) = wilson_interval(new_right, n, z), wilson_interval(old_right, n, z)
    margins = new_right * (n - new_right) * old_right * (n - old_right)
    a = both_right * both_wrong - fixed * broke  # > 0: the stages tend to be right on the same questions
    a = a - n / 2 if a > n / 2 else min(a, 0)  # Newcombe's continuity correction of the correlation
    phi = a / math.sqrt(margins) if margins else 0.0
    delta = p_new - p_old
    down = (p_new - lo_new) ** 2 + (hi_old - p_old) ** 2 - 2 * phi * (p_new - lo_new) * (hi_old - p_old)
    up = (hi_new - p_new) ** 2 + (p_old - lo_old) ** 2 - 2 * phi * (hi_new - p_new) * (p_old - lo_old)
    return max(-1.0, delta - math.sqrt(max(down, 0.0))), min(1.0, delta + math.sqrt(max(up, 0.0)))


def difference_by_sample_size(records_a, records_b, sizes=(50, 100, 200, 500)) -> list[dict]:
    """The paired difference a − b on the first n questions (by index) they share, for each n in
    `sizes` that is not larger than what they share: {n, delta, lo, hi, fixed, broke, p} per n, in
    points (delta, lo, hi) and counts. Shows how a small difference, and even its sign, moves with n."""
    common = sorted({r["index"] for r in records_a} & {r["index"] for r in records_b})
    out = []
    for n in sorted(set(sizes)):
        if n > len(common) or n <= 0:
            continue  # fewer questions than asked for: no row rather than a silently smaller n
        keep = set(common[:n])
        c = paired_counts([r for r in records_a if r["index"] in keep], [r for r in records_b if r["index"] in keep])
        lo, hi = paired_difference_interval(c["both_right"], c["fixed"], c["broke"], c["both_wrong"])
        out.append({"n": n, "delta": 100 * (c["fixed"] - c["broke"]) / n, "lo": 100 * lo, "hi": 100 * hi,
                    "fixed": c["fixed"], "broke": c["broke"], "p": c["p"]})
    return out


P_FLOOR = 1e-6  # below this an exact p only says "tiny": the test's assumptions matter more than its digits


def format_p(p: float, space: str = "") -> str:
    """'p=0.0010': two significant digits, trailing zeros kept, never in e-notation (0.000999 is not
    '1e-03'); below P_FLOOR, 'p<1e-6'. `space` goes around the sign ('p = 0.0010' in a plot title)."""
    if p < P_FLOOR:
        return f"p{space}<{space}1e-6"
    rounded = float(f"{p:.2g}")
    decimals = max(1, 1 - math.floor(math.log10(rounded)))  # 2 significant digits after the leading zeros
    return f"p{space}={space}{rounded:.{decimals}f}"
