"""What a committee run's numbers can carry: intervals, paired tests, chance checks, diversity, calibration.

`committee_evidence` takes the members' logits on the validation and test sets (the same arrays the
voting actor votes) and returns, for every member, the deep model and every vote of both committees:
test accuracy with its 95% Wilson interval and its calibration; the paired comparisons a reader of the
papers asks for (pre-trained against scratch committee, committee against the deep model, each member
against its scratch twin), each with an exact McNemar test and a paired-bootstrap interval of the
difference; a warning for each model not above chance; and each committee's diversity. The statistics
themselves live in `workers.stats`; this module only knows which models to compare.

Model names: members and the deep model by their own name (member-00, scratch-00, deep), votes as
"<committee key>/<rule>" with the report's keys: committee/soft (pre-trained), scratch_committee/soft.
Families of comparisons (Holm's adjustment runs within each): the soft vote's comparisons are the papers'
claims and stand alone; the other rules' comparisons and the members' form families of their own.
"""

from __future__ import annotations

import numpy as np

from workers.committee.voting import RULES, accuracy, aggregate, prior_weights, softmax
from workers.stats import accuracy_interval, adjust_family, calibration, chance_level, compare_paired, diversity
from workers.stats.calibration import CALIBRATION_METHOD
from workers.stats.diversity import DIVERSITY_METHOD
from workers.stats.intervals import CHANCE_METHOD, INTERVAL_METHOD, above_chance
from workers.stats.paired import BOOTSTRAP_METHOD, PAIRED_TEST_METHOD, VERDICT_METHOD

ARMS = {"pretrained": "committee", "scratch": "scratch_committee"}  # role -> the report's key of its committee
PRIMARY_RULE = "soft"  # the paper's soft committee


def vote_name(arm: str, rule: str) -> str:
    return f"{ARMS[arm]}/{rule}"


def vote_probabilities(test_logits: np.ndarray, rule: str, weights: np.ndarray) -> np.ndarray | None:
    """Class probabilities of a vote [examples, classes]: the soft vote's mean probability, the softmax of the
    (weighted) mean logit; None for the hard vote, whose vote shares are no probabilities (a class no member
    chose would get probability 0)."""
    if rule == "hard":
        return None
    scores = aggregate(test_logits, rule, weights)
    return scores if rule == "soft" else softmax(scores)


def _model(scores: np.ndarray, probs: np.ndarray | None, labels: np.ndarray, role: str) -> dict:
    interval = accuracy_interval(scores.argmax(axis=1) == labels)
    return {"role": role, "test_accuracy": interval["accuracy"], "ci95": interval["ci95"],
            "correct": interval["correct"], "calibration": None if probs is None else calibration(probs, labels)}


def _arm_models(arm: str, group: list[dict], val_labels, test_labels, temperature: float) -> tuple[dict, dict]:
    """(models: every member and every vote of one committee, correctness by model name)."""
    test_logits = np.stack([m["test_logits"] for m in group]).astype(np.float64)  # [members, examples, classes]
    weights = prior_weights(np.array([accuracy(m["val_logits"], val_labels) for m in group]), temperature)
    models, correct = {}, {}
    for m, logits in zip(group, test_logits):
        models[m["name"]] = _model(logits, softmax(logits), test_labels, arm)
        correct[m["name"]] = logits.argmax(axis=1) == test_labels
    for rule in RULES:
        scores = aggregate(test_logits, rule, weights)
        name = vote_name(arm, rule)
        models[name] = _model(scores, vote_probabilities(test_logits, rule, weights), test_labels, f"{arm} committee")
        correct[name] = scores.argmax(axis=1) == test_labels
    return models, correct


def _family(name: str, pairs: list[tuple[str, str]], correct: dict, seed: int) -> list[dict]:
    compared = [{"family": name, "a": a, "b": b, **compare_paired(correct[a], correct[b], seed, f"{a} vs {b}")}
                for a, b in pairs if a in correct and b in correct]
    return adjust_family(compared) if compared else []


