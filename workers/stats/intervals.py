"""Accuracy over a finite test set, with the uncertainty of having scored only these examples.

The Wilson score interval (not the Wald interval p +- z*sqrt(p(1-p)/n)) is used because it keeps its
coverage near 0% and 100% and on small test sets, where the Wald interval collapses to a point or leaves
[0, 1]. Chance is the majority-class rate of the split (what a model that always answers its most frequent
class scores); a model counts as above chance only when its whole 95% interval lies above that rate.
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95%

INTERVAL_METHOD = "Wilson score interval, 95%, over the test examples"
CHANCE_METHOD = ("chance = the majority-class rate of the test split; a model is above chance when the lower end of "
                 "its 95% Wilson interval lies above that rate")


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: (low, high) within [0, 1]; (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in 0..{trials}, got {successes}")
    p, z2 = successes / trials, z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / trials + z2 / (4 * trials * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding just inside [0, 1]
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def accuracy_interval(correct) -> dict:
    """{"accuracy", "ci95": [low, high], "correct", "n"} of a boolean array [examples] (True = right)."""
    correct = np.asarray(correct, dtype=bool)
    n, hits = int(correct.size), int(correct.sum())
    low, high = wilson_interval(hits, n)
    return {"accuracy": hits / n if n else None, "ci95": [low, high], "correct": hits, "n": n}


def chance_level(labels, num_classes: int | None = None) -> dict:
    """The majority-class rate of `labels` [examples]: {"rate", "class" (its id), "n"}."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes or 0)
    n = int(counts.sum())
    return {"rate": float(counts.max()) / n if n else 0.0, "class": int(counts.argmax()), "n": n}


def above_chance(interval: dict, chance_rate: float) -> bool:
    """Whether an `accuracy_interval` lies wholly above `chance_rate`."""
    return interval["ci95"][0] > chance_rate


# ----------------------------------------------------------------------------------------------
# Student's t: the spread of a mean over a few replicates (student seeds, sweep seeds)

T_INTERVAL_METHOD = "Student's t interval, 95%, over the replicates (seeds)"


def student_t_two_sided(t: float, df: int) -> float:
    """P(|T| <= |t|) for Student's t with `df` (a positive integer) degrees of freedom, exactly.

    The finite sums of Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df) in theta = atan(|t| / sqrt(df)):
    no special functions needed, and exact for the integer df a count of replicates gives."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    df = int(df)
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2, term = math.cos(theta) ** 2, 1.0
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        total = term  # 1 + (2/3) cos^2 + (2*4)/(3*5) cos^4 + ... up to cos^(df-3), times cos
        for i in range(1, (df - 1) // 2):
            term *= cos2 * (2 * i) / (2 * i + 1)
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total = term  # 1 + (1/2) cos^2 + (1*3)/(2*4) cos^4 + ... up to cos^(df-2)
    for i in range(1, df // 2):
        term *= cos2 * (2 * i - 1) / (2 * i)
        total += term
    return math.sin(theta) * total


def student_t_p_value(t: float, df: int) -> float:
    """Two-sided p of a t statistic: P(|T| >= |t|)."""
    return max(0.0, 1.0 - student_t_two_sided(t, df))


def student_t_quantile_975(df: int) -> float:
    """The t with P(|T| <= t) = 0.95 (the 97.5% quantile), by bisection on the exact distribution."""
    low, high = 0.0, 1.0
    while student_t_two_sided(high, df) < 0.95:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if student_t_two_sided(mid, df) < 0.95 else (low, mid)
        if high - low < 1e-12:
            break
    return 0.5 * (low + high)


def mean_interval(values) -> dict:
    """{"mean", "ci95", "std" (ddof 1), "n"}: the mean of replicates with its 95% t interval (None under 2)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else None
    if n < 2:
        return {"mean": mean, "ci95": None, "std": 0.0 if n else None, "n": n}
    std = float(x.std(ddof=1))
    half = student_t_quantile_975(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "std": std, "n": n}
