"""The voting math on hand-built arrays."""

from __future__ import annotations

import numpy as np
import pytest

from workers.committee.voting import accuracy, aggregate, committee_report, prior_weights, softmax

# 3 members, 2 examples, 3 classes
LOGITS = np.array([
    [[3.0, 0.0, 0.0], [0.0, 0.0, 9.0]],
    [[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]],
    [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
])


def test_soft_vote_averages_probabilities():
    scores = aggregate(LOGITS, "soft")
    expected = (softmax(LOGITS[0]) + softmax(LOGITS[1]) + softmax(LOGITS[2])) / 3
    np.testing.assert_allclose(scores, expected)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)


def test_soft_and_logit_votes_can_disagree():
    # example 1: member 0 is very sure of class 2, members 1-2 moderately sure of class 1
    np.testing.assert_allclose(aggregate(LOGITS, "logit")[1], [0.0, 4 / 3, 3.0])
    assert aggregate(LOGITS, "logit")[1].argmax() == 2
    assert aggregate(LOGITS, "soft")[1].argmax() == 1


def test_hard_vote_is_majority_with_ties_to_lowest_class():
    np.testing.assert_array_equal(aggregate(LOGITS, "hard"), [[2, 1, 0], [0, 2, 1]])
    tie = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert aggregate(tie, "hard").argmax(axis=1).tolist() == [0]


def test_weighted_vote_uses_softmax_of_val_accuracy_over_t():
    w = prior_weights(np.array([0.9, 0.5, 0.5]), temperature=10.0)
    np.testing.assert_allclose(w, np.exp([9.0, 5.0, 5.0]) / np.exp([9.0, 5.0, 5.0]).sum())
    scores = aggregate(LOGITS, "weighted", w)
    np.testing.assert_allclose(scores[1], w[0] * LOGITS[0, 1] + w[1] * LOGITS[1, 1] + w[2] * LOGITS[2, 1])
    assert scores.argmax(axis=1).tolist() == [0, 2]  # the trusted member 0 decides example 1
    flipped = aggregate(LOGITS, "weighted", prior_weights(np.array([0.1, 0.9, 0.9]), temperature=10.0))
    assert flipped.argmax(axis=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="one weight per member"):
        aggregate(LOGITS, "weighted", w[:2])


def test_equal_weights_reduce_to_the_logit_vote():
    w = prior_weights(np.array([0.7, 0.7, 0.7]), temperature=5.0)
    np.testing.assert_allclose(aggregate(LOGITS, "weighted", w), aggregate(LOGITS, "logit"))


def test_committee_report_curve_and_rules():
    labels = np.array([0, 1])
    rep = committee_report(LOGITS, LOGITS, labels, labels, temperature=10.0)
    assert rep["curve"][0] == accuracy(LOGITS[0], labels) == 0.5
    assert len(rep["curve"]) == 3 and rep["curve"][2] == accuracy(aggregate(LOGITS, "soft"), labels)
    assert set(rep["rules"]) == {"soft", "logit", "hard", "weighted"}
    assert rep["rules"]["soft"]["test_accuracy"] == 1.0
    assert rep["rules"]["hard"]["test_accuracy"] == 1.0
    assert rep["rules"]["logit"]["test_accuracy"] == 0.5
    with pytest.raises(ValueError, match="unknown voting rule"):
        aggregate(LOGITS, "median")