def comparisons(members: list[dict], correct: dict, deep: str | None, seed: int) -> list[dict]:
    """The paired comparisons, family by family (see the module's docstring); `deep`: the deep model's name."""
    others = [rule for rule in RULES if rule != PRIMARY_RULE]
    pre, scratch = vote_name("pretrained", PRIMARY_RULE), vote_name("scratch", PRIMARY_RULE)
    out = _family("pre-trained vs scratch committee, soft vote", [(pre, scratch)], correct, seed)
    out += _family("pre-trained vs scratch committee, other votes",
                   [(vote_name("pretrained", r), vote_name("scratch", r)) for r in others], correct, seed)
    if deep is not None:
        out += _family("committee vs deep model, soft vote", [(pre, deep)], correct, seed)
        out += _family("committee vs deep model, other votes",
                       [(vote_name("pretrained", r), deep) for r in others], correct, seed)
    twins = {m["index"]: m["name"] for m in members if m["role"] == "scratch"}
    pairs = [(m["name"], twins[m["index"]]) for m in members if m["role"] == "pretrained" and m["index"] in twins]
    out += _family("members vs scratch twins", pairs, correct, seed)
    return out


def chance_warnings(models: dict, chance: dict) -> list[dict]:
    """One warning per model whose 95% interval does not lie above the majority-class rate."""
    out = []
    for name, m in models.items():
        if not above_chance({"ci95": m["ci95"]}, chance["rate"]):
            lo, hi = m["ci95"]
            out.append({"model": name, "test_accuracy": m["test_accuracy"], "ci95": m["ci95"], "chance": chance["rate"],
                        "message": f"{name}: test accuracy {100 * m['test_accuracy']:.1f}% (95% CI {100 * lo:.1f}-"
                                   f"{100 * hi:.1f}) is not above chance ({100 * chance['rate']:.1f}%, the "
                                   f"majority-class rate of the test split)"})
    return out


def methods(seed: int) -> dict:
    """What each statistic is, in words (the reports print them)."""
    return {"interval": INTERVAL_METHOD, "paired_test": PAIRED_TEST_METHOD,
            "difference_interval": f"{BOOTSTRAP_METHOD} (base seed {seed} and the comparison's name)",
            "verdict": VERDICT_METHOD, "chance": CHANCE_METHOD, "calibration": CALIBRATION_METHOD,
            "diversity": DIVERSITY_METHOD}


def committee_evidence(members: list[dict], val_labels, test_labels, temperature: float, seed: int) -> dict:
    """The evidence of one run (or one sweep point).

    `members`: [{"name", "role" ("pretrained", "scratch" or "deep"), "index", "val_logits" [n_val, classes],
    "test_logits" [n_test, classes]}]; `temperature`: the weighted vote's T (as the voting actor uses it);
    `seed`: seeds the paired bootstraps. Returns {"methods", "test_examples", "chance", "models" (name ->
    {"role", "test_accuracy", "ci95", "correct", "calibration"}), "comparisons", "warnings", "diversity"
    (arm -> workers.stats.diversity)}."""
    val_labels, test_labels = np.asarray(val_labels), np.asarray(test_labels)
    models, correct, spread = {}, {}, {}
    for arm in ARMS:
        group = [m for m in members if m["role"] == arm]
        if group:
            arm_models, arm_correct = _arm_models(arm, group, val_labels, test_labels, temperature)
            models.update(arm_models)
            correct.update(arm_correct)
            spread[arm] = diversity(np.stack([softmax(np.asarray(m["test_logits"], dtype=np.float64)) for m in group]),
                                    test_labels)
    deep = next((m for m in members if m["role"] == "deep"), None)
    if deep is not None:
        logits = np.asarray(deep["test_logits"], dtype=np.float64)
        models[deep["name"]] = _model(logits, softmax(logits), test_labels, "deep")
        correct[deep["name"]] = logits.argmax(axis=1) == test_labels
    chance = chance_level(test_labels)
    return {"methods": methods(seed), "test_examples": int(len(test_labels)), "chance": chance, "models": models,
            "comparisons": comparisons(members, correct, None if deep is None else deep["name"], seed),
            "warnings": chance_warnings(models, chance), "diversity": spread}
