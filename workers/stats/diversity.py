"""How the members of a committee differ, and what that buys the vote.

- Pairwise disagreement: the share of examples on which two members' predicted classes differ, averaged
  over all pairs of members.
- Error correlation: Pearson's correlation of two members' error indicators (1 = wrong) over the
  examples, averaged over the pairs where both members make some errors and get some right (elsewhere
  it is undefined); low correlation is what lets a vote correct a member.
- Brier decomposition of the mean-probability (soft) vote, exact for every example: with p_k the members'
  probabilities and p = mean_k p_k,
      sum_c (p_c - y_c)^2 = mean_k sum_c (p_k,c - y_c)^2 - mean_k sum_c (p_k,c - p_c)^2,
  so Brier(vote) = mean member Brier - ambiguity (the mean squared distance of the members from the
  vote). The committee's gain over its average member is exactly its ambiguity.
"""

from __future__ import annotations

import numpy as np

from workers.stats.calibration import brier_score

DIVERSITY_METHOD = ("pairwise disagreement = share of test examples two members label differently; error correlation "
                    "= Pearson correlation of two members' error indicators (pairs where it is defined); Brier(soft "
                    "vote) = mean member Brier - ambiguity (mean squared distance of members from the vote), exact")


def _pairs(k: int):
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def pairwise_disagreement(predictions) -> float | None:
    """Mean over member pairs of the share of examples they label differently; predictions [members, examples]."""
    predictions = np.asarray(predictions)
    pairs = _pairs(len(predictions))
    if not pairs:
        return None
    return float(np.mean([(predictions[i] != predictions[j]).mean() for i, j in pairs]))


def error_correlation(correct) -> dict:
    """Mean Pearson correlation of the members' error indicators over the pairs where it is defined;
    correct [members, examples] booleans. {"mean" (None when no pair has one), "pairs", "defined_pairs"}."""
    errors = ~np.asarray(correct, dtype=bool)
    pairs = _pairs(len(errors))
    values = []
    for i, j in pairs:
        x, y = errors[i].astype(np.float64), errors[j].astype(np.float64)
        if x.std() > 0 and y.std() > 0:
            values.append(float(np.corrcoef(x, y)[0, 1]))
    return {"mean": float(np.mean(values)) if values else None, "pairs": len(pairs), "defined_pairs": len(values)}


def brier_decomposition(member_probs, labels) -> dict:
    """{"vote", "mean_member", "ambiguity"} Brier scores of the mean-probability vote of member_probs
    [members, examples, classes]: vote = mean_member - ambiguity (exact, up to rounding)."""
    member_probs = np.asarray(member_probs, dtype=np.float64)
    vote = member_probs.mean(axis=0)
    ambiguity = float(((member_probs - vote) ** 2).sum(axis=2).mean())
    return {"vote": brier_score(vote, labels),
            "mean_member": float(np.mean([brier_score(p, labels) for p in member_probs])),
            "ambiguity": ambiguity}


def diversity(member_probs, labels) -> dict:
    """Everything above for a committee's class probabilities [members, examples, classes] on `labels`, with
    the members' mean accuracy and the soft vote's accuracy beside them."""
    member_probs = np.asarray(member_probs, dtype=np.float64)
    labels = np.asarray(labels)
    predictions = member_probs.argmax(axis=2)  # [members, examples]
    correct = predictions == labels
    return {"members": int(len(member_probs)),
            "pairwise_disagreement": pairwise_disagreement(predictions),
            "error_correlation": error_correlation(correct),
            "mean_member_accuracy": float(correct.mean()),
            "vote_accuracy": float((member_probs.mean(axis=0).argmax(axis=1) == labels).mean()),
            "brier": brier_decomposition(member_probs, labels)}
