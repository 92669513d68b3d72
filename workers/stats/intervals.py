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
