"""How well class probabilities match how often a model is right.

- NLL: mean of -log p(true class) (natural log); lower is better, log(classes) for a uniform guess.
- ECE: expected calibration error with 15 equal-width confidence bins (Guo et al. 2017): the examples
  are binned by their top probability (bin b holds confidences in ((b-1)/15, b/15]), and ECE is the
  example-weighted mean over bins of |accuracy in the bin - mean confidence in the bin|.
- Brier score: mean over examples of sum over classes (p_c - y_c)^2 with y one-hot (0 best, 2 worst);
  the multi-class form, the one whose split into member Brier and ambiguity is exact (`diversity`).
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
PROBABILITY_FLOOR = 1e-12  # -log of a probability that underflowed to 0 is capped at about 27.6

CALIBRATION_METHOD = (f"NLL = mean -log p(true class); ECE over {ECE_BINS} equal-width confidence bins (top "
                      f"probability); Brier = mean over examples of the sum over classes of (p - one-hot)^2")


def _checked(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probabilities must be [examples, classes] with one label per example, got "
                         f"{probs.shape} and {labels.shape}")
    return probs, labels


def negative_log_likelihood(probs, labels) -> float:
    probs, labels = _checked(probs, labels)
    true = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(true, PROBABILITY_FLOOR)).mean())


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    probs, labels = _checked(probs, labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # bin b: ((b)/bins, (b+1)/bins]
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def brier_score(probs, labels) -> float:
    probs, labels = _checked(probs, labels)
    one_hot = np.zeros_like(probs)
    one_hot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - one_hot) ** 2).sum(axis=1).mean())


def calibration(probs, labels) -> dict:
    """{"nll", "ece", "brier"} of class probabilities [examples, classes]."""
    return {"nll": negative_log_likelihood(probs, labels), "ece": expected_calibration_error(probs, labels),
            "brier": brier_score(probs, labels)}
