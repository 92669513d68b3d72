"""Two models scored on the same test examples: is one better, and by how much?

Pairing removes the examples' own difficulty from the comparison: only the discordant examples (one
model right, the other wrong) carry information about which model is better.
- Exact McNemar test (two-sided): under "equally good", each of the n = b + c discordant examples is
  equally likely to favour either model, so p = min(1, 2 * P(X <= min(b, c))) with X ~ Binomial(n, 1/2).
- Paired bootstrap: the 95% percentile interval of the accuracy difference over resamples of the test
  examples with replacement. The difference of a resample depends only on how many of its examples fall
  in each of the three kinds (a only right, b only right, both alike), so a resample is drawn as
  multinomial counts of those kinds: the same distribution as resampling examples, in O(resamples) time
  whatever the test set's size. Each comparison draws from its own generator, seeded by the caller's
  seed and the comparison's name, so a report is reproducible and adding a comparison moves no other.
- Holm's step-down adjustment within a family of comparisons (e.g. every member against its twin), so
  that one family of K tests does not find a "significant" pair by chance K times as often.
A difference is called only when both agree: the (adjusted) McNemar p is below 0.05 and the bootstrap
interval excludes 0. Otherwise the verdict is "inconclusive": the difference is inside the noise of
this test set.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000
EXACT_UP_TO = 1000  # discordant pairs summed in exact rational arithmetic; more: in log space (rel. error ~1e-12)
INCONCLUSIVE = "inconclusive"

PAIRED_TEST_METHOD = "exact McNemar test, two-sided, on the discordant test examples"
BOOTSTRAP_METHOD = (f"paired bootstrap over the test examples: 95% percentile interval of the accuracy difference, "
                    f"{BOOTSTRAP_RESAMPLES:,} resamples, seeded")
VERDICT_METHOD = (f"a difference is called when McNemar's p (Holm-adjusted within its family) is below {ALPHA} and "
                  f"the bootstrap interval excludes 0; otherwise it is inconclusive")


def binomial_lower_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= EXACT_UP_TO:
        return float(Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n))
    log_terms = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)])
    top = log_terms.max()
    return float(math.exp(top + math.log(np.exp(log_terms - top).sum()) - n * math.log(2.0)))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: `a_only` examples only model a got right,
    `b_only` only model b; 1.0 when there are none."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_lower_tail(min(a_only, b_only), n))


def comparison_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one comparison: the caller's seed and a stable digest of the comparison's name."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def paired_bootstrap_interval(a_only: int, b_only: int, n: int, rng: np.random.Generator,
                              resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95% percentile interval of accuracy(a) - accuracy(b) over paired resamples of `n` examples, of which
    `a_only` favour a and `b_only` favour b."""
    if n <= 0:
        return [0.0, 0.0]
    shares = np.array([a_only, b_only, n - a_only - b_only], dtype=np.float64) / n
    counts = rng.multinomial(n, shares, size=resamples)  # [resamples, 3]
    differences = (counts[:, 0] - counts[:, 1]) / n
    low, high = np.quantile(differences, [0.025, 0.975])
    return [float(low), float(high)]


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (monotone, capped at 1)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(p_value: float, ci95: list[float], alpha: float = ALPHA) -> str:
    """"a better", "b better" or "inconclusive" (see the module's docstring for the rule)."""
    if p_value < alpha and ci95[0] > 0:
        return "a better"
    if p_value < alpha and ci95[1] < 0:
        return "b better"
    return INCONCLUSIVE


def compare_paired(correct_a, correct_b, seed: int, name: str = "") -> dict:
    """Models a and b on the same examples (boolean arrays [examples], True = right).

    {"a_accuracy", "b_accuracy", "difference" (a - b), "ci95" (bootstrap), "a_only", "b_only", "n",
     "mcnemar_p", "p" (the p the verdict uses: mcnemar_p until `adjust_family` adjusts it), "verdict"}.
    `name` seeds the bootstrap together with `seed` (one stream per comparison)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired comparison needs two boolean arrays of one length, got {a.shape} and {b.shape}")
    n = int(a.size)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = mcnemar_exact(a_only, b_only)
    ci95 = paired_bootstrap_interval(a_only, b_only, n, comparison_rng(seed, name))
    return {"a_accuracy": float(a.mean()) if n else None, "b_accuracy": float(b.mean()) if n else None,
            "difference": (a_only - b_only) / n if n else 0.0, "ci95": ci95, "a_only": a_only, "b_only": b_only,
            "n": n, "mcnemar_p": p, "p": p, "verdict": verdict(p, ci95)}


def adjust_family(comparisons: list[dict]) -> list[dict]:
    """The comparisons of one family with Holm-adjusted `p` and the verdicts that follow from it."""
    adjusted = holm_adjusted([c["mcnemar_p"] for c in comparisons])
    return [{**c, "p": p, "verdict": verdict(p, c["ci95"]), "family_size": len(comparisons)}
            for c, p in zip(comparisons, adjusted)]


# ----------------------------------------------------------------------------------------------
# paired over replicates: two methods run with the same seeds (e.g. students of two distilled sets)

PAIRED_SEEDS_METHOD = ("paired over the shared seeds: mean of the per-seed differences with its 95% Student's t "
                       "interval, two-sided paired t test (df = seeds - 1)")


def compare_over_seeds(a_by_seed: dict, b_by_seed: dict) -> dict:
    """Methods a and b measured once per seed (`{seed: value}`), paired on the seeds both have.

    {"difference" (mean of a - b), "ci95" (t interval), "t", "p" (two-sided), "n" (shared seeds),
     "a_better_seeds", "verdict"}; with under two shared seeds (or no spread) the interval is None and p 1.
    Pairing removes what a seed fixes for both methods (the student's initial weights and data order), so
    the interval measures only how the methods' difference varies from seed to seed."""
    from workers.stats.intervals import mean_interval, student_t_p_value

    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    diffs = np.array([a_by_seed[s] - b_by_seed[s] for s in seeds], dtype=np.float64)
    summary = mean_interval(diffs)
    out = {"difference": summary["mean"], "ci95": summary["ci95"], "n": len(seeds), "seeds": seeds,
           "a_better_seeds": int((diffs > 0).sum()), "t": None, "p": 1.0, "verdict": INCONCLUSIVE}
    if len(seeds) < 2:
        return out
    if summary["std"] == 0.0:
        # every seed gave the same difference: no spread to test against (a constant 0 is no difference)
        return out if summary["mean"] == 0.0 else {**out, "ci95": [summary["mean"]] * 2}
    t = summary["mean"] / (summary["std"] / math.sqrt(len(seeds)))
    p = student_t_p_value(t, len(seeds) - 1)
    return {**out, "t": t, "p": p, "verdict": verdict(p, summary["ci95"])}


def adjust_seed_family(comparisons: list[dict]) -> list[dict]:
    """Comparisons over seeds of one family with Holm-adjusted `p` (the raw one kept as `p_unadjusted`)."""
    adjusted = holm_adjusted([c["p"] for c in comparisons])
    return [{**c, "p_unadjusted": c["p"], "p": p,
             "verdict": INCONCLUSIVE if c["ci95"] is None else verdict(p, c["ci95"]), "family_size": len(comparisons)}
            for c, p in zip(comparisons, adjusted)]
