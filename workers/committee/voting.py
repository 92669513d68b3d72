"""Committee voting math: numpy in, numpy out.

logits: [members, examples, classes] float. Rules:
- soft:     mean of the members' class probabilities (the paper's soft committee), then argmax;
- logit:    mean of the members' logits, then argmax;
- hard:     majority vote of the members' argmax (ties go to the lowest class id);
- weighted: prior-weighted sum of logits with weights softmax(val_accuracy% / T) (CV-DD's relabel).

Soft labels for distillation come from the same rules (`soft_labels`): "mean_probability" is the soft
vote's scores, "equal_logit" the logit vote's (CV-DD's equal-weight voter: the logits summed with
weights 1/K), "prior_weighted" the weighted vote's, so a distilled set is labelled exactly as the
committee classifies.
"""

from __future__ import annotations

import numpy as np

RULES = ("soft", "logit", "hard", "weighted")
# soft-label rule -> the voting rule whose scores it returns
SOFT_LABEL_RULES = {"mean_probability": "soft", "equal_logit": "logit", "prior_weighted": "weighted"}


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def prior_weights(val_accuracy: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(alpha / T) with alpha the members' validation accuracy in percent; [members]."""
    return softmax(100.0 * np.asarray(val_accuracy, dtype=np.float64) / temperature)


def aggregate(logits: np.ndarray, rule: str, weights: np.ndarray | None = None) -> np.ndarray:
    """Committee scores [examples, classes] (argmax is the decision); `weights` [members] for 'weighted'."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"logits must be [members, examples, classes], got shape {logits.shape}")
    if rule == "soft":
        return softmax(logits).mean(axis=0)
    if rule == "logit":
        return logits.mean(axis=0)
    if rule == "hard":
        votes = logits.argmax(axis=2)  # [members, examples]
        counts = np.zeros(logits.shape[1:], dtype=np.float64)
        np.add.at(counts, (np.broadcast_to(np.arange(logits.shape[1]), votes.shape), votes), 1.0)
        return counts
    if rule == "weighted":
        if weights is None or len(weights) != logits.shape[0]:
            raise ValueError("the weighted rule needs one weight per member")
        return np.tensordot(np.asarray(weights, dtype=np.float64), logits, axes=1)
    raise ValueError(f"unknown voting rule {rule!r}; choose from {', '.join(RULES)}")


def soft_labels(logits: np.ndarray, rule: str, val_accuracy: np.ndarray | None = None,
                temperature: float = 10.0) -> np.ndarray:
    """The committee's soft labels [examples, classes] for members' logits [members, examples, classes].

    "mean_probability": the mean of the members' class probabilities (equal weights);
    "equal_logit": the members' logits summed with equal weights 1/K (CV-DD's equal voter: softmax of equal
    priors), i.e. their mean logit;
    "prior_weighted": sum of the members' logits weighted by softmax(val_accuracy% / temperature).
    """
    if rule not in SOFT_LABEL_RULES:
        raise ValueError(f"unknown soft-label rule {rule!r}; choose from {', '.join(SOFT_LABEL_RULES)}")
    weights = None
    if rule == "prior_weighted":
        if val_accuracy is None:
            raise ValueError("the prior_weighted rule needs the members' validation accuracies")
        weights = prior_weights(val_accuracy, temperature)
    return aggregate(logits, SOFT_LABEL_RULES[rule], weights)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(scores).argmax(axis=-1) == np.asarray(labels)).mean())


def committee_report(val_logits: np.ndarray, test_logits: np.ndarray, val_labels: np.ndarray,
                     test_labels: np.ndarray, temperature: float) -> dict:
    """Test accuracy of every rule for the full committee, and the soft committee's curve over sizes 1..K."""
    val_acc = np.array([accuracy(m, val_labels) for m in val_logits])
    weights = prior_weights(val_acc, temperature)
    rules = {rule: {"test_accuracy": accuracy(aggregate(test_logits, rule, weights), test_labels)} for rule in RULES}
    curve = [accuracy(aggregate(test_logits[:k], "soft"), test_labels) for k in range(1, len(test_logits) + 1)]
    return {"rules": rules, "curve": curve, "weights": weights.tolist()}
