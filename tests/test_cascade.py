"""The confidence cascade's math and the request checks of `committee serve`, without Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.committee.cascade import (
    NEVER,
    cascade_forward,
    choose_threshold,
    decide,
    exit_steps,
    member_order,
    running_votes,
)
from workers.committee.serving import BadRequest, RequestLimits, parse_request
from workers.committee.voting import aggregate, softmax


def logits_of(probs) -> np.ndarray:
    """Logits whose softmax is `probs` [K, n, C]."""
    return np.log(np.asarray(probs, dtype=np.float64))


def test_member_order_is_best_first_and_keeps_index_order_on_ties():
    assert member_order([0.5, 0.7, 0.7, 0.6]).tolist() == [1, 2, 3, 0]


def test_running_votes_and_exit_steps_on_a_worked_example():
    # 3 members, 2 texts, 2 classes; member 1 is the best, then 0, then 2
    probs = [[[0.6, 0.4], [0.5, 0.5]],
             [[0.9, 0.1], [0.6, 0.4]],
             [[0.2, 0.8], [0.1, 0.9]]]
    order = member_order([0.7, 0.8, 0.6])
    votes = running_votes(logits_of(probs), order)
    np.testing.assert_allclose(votes[0], [[0.9, 0.1], [0.6, 0.4]])
    np.testing.assert_allclose(votes[1], [[0.75, 0.25], [0.55, 0.45]])
    np.testing.assert_allclose(votes[2], softmax(logits_of(probs)).mean(axis=0))
    assert exit_steps(votes, 0.85).tolist() == [1, 3]  # text 0 is sure after the best member, text 1 never
    assert exit_steps(votes, 0.7).tolist() == [1, 3]
    assert exit_steps(votes, 0.55).tolist() == [1, 1]
    assert exit_steps(votes, NEVER).tolist() == [3, 3]
    decided = decide(logits_of(probs), order, 0.85)
    assert decided.labels.tolist() == [0, 1] and decided.members_used.tolist() == [1, 3]
    np.testing.assert_allclose(decided.soft_labels[0], [0.9, 0.1])


def test_a_threshold_no_vote_reaches_is_the_full_soft_committee():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50, 3)) * 2
    decided = decide(logits, member_order(rng.random(4)), NEVER)
    assert (decided.members_used == 4).all()
    np.testing.assert_array_equal(decided.labels, aggregate(logits, "soft").argmax(axis=1))
    np.testing.assert_allclose(decided.soft_labels, aggregate(logits, "soft"))


def test_cascade_forward_asks_only_the_open_texts_and_decides_as_from_all_logits():
    rng = np.random.default_rng(1)
    K, n, C = 5, 200, 4
    logits = (rng.normal(size=(K, n, C)) * 3).astype(np.float32)
    order = member_order(rng.random(K))
    threshold = 0.8
    asked = []

    def member_logits(k, rows):
        asked.append((k, rows.copy()))
        return logits[k, rows]

    decided, computed = cascade_forward(member_logits, n, C, order, threshold)
    expected = decide(logits, order, threshold)
    np.testing.assert_array_equal(decided.labels, expected.labels)
    np.testing.assert_array_equal(decided.members_used, expected.members_used)
    np.testing.assert_allclose(decided.soft_labels, expected.soft_labels, atol=1e-6)
    assert [k for k, _ in asked] == order[:len(asked)].tolist()
    for step, (k, rows) in enumerate(asked, start=1):  # each member sees exactly the texts still open
        assert sorted(rows.tolist()) == np.flatnonzero(expected.members_used >= step).tolist()
        assert not np.isnan(computed[k, rows]).any()
    assert np.isnan(computed).any(), "some texts stopped early, so some members were not asked about them"


def test_choose_threshold_keeps_accuracy_within_the_margin_over_every_higher_threshold():
    rng = np.random.default_rng(2)
    K, n, C = 4, 400, 4
    labels = rng.integers(0, C, n)
    strength = np.array([2.5, 1.5, 2.0, 1.0])[:, None]  # member 0 best, member 3 worst
    logits = rng.normal(size=(K, n, C))
    logits[np.arange(K)[:, None], np.arange(n)[None, :], labels[None, :]] += strength
    val_accuracy = (logits.argmax(axis=2) == labels).mean(axis=1)
    order = member_order(val_accuracy)
    calibration = choose_threshold(logits, labels, order, max_loss_points=0.3)
    votes = running_votes(logits, order)
    full = (votes[-1].argmax(axis=1) == labels).mean()
    assert calibration.full_val_accuracy == pytest.approx(full)
    assert calibration.val_accuracy >= full - 0.003 - 1e-12
    assert calibration.threshold < NEVER and calibration.early_exit_share > 0, "easy texts exist: some stop early"
    tops = np.unique(votes[:-1].max(axis=2))
    cols = np.arange(n)
    for t in tops[tops >= calibration.threshold]:
        assert (votes[exit_steps(votes, t) - 1, cols].argmax(axis=1) == labels).mean() >= full - 0.003 - 1e-12
    lower = tops[tops < calibration.threshold]
    if len(lower):  # the next lower candidate fails the margin (else it would have been chosen)
        t = lower[-1]
        assert (votes[exit_steps(votes, t) - 1, cols].argmax(axis=1) == labels).mean() < full - 0.003
    assert sum(calibration.members_used_share) == pytest.approx(1.0)
    # no margin at all still never loses accuracy on validation
    strict = choose_threshold(logits, labels, order, max_loss_points=0.0)
    assert strict.val_accuracy >= full - 1e-12 and strict.threshold >= calibration.threshold


LIMITS = RequestLimits(max_texts=3, max_text_chars=50)


@pytest.mark.parametrize("body, status, message", [
    (b'{"texts": ["a", ', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b'["a text"]', 422, 'JSON object with a "texts" list'),
    (b'{"text": ["a text"]}', 422, 'JSON object with a "texts" list'),
    (b'{"texts": "a text"}', 422, "non-empty list of strings"),
    (b'{"texts": []}', 422, "non-empty list of strings"),
    (b'{"texts": ["a", "  "]}', 422, "texts[1] is empty"),
    (b'{"texts": ["a", 7]}', 422, "texts[1] is not a string (it is int)"),
    (b'{"texts": ["a", null]}', 422, "texts[1] is not a string (it is NoneType)"),
    (b'{"texts": ["a", "b", "c", "d"]}', 413, "4 texts in one request; at most 3"),
    (json.dumps({"texts": ["x" * 51]}).encode(), 413, "texts[0] has 51 characters; at most 50"),
    (b'{"texts": ["a"], "rule": "hard"}', 422, "unknown key 'rule'"),
    (b'{"texts": ["a"], "member_probabilities": "yes"}', 422, '"member_probabilities" must be true or false'),
])
def test_bad_requests_get_their_status_and_a_message(body, status, message):
    with pytest.raises(BadRequest) as caught:
        parse_request(body, LIMITS)
    assert caught.value.status == status and message in caught.value.message


def test_good_request_parses():
    request = parse_request(b'{"texts": ["one", "two"], "member_probabilities": true}', LIMITS)
    assert request.texts == ["one", "two"] and request.member_probabilities
    assert not parse_request(b'{"texts": ["one"]}', LIMITS).member_probabilities
