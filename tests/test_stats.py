"""The statistics behind every comparison, against values worked out by hand (workers.stats), and the
evidence of a committee assembled from members' logits (workers.committee.evidence)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from workers.committee.evidence import committee_evidence
from workers.committee.voting import aggregate, softmax
from workers.stats import (
    accuracy_interval,
    adjust_family,
    adjust_seed_family,
    brier_decomposition,
    brier_score,
    calibration,
    chance_level,
    compare_over_seeds,
    compare_paired,
    error_correlation,
    expected_calibration_error,
    holm_adjusted,
    mcnemar_exact,
    mean_interval,
    negative_log_likelihood,
    paired_bootstrap_interval,
    pairwise_disagreement,
    student_t_p_value,
    student_t_quantile_975,
    verdict,
    wilson_interval,
)
from workers.stats.paired import EXACT_UP_TO, binomial_lower_tail

# ----------------------------------------------------------------------------------------------
# exact McNemar


def test_mcnemar_on_hand_computed_tables():
    # b = 1, c = 8: n = 9 discordant; P(X <= 1 | 9, 1/2) = (C(9,0) + C(9,1)) / 2^9 = 10 / 512 = 0.01953125;
    # two-sided p = 2 * 0.01953125 = 0.0390625
    assert mcnemar_exact(1, 8) == pytest.approx(0.0390625, abs=1e-15)
    assert mcnemar_exact(8, 1) == mcnemar_exact(1, 8)  # symmetric in the two models
    # b = 0, c = 5: 2 * (1 / 32) = 0.0625: five discordant pairs all one way are not yet significant
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625, abs=1e-15)
    # b = 0, c = 6: 2 * (1 / 64) = 0.03125: six are
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125, abs=1e-15)
    # b = 3, c = 3: P(X <= 3 | 6) = (1 + 6 + 15 + 20) / 64 = 42 / 64 > 1/2, so p is capped at 1
    assert mcnemar_exact(3, 3) == 1.0
    # b = 2, c = 7: P(X <= 2 | 9) = (1 + 9 + 36) / 512 = 46 / 512; p = 92 / 512 = 0.1796875
    assert mcnemar_exact(2, 7) == pytest.approx(0.1796875, abs=1e-15)
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence either way


def test_the_log_space_tail_of_large_tables_matches_exact_arithmetic():
    n, k = EXACT_UP_TO + 200, 560  # beyond EXACT_UP_TO the tail is summed in log space
    exact = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    assert binomial_lower_tail(k, n) == pytest.approx(float(exact), rel=1e-9)
    assert mcnemar_exact(k, n - k) == pytest.approx(2 * float(exact), rel=1e-9)  # 0.0225: 560 against 640


# ----------------------------------------------------------------------------------------------
# Wilson intervals and chance


def test_wilson_interval_on_hand_computed_proportions():
    # 8 of 10, z = 1.95996: z^2 / n = 0.384146; centre = (0.8 + 0.192073) / 1.384146 = 0.716738;
    # half = 1.95996 / 1.384146 * sqrt(0.8 * 0.2 / 10 + 3.841459 / 400) = 1.416013 * 0.160011 = 0.226578
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.490160, abs=1e-5), pytest.approx(0.943316, abs=1e-5))
    # 0 of 10: the interval starts at 0 and ends at (z^2 / n) / (1 + z^2 / n) = 0.384146 / 1.384146 = 0.277533
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-5))
    # n of n mirrors 0 of n
    assert wilson_interval(10, 10) == (pytest.approx(1 - 0.277533, abs=1e-5), 1.0)
    # 50 of 100: centre 0.5; half = 1.95996 / 1.038415 * sqrt(0.0025 + 0.0000960) = 0.096170
    assert wilson_interval(50, 100) == (pytest.approx(0.403830, abs=1e-5), pytest.approx(0.596170, abs=1e-5))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_accuracy_interval_and_chance_level():
    correct = np.array([True] * 8 + [False] * 2)
    interval = accuracy_interval(correct)
    assert interval["accuracy"] == 0.8 and interval["correct"] == 8 and interval["n"] == 10
    assert interval["ci95"] == list(wilson_interval(8, 10))
    # the majority class of [0, 0, 1, 2] is 0, with rate 2 / 4
    assert chance_level(np.array([0, 0, 1, 2])) == {"rate": 0.5, "class": 0, "n": 4}


# ----------------------------------------------------------------------------------------------
# paired comparisons


def _pair(both_right: int, a_only: int, b_only: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both_right + [True] * a_only + [False] * b_only + [False] * both_wrong
    b = [True] * both_right + [False] * a_only + [True] * b_only + [False] * both_wrong
    return np.array(a), np.array(b)


def test_compare_paired_counts_the_discordant_examples():
    a, b = _pair(both_right=60, a_only=1, b_only=8, both_wrong=31)
    c = compare_paired(a, b, seed=0, name="a vs b")
    assert (c["a_only"], c["b_only"], c["n"]) == (1, 8, 100)
    assert c["a_accuracy"] == 0.61 and c["b_accuracy"] == 0.68 and c["difference"] == pytest.approx(-0.07)
    assert c["mcnemar_p"] == pytest.approx(0.0390625)
    lo, hi = c["ci95"]
    assert lo < -0.07 < hi and hi < 0, "seven more examples right of a hundred, one way: the interval excludes 0"
    assert c["verdict"] == "b better"
    assert compare_paired(a, b, seed=0, name="a vs b") == c, "seeded: the same comparison gives the same interval"
    assert compare_paired(b, a, seed=0, name="b vs a")["verdict"] == "a better"
    even = compare_paired(*_pair(50, 3, 3, 44), seed=0, name="even")
    assert even["mcnemar_p"] == 1.0 and even["verdict"] == "inconclusive" and even["ci95"][0] < 0 < even["ci95"][1]
    with pytest.raises(ValueError):
        compare_paired(a, b[:-1], seed=0)


def test_the_multinomial_bootstrap_is_the_bootstrap_over_examples():
    """Resampling the 300 examples with replacement and drawing the three kinds' counts from a multinomial
    give the same distribution of the difference: their 95% intervals agree to sampling error."""
    a, b = _pair(both_right=200, a_only=30, b_only=15, both_wrong=55)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(a), size=(20_000, len(a)))
    direct = np.quantile(a[picks].mean(axis=1) - b[picks].mean(axis=1), [0.025, 0.975])
    drawn = paired_bootstrap_interval(30, 15, 300, np.random.default_rng(2), resamples=20_000)
    assert drawn == pytest.approx(direct.tolist(), abs=0.005)


def test_holm_adjustment_and_verdicts():
    # p = 0.01, 0.04, 0.03 (m = 3), in ascending order 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept
    # monotone: 0.03, 0.06, 0.06
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]
    assert verdict(0.01, [0.02, 0.08]) == "a better" and verdict(0.01, [-0.08, -0.02]) == "b better"
    assert verdict(0.06, [0.01, 0.08]) == "inconclusive", "McNemar and the bootstrap must agree"
    assert verdict(0.01, [-0.01, 0.08]) == "inconclusive"
    family = adjust_family([{"mcnemar_p": 0.02, "ci95": [0.01, 0.05]}, {"mcnemar_p": 0.9, "ci95": [-0.1, 0.1]}])
    assert [c["p"] for c in family] == pytest.approx([0.04, 0.9]) and family[0]["verdict"] == "a better"


# ----------------------------------------------------------------------------------------------
# calibration and diversity

# 4 examples, 2 classes. Confidence (top probability) and its 15-wide bin ((b-1)/15, b/15]:
#   A [0.90, 0.10] label 0: right, conf 0.90, bin 14 (0.867, 0.933]
#   B [0.09, 0.91] label 0: wrong, conf 0.91, bin 14
#   C [0.30, 0.70] label 1: right, conf 0.70, bin 11 (0.667, 0.733]
#   D [0.62, 0.38] label 1: wrong, conf 0.62, bin 10 (0.600, 0.667]
PROBS = np.array([[0.90, 0.10], [0.09, 0.91], [0.30, 0.70], [0.62, 0.38]])
LABELS = np.array([0, 0, 1, 1])


def test_ece_brier_and_nll_on_a_hand_computed_example():
    # ECE = 2/4 |0.5 - 0.905| + 1/4 |1 - 0.70| + 1/4 |0 - 0.62| = 0.2025 + 0.075 + 0.155 = 0.4325
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(0.4325)
    # Brier per example: A 0.1^2 + 0.1^2 = 0.02; B 0.91^2 + 0.91^2 = 1.6562; C 0.3^2 + 0.3^2 = 0.18;
    # D 0.62^2 + 0.62^2 = 0.7688; mean 2.625 / 4 = 0.65625
    assert brier_score(PROBS, LABELS) == pytest.approx(0.65625)
    # NLL = -(ln 0.9 + ln 0.09 + ln 0.7 + ln 0.38) / 4 = (0.105361 + 2.407946 + 0.356675 + 0.967584) / 4
    assert negative_log_likelihood(PROBS, LABELS) == pytest.approx(0.959391, abs=1e-6)
    assert calibration(PROBS, LABELS) == {"nll": negative_log_likelihood(PROBS, LABELS),
                                          "ece": pytest.approx(0.4325), "brier": pytest.approx(0.65625)}
    # a perfectly sure, always right model: every score 0
    sure = np.eye(2)[LABELS]
    assert calibration(sure, LABELS) == {"nll": pytest.approx(0.0, abs=1e-9), "ece": 0.0, "brier": 0.0}


def test_diversity_on_hand_computed_members():
    # members' predictions on 4 examples; pairs (0,1) differ at 2 of 4, (0,2) at 1, (1,2) at 1: mean 1/3
    predictions = np.array([[0, 1, 1, 0], [0, 1, 0, 1], [0, 1, 1, 1]])
    assert pairwise_disagreement(predictions) == pytest.approx(1 / 3)
    assert pairwise_disagreement(predictions[:1]) is None  # one member has no pair
    # errors of a and b coincide (correlation 1); a and c: errors [0,0,1,1] and [0,1,0,1] (correlation 0);
    # d is always right, so its correlation is undefined and its pairs are left out
    correct = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]], dtype=bool)
    assert error_correlation(correct[:3]) == {"mean": pytest.approx((1 + 0 + 0) / 3), "pairs": 3, "defined_pairs": 3}
    assert error_correlation(correct) == {"mean": pytest.approx(1 / 3), "pairs": 6, "defined_pairs": 3}
    # two sure members that disagree on one example of class 0: vote [0.5, 0.5] has Brier 0.5; the members'
    # Brier are 0 and 2 (mean 1); each is 0.5^2 + 0.5^2 = 0.5 from the vote (ambiguity 0.5): 0.5 = 1 - 0.5
    split = brier_decomposition(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]), np.array([0]))
    assert split == {"vote": 0.5, "mean_member": 1.0, "ambiguity": 0.5}


def test_the_brier_split_is_exact_for_any_committee():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(5, 200, 4)) * 2)
    labels = rng.integers(0, 4, 200)
    split = brier_decomposition(probs, labels)
    assert split["vote"] == pytest.approx(split["mean_member"] - split["ambiguity"], abs=1e-12)
    assert split["vote"] == pytest.approx(brier_score(aggregate(np.log(probs), "soft"), labels), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# a committee's evidence


def _members(rng, labels, roles_strength, n_val=20):
    """Members whose logits favour the true class by `strength` (0: a constant guess)."""
    out = []
    for name, role, index, strength in roles_strength:
        logits = rng.normal(size=(len(labels), 3))
        logits[np.arange(len(labels)), labels] += strength
        if strength == 0:
            logits = np.tile([2.0, 0.0, 0.0], (len(labels), 1))  # always class 0: the majority class
        out.append({"name": name, "role": role, "index": index, "val_logits": logits[:n_val], "test_logits": logits})
    return out


def test_committee_evidence_compares_what_the_papers_claim_and_warns_at_chance():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 120 + [1] * 90 + [2] * 90)  # majority class 0: chance 40%
    members = _members(rng, labels, [("member-00", "pretrained", 0, 3.0), ("member-01", "pretrained", 1, 0.0),
                                     ("scratch-00", "scratch", 0, 1.0), ("scratch-01", "scratch", 1, 1.0),
                                     ("deep", "deep", 0, 2.0)])
    e = committee_evidence(members, labels[:20], labels, temperature=10.0, seed=0)
    assert e["test_examples"] == 300 and e["chance"] == {"rate": 0.4, "class": 0, "n": 300}
    names = {"member-00", "member-01", "scratch-00", "scratch-01", "deep"} | {
        f"{arm}/{rule}" for arm in ("committee", "scratch_committee") for rule in ("soft", "logit", "hard", "weighted")}
    assert set(e["models"]) == names
    for name, m in e["models"].items():
        assert m["ci95"][0] <= m["test_accuracy"] <= m["ci95"][1], name
        assert (m["calibration"] is None) == name.endswith("/hard"), name
    # the constant member sits exactly at chance (40%); so does the pre-trained hard vote, whose ties (one vote
    # each) go to the lowest class id, the constant member's answer; every other model learned
    assert e["models"]["member-01"]["test_accuracy"] == 0.4
    assert [w["model"] for w in e["warnings"]] == ["member-01", "committee/hard"]
    assert "not above chance (40.0%, the majority-class rate" in e["warnings"][0]["message"]
    for name, m in e["models"].items():
        assert (m["ci95"][0] <= 0.4) == (name in {"member-01", "committee/hard"}), name
    families = {}
    for c in e["comparisons"]:
        families.setdefault(c["family"], []).append((c["a"], c["b"]))
    assert families == {
        "pre-trained vs scratch committee, soft vote": [("committee/soft", "scratch_committee/soft")],
        "pre-trained vs scratch committee, other votes": [(f"committee/{r}", f"scratch_committee/{r}")
                                                          for r in ("logit", "hard", "weighted")],
        "committee vs deep model, soft vote": [("committee/soft", "deep")],
        "committee vs deep model, other votes": [(f"committee/{r}", "deep") for r in ("logit", "hard", "weighted")],
        "members vs scratch twins": [("member-00", "scratch-00"), ("member-01", "scratch-01")]}
    twin = {(c["a"], c["b"]): c for c in e["comparisons"]}
    assert twin[("member-01", "scratch-01")]["verdict"] == "b better"  # the constant member loses to its twin
    assert twin[("member-00", "scratch-00")]["family_size"] == 2
    for arm in ("pretrained", "scratch"):
        d = e["diversity"][arm]
        key = "committee" if arm == "pretrained" else "scratch_committee"
        assert d["vote_accuracy"] == e["models"][f"{key}/soft"]["test_accuracy"]
        assert d["brier"]["vote"] == pytest.approx(e["models"][f"{key}/soft"]["calibration"]["brier"], abs=1e-12)
        assert d["brier"]["vote"] == pytest.approx(d["brier"]["mean_member"] - d["brier"]["ambiguity"], abs=1e-12)
    # the constant member never errs alone in a way that varies: its error indicator still varies (wrong on
    # classes 1 and 2), so the pair's correlation is defined
    assert e["diversity"]["pretrained"]["error_correlation"]["defined_pairs"] == 1
    again = committee_evidence(members, labels[:20], labels, temperature=10.0, seed=0)
    assert again == e, "the same logits and seed give the same evidence"
    other_seed = committee_evidence(members, labels[:20], labels, temperature=10.0, seed=1)
    assert [c["mcnemar_p"] for c in other_seed["comparisons"]] == [c["mcnemar_p"] for c in e["comparisons"]]


def test_evidence_without_scratch_twins_or_deep_model():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    members = _members(rng, labels, [("member-00", "pretrained", 0, 2.0)])
    e = committee_evidence(members, labels[:20], labels, temperature=10.0, seed=0)
    assert e["comparisons"] == [] and set(e["diversity"]) == {"pretrained"}
    d = e["diversity"]["pretrained"]
    assert d["pairwise_disagreement"] is None and d["brier"]["ambiguity"] == 0.0


# ----------------------------------------------------------------------------------------------
# Student's t and comparisons paired over seeds (distillation students)


def test_student_t_matches_its_closed_forms_and_the_table():
    from workers.stats.intervals import student_t_two_sided

    # df = 1 is the Cauchy distribution: P(|T| <= 1) = 2 atan(1) / pi = 1/2
    assert student_t_two_sided(1.0, 1) == pytest.approx(0.5, abs=1e-15)
    # df = 2: P(|T| <= t) = t / sqrt(2 + t^2); t = 2 gives 2 / sqrt(6)
    assert student_t_two_sided(2.0, 2) == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    # df = 3: P(|T| <= t) = (2/pi) (atan(t/sqrt 3) + sqrt(3) t / (3 + t^2)); t = 1
    assert student_t_two_sided(1.0, 3) == pytest.approx(2 / math.pi * (math.pi / 6 + math.sqrt(3) / 4), abs=1e-15)
    # the two-sided 95% points of the printed tables (df 1, 2, 4, 10, 30)
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert student_t_quantile_975(df) == pytest.approx(t, abs=5e-4)
    # p of t = 2.776 with df 4 is 0.05; large df tends to the normal's 0.0455 for t = 2
    assert student_t_p_value(2.7764451, 4) == pytest.approx(0.05, abs=1e-6)
    assert student_t_p_value(2.0, 2000) == pytest.approx(0.04564, abs=1e-4)


def test_mean_interval_is_the_t_interval_worked_by_hand():
    # values 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), half width 2.776445 * sqrt(2.5) / sqrt(5) = 1.963243
    summary = mean_interval([1, 2, 3, 4, 5])
    assert summary["mean"] == 3.0 and summary["std"] == pytest.approx(math.sqrt(2.5))
    assert summary["ci95"] == pytest.approx([3 - 1.963243, 3 + 1.963243], abs=1e-5)
    assert mean_interval([0.7])["ci95"] is None and mean_interval([0.7])["n"] == 1


def test_comparison_over_seeds_pairs_the_shared_seeds():
    # seeds 0..4 shared (seed 5 only in a: left out); differences 0.02, 0.03, 0.01, 0.04, 0.00
    a = {0: 0.52, 1: 0.63, 2: 0.41, 3: 0.74, 4: 0.60, 5: 0.99}
    b = {0: 0.50, 1: 0.60, 2: 0.40, 3: 0.70, 4: 0.60}
    c = compare_over_seeds(a, b)
    # mean 0.02, sd sqrt(0.001 / 4) = 0.0158114; t = 0.02 / (0.0158114 / sqrt 5) = 2.828427
    assert c["n"] == 5 and c["seeds"] == [0, 1, 2, 3, 4] and c["a_better_seeds"] == 4
    assert c["difference"] == pytest.approx(0.02) and c["t"] == pytest.approx(2.828427, abs=1e-5)
    assert c["p"] == pytest.approx(student_t_p_value(2.828427, 4), abs=1e-6)
    assert 0.04 < c["p"] < 0.05 and c["ci95"][0] > 0 and c["verdict"] == "a better"
    # swapped: the same p, the opposite verdict
    assert compare_over_seeds(b, a)["verdict"] == "b better"
    # Holm in a family of two: the smaller p doubles and the verdict follows the adjusted p
    weak = compare_over_seeds({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.52, 1: 0.55, 2: 0.41})
    family = adjust_seed_family([c, weak])
    assert family[0]["p"] == pytest.approx(2 * c["p"]) and family[0]["p_unadjusted"] == c["p"]
    assert family[0]["verdict"] == "inconclusive" and family[1]["verdict"] == "inconclusive"
    # one shared seed: no interval, no test
    lone = compare_over_seeds({0: 0.5}, {0: 0.4, 1: 0.3})
    assert lone["ci95"] is None and lone["p"] == 1.0 and lone["verdict"] == "inconclusive"
