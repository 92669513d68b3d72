"""The confidence cascade: ask the members one at a time, stop once the committee is sure enough.

Members are asked in order of validation accuracy (best first; the lower index on a tie). After the
k-th member the running soft vote is the mean of the first k members' class probabilities; an
example stops there once that vote's top probability reaches the threshold, and otherwise goes on
to the next member. An example that never reaches it is decided by the whole committee's soft vote,
so a threshold above 1 is the full committee. Easy examples cost one member, hard ones all K.

The threshold is chosen on the validation split (`choose_threshold`): the lowest one whose cascade,
and the cascade of every higher candidate, stays within `max_loss_points` of the full committee's
validation accuracy. Asking for that margin over the whole range above keeps a threshold that is
lucky at one point and worse just above it from being chosen.

Numpy in, numpy out (and a callable for the members' forward): the Serve replica and the tests call
the same functions; nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.committee.voting import softmax

NEVER = 1.01  # a threshold no probability reaches: every example asks every member (the full committee)
MAX_CANDIDATES = 2000  # thresholds tried by choose_threshold (quantiles of the running votes beyond this)


def member_order(val_accuracy) -> np.ndarray:
    """Member indices [K], best validation accuracy first; ties keep the lower index first."""
    return np.argsort(-np.asarray(val_accuracy, dtype=np.float64), kind="stable")


def running_votes(logits: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Running soft votes [K, n, classes]: row k-1 is the mean class probability of the first k members in
    `order`, for members' logits [K, n, classes]."""
    probs = softmax(np.asarray(logits, dtype=np.float64))[np.asarray(order)]  # [K, n, C] in cascade order
    return np.cumsum(probs, axis=0) / np.arange(1, len(order) + 1)[:, None, None]


def exit_steps(votes: np.ndarray, threshold: float) -> np.ndarray:
    """How many members each example asks [n] (1..K), for running votes [K, n, classes]."""
    confident = votes.max(axis=2) >= threshold  # [K, n]
    confident[-1] = True  # the last member ends every example
    return confident.argmax(axis=0) + 1


@dataclass(frozen=True)
class CascadeDecisions:
    """What the cascade decided for n examples."""

    labels: np.ndarray  # [n] int64: argmax of the running vote where each example stopped
    soft_labels: np.ndarray  # [n, classes] float64: that running vote (mean probability of the members asked)
    members_used: np.ndarray  # [n] int64 in 1..K


def decide(logits: np.ndarray, order: np.ndarray, threshold: float) -> CascadeDecisions:
    """The cascade's decisions from every member's logits [K, n, classes] (what `cascade_forward` computes
    member by member, asking only the members it needs)."""
    votes = running_votes(logits, order)
    steps = exit_steps(votes, threshold)
    soft = votes[steps - 1, np.arange(votes.shape[1])]  # [n, C]
    return CascadeDecisions(labels=soft.argmax(axis=1), soft_labels=soft, members_used=steps)


def cascade_forward(member_logits: Callable[[int, np.ndarray], np.ndarray], n_examples: int, num_classes: int,
                    order: np.ndarray, threshold: float) -> tuple[CascadeDecisions, np.ndarray]:
    """Run the cascade, asking each member only about the examples still open.

    `member_logits(k, rows)` returns member k's logits [len(rows), classes] for those example rows.
    Returns the decisions and the logits computed [K, n, classes] (NaN where a member was not asked).
    """
    K = len(order)
    logits = np.full((K, n_examples, num_classes), np.nan, dtype=np.float32)
    prob_sum = np.zeros((n_examples, num_classes), dtype=np.float64)
    steps = np.zeros(n_examples, dtype=np.int64)
    open_rows = np.arange(n_examples)
    for step, k in enumerate(order, start=1):
        out = np.asarray(member_logits(int(k), open_rows), dtype=np.float32)  # [len(open_rows), C]
        logits[k, open_rows] = out
        prob_sum[open_rows] += softmax(out.astype(np.float64))
        vote = prob_sum[open_rows] / step
        done = (vote.max(axis=1) >= threshold) | (step == K)
        steps[open_rows[done]] = step
        open_rows = open_rows[~done]
        if not len(open_rows):
            break
    soft = prob_sum / steps[:, None]
    return CascadeDecisions(labels=soft.argmax(axis=1), soft_labels=soft, members_used=steps), logits


@dataclass(frozen=True)
class Calibration:
    """The threshold `choose_threshold` picked and what it does on the validation split."""

    threshold: float
    max_loss_points: float
    val_accuracy: float  # the cascade's, in [0, 1]
    full_val_accuracy: float  # the full committee's soft vote
    members_used_share: list[float]  # [K]: share of validation examples that stopped after k members
    mean_members: float  # members asked per example, on average
    val_examples: int

    @property
    def early_exit_share(self) -> float:
        """Share of validation examples that stopped before the last member."""
        return float(sum(self.members_used_share[:-1]))

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "max_loss_points": self.max_loss_points,
                "val_accuracy": self.val_accuracy, "full_val_accuracy": self.full_val_accuracy,
                "members_used_share": self.members_used_share, "early_exit_share": self.early_exit_share,
                "mean_members": self.mean_members, "val_examples": self.val_examples}


def members_used_share(members_used: np.ndarray, K: int) -> list[float]:
    """Share of examples [K] that stopped after 1, 2, ..., K members."""
    return (np.bincount(np.asarray(members_used) - 1, minlength=K) / max(len(members_used), 1)).tolist()


def candidate_thresholds(votes: np.ndarray) -> np.ndarray:
    """Thresholds worth trying, ascending: every top probability a running vote before the last member
    reaches (quantiles of them when there are more than MAX_CANDIDATES), then NEVER."""
    tops = np.unique(votes[:-1].max(axis=2))
    if len(tops) > MAX_CANDIDATES:
        tops = np.unique(np.quantile(tops, np.linspace(0.0, 1.0, MAX_CANDIDATES)))
    return np.append(tops, NEVER)


def choose_threshold(val_logits: np.ndarray, val_labels: np.ndarray, order: np.ndarray,
                     max_loss_points: float = 0.3) -> Calibration:
    """The lowest threshold whose cascade, and that of every higher candidate, keeps validation accuracy
    within `max_loss_points` (percentage points) of the full committee's soft vote."""
    labels = np.asarray(val_labels)
    votes = running_votes(val_logits, order)
    full = float((votes[-1].argmax(axis=1) == labels).mean())
    floor = full - max_loss_points / 100.0 - 1e-12
    correct = votes.argmax(axis=2) == labels  # [K, n]: each running vote right or wrong
    columns = np.arange(votes.shape[1])
    candidates = candidate_thresholds(votes)
    accuracies = np.array([correct[exit_steps(votes, t) - 1, columns].mean() for t in candidates])
    # from the top down, the lowest candidate with no failing candidate above it
    chosen = len(candidates) - 1
    while chosen > 0 and accuracies[chosen - 1] >= floor:
        chosen -= 1
    threshold = float(candidates[chosen])
    steps = exit_steps(votes, threshold)
    return Calibration(threshold=threshold, max_loss_points=float(max_loss_points),
                       val_accuracy=float(accuracies[chosen]), full_val_accuracy=full,
                       members_used_share=members_used_share(steps, len(order)),
                       mean_members=float(steps.mean()), val_examples=len(labels))
