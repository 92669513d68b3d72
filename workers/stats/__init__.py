"""Statistics every comparison the project prints rests on: plain numpy in, plain dicts out.

- `intervals`: an accuracy's 95% Wilson interval over test examples, the chance level of a split (its
  majority-class rate) and whether an accuracy is above it; the exact Student's t distribution (integer
  degrees of freedom) and a mean's t interval over a few replicates (seeds);
- `paired`: two models scored on the same examples: exact McNemar test on the discordant examples, a
  seeded paired-bootstrap interval of the accuracy difference, Holm's adjustment within a family of
  tests, and the verdict ("a better", "b better" or "inconclusive") the reports print; two methods run
  with the same seeds, paired over the seeds (mean difference, t interval, paired t test);
- `calibration`: NLL, expected calibration error (15 equal-width bins) and the Brier score of class
  probabilities;
- `diversity`: how a committee's members differ (pairwise disagreement, error correlation) and the
  exact split of the soft vote's Brier score into mean member Brier minus ambiguity.

Callers pass per-example correctness (booleans), predictions or probabilities; nothing here knows
about runs, members or files, so run, sweep and distillation reports share it.
"""

from workers.stats.calibration import brier_score, calibration, expected_calibration_error, negative_log_likelihood
from workers.stats.diversity import brier_decomposition, diversity, error_correlation, pairwise_disagreement
from workers.stats.intervals import (
    above_chance,
    accuracy_interval,
    chance_level,
    mean_interval,
    student_t_p_value,
    student_t_quantile_975,
    wilson_interval,
)
from workers.stats.paired import (
    adjust_family,
    adjust_seed_family,
    compare_over_seeds,
    compare_paired,
    holm_adjusted,
    mcnemar_exact,
    paired_bootstrap_interval,
    verdict,
)

__all__ = ["above_chance", "adjust_family", "adjust_seed_family", "accuracy_interval", "compare_over_seeds",
           "mean_interval", "student_t_p_value", "student_t_quantile_975", "brier_decomposition", "brier_score",
           "calibration", "chance_level", "compare_paired", "diversity", "error_correlation", "expected_calibration_error",
           "holm_adjusted", "mcnemar_exact", "negative_log_likelihood", "paired_bootstrap_interval",
           "pairwise_disagreement", "verdict", "wilson_interval"]
