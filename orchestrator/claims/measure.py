"""Each claim measured from its steps' result files: an effect per seed block with that block's paired test,
the effect's mean over blocks with its 95% t interval, and a verdict.

Differences are in accuracy points (percent). A block is one independent replicate (its own seeds for every
model); the interval over blocks is Student's t interval of the blocks' effects (orchestrator.sweep.report.
mean_interval), so it measures how much the effect moves when everything is trained again, which one test set
cannot show. The paired tests inside a block (exact McNemar and paired bootstrap on the same test examples,
workers.stats) say whether that block's difference is outside the noise of its test set.

Verdicts over blocks:
- a direction ("pre-trained beats scratch", "the gap grows"): holds when the interval lies above 0, does not
  hold when it lies below 0, otherwise inconclusive;
- equivalence ("the committee matches BERT-6", margin m points): holds when the interval lies within (-m, +m)
  or wholly above 0 (the committee matches or beats it), does not hold when it lies below -m, otherwise
  inconclusive (the interval is wider than the margin allows);
- latency ("lower latency"): holds when the interval of the committee's latency ratio to BERT-6 (geometric mean
  over blocks, t interval of the log ratio) lies below 1, does not hold when it lies above 1.
A part is inconclusive whatever its interval when, in some block, both models it compares are not above
chance (their 95% interval reaches the majority-class rate): two models that learned nothing agree without
saying anything about the claim.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from orchestrator.claims.plan import Step
from orchestrator.config.claims import ClaimsConfig
from orchestrator.run import evidence as ev
from orchestrator.run.plan import member_name
from orchestrator.run.prepare import load_cfg_task
from orchestrator.run.rundir import RunLayout
from orchestrator.sweep.report import mean_interval
from workers.committee.voting import aggregate
from workers.errors import CommitteeError
from workers.stats import accuracy_interval, chance_level, compare_paired, wilson_interval
from workers.storage import checkpoint
from workers.train.member import Role, load_result

POINTS = 100.0
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
# claim 5: (name, minuend, subtrahend) of distill.json's methods, per IPC and student seed
DISTILL_COMPARISONS = (("committee labels - best member's labels", "random_prior", "random_single"),
                       ("prior weights - equal weights", "random_prior", "random_equal"))


# ----------------------------------------------------------------------------------------------
# verdicts over blocks


def over_blocks(effects: list[float]) -> dict:
    """{"mean", "ci95" (95% t interval, None under two blocks), "n", "blocks": the effects}."""
    return {**mean_interval(effects), "blocks": list(effects)}


def direction_verdict(effect: dict) -> str:
    ci = effect.get("ci95")
    if ci is None:
        return INCONCLUSIVE
    return HOLDS if ci[0] > 0 else FAILS if ci[1] < 0 else INCONCLUSIVE


def equivalence_verdict(effect: dict, margin: float) -> str:
    ci = effect.get("ci95")
    if ci is None:
        return INCONCLUSIVE
    low, high = ci
    if low > -margin and (high < margin or low > 0):
        return HOLDS
    return FAILS if high < -margin else INCONCLUSIVE


def latency_verdict(ratio: dict) -> str:
    ci = ratio.get("ci95")
    if ci is None:
        return INCONCLUSIVE
    return HOLDS if ci[1] < 1 else FAILS if ci[0] > 1 else INCONCLUSIVE


def ratio_over_blocks(ratios: list[float]) -> dict:
    """A ratio's geometric mean over blocks with the 95% t interval of its logarithm, taken back: a ratio's
    interval stays positive and treats 0.5x and 2x alike."""
    logs = over_blocks([math.log(r) for r in ratios])
    return {"mean": math.exp(logs["mean"]) if logs["mean"] is not None else None,
            "ci95": None if logs["ci95"] is None else [math.exp(x) for x in logs["ci95"]], "n": logs["n"],
            "blocks": list(ratios), "method": "geometric mean, 95% t interval of the log ratio over blocks"}


def at_chance(ci95: list[float], chance_rate: float) -> bool:
    """Whether an accuracy's 95% interval (fractions) reaches down to the majority-class rate."""
    return ci95[0] <= chance_rate


def guarded(verdict: str, blocks: list[dict]) -> tuple[str, str | None]:
    """A part's verdict, inconclusive where in some block both compared models sit at chance: two models that
    learned nothing agree (or "match") without saying anything about the claim. Returns (verdict, note)."""
    idle = [b["block"] for b in blocks if b.get("both_at_chance")]
    if not idle:
        return verdict, None
    return INCONCLUSIVE, (f"both compared models are not above chance in block(s) {', '.join(map(str, idle))}: "
                          f"the comparison says nothing there")


def combined(verdicts: list[str]) -> str:
    """A claim made of parts: holds when every part holds, does not hold when any part does not."""
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else INCONCLUSIVE


def paired_block(comparison: dict, a_word: str, b_word: str) -> dict:
    """A block's paired test in points: difference, bootstrap interval, McNemar p, verdict in words."""
    return {"difference": POINTS * comparison["difference"], "ci95": [POINTS * x for x in comparison["ci95"]],
            "mcnemar_p": comparison["mcnemar_p"], "verdict": ev.verdict_text(comparison, a_word, b_word)}


# ----------------------------------------------------------------------------------------------
# reading a step's results


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CommitteeError(f"{path} is missing: the step that writes it did not finish; rerun the suite with "
                             f"--resume")
    return json.loads(path.read_text())


def correct_of(logits: np.ndarray, labels: np.ndarray, reported: float, where: str) -> np.ndarray:
    """Per-example correctness of logits [n, classes]; checked against the accuracy the run reported, so a test
    set read back in another order can never pair the wrong examples."""
    correct = np.asarray(logits).argmax(axis=1) == labels
    if len(correct) != len(labels) or abs(float(correct.mean()) - reported) > 1e-9:
        raise CommitteeError(f"{where}: its test logits do not reproduce its reported accuracy on the task's test "
                             f"labels ({float(correct.mean()):.4f} against {reported:.4f}); the data root changed "
                             f"since the run")
    return correct


def _member_results(run_dir: Path, cfg, role: Role, count: int) -> list:
    layout = RunLayout.of(cfg, run_dir)
    out = [load_result(layout.member_dir(member_name(role, i))) for i in range(count)]
    if any(r is None for r in out):
        raise CommitteeError(f"{run_dir}: a {role.value} member has no result.npz")
    return out


# ----------------------------------------------------------------------------------------------
# claims 1 and 4: the blocks' committee runs


def _run_steps(steps: list[Step], task: str) -> list[Step]:
    return sorted((s for s in steps if s.kind == "run" and s.task == task), key=lambda s: s.block)


def pretraining_claim(suite: ClaimsConfig, steps: list[Step], suite_dir: Path) -> dict:
    """Claim 1, per task: the pre-trained soft committee against the scratch soft committee (the run's own paired
    test); beside it each block's mean member-minus-twin gap and how many members beat their twin."""
    tasks = {}
    for task in [suite.experiment.task.name, *suite.other_tasks]:
        blocks = []
        for step in _run_steps(steps, task):
            report = read_json(suite_dir / step.id / "report.json")
            test = ev.find_comparison(report["statistics"], "committee/soft", "scratch_committee/soft")
            pre = {m["index"]: m for m in report["members"] if m["pretrained"]}
            twins = {m["index"]: m for m in report["members"] if not m["pretrained"]}
            member_tests = [ev.find_comparison(report["statistics"], pre[i]["name"], twins[i]["name"]) for i in pre]
            blocks.append({"block": step.block, "step": step.id,
                           "pretrained": POINTS * report["committee"]["soft"]["test_accuracy"],
                           "scratch": POINTS * report["scratch_committee"]["soft"]["test_accuracy"],
                           **paired_block(test, "pre-trained", "scratch"),
                           "member_gap_mean": POINTS * float(np.mean([pre[i]["test_accuracy"] - twins[i]["test_accuracy"]
                                                                      for i in pre])),
                           "members_better": sum(t["verdict"] == "a better" for t in member_tests),
                           "members_worse": sum(t["verdict"] == "b better" for t in member_tests),
                           "members": len(pre), "test_examples": report["statistics"]["test_examples"],
                           "both_at_chance": all(at_chance(report[key]["soft"]["test_accuracy_ci95"],
                                                           report["statistics"]["chance"]["rate"])
                                                 for key in ("committee", "scratch_committee"))})
        effect = over_blocks([b["difference"] for b in blocks])
        verdict, note = guarded(direction_verdict(effect), blocks)
        tasks[task] = {"blocks": blocks, "effect": effect, "verdict": verdict, "note": note,
                       "member_gap": over_blocks([b["member_gap_mean"] for b in blocks])}
    return {"claim": 1, "statement": "pre-trained BERT-1s beat non-pre-trained (scratch) ones, per task",
            "measure": "soft committee of the pre-trained members minus the soft committee of their scratch twins "
                       "(points, same test examples)",
            "tasks": tasks, "verdict": combined([t["verdict"] for t in tasks.values()])}


def matched_parameters_size(member_parameters: int, deep_parameters: int, members: int) -> int:
    """The largest committee whose parameters together do not exceed the deep model's (at most `members`)."""
    return min(members, deep_parameters // member_parameters)


def _deep_comparisons(step: Step, report: dict, run_dir: Path) -> dict:
    """A block's committee against its BERT-6 at matched tokens (the whole committee) and matched parameters (the
    first m members, m BERT-1s holding at most BERT-6's parameters), each a paired test on the same examples."""
    cfg = step.config
    k = cfg.committee.members
    member_parameters = report["members"][0]["parameters"]
    deep_parameters = report["deep"]["parameters"]
    m = matched_parameters_size(member_parameters, deep_parameters, k)
    chance = report["statistics"]["chance"]["rate"]
    deep_idle = at_chance(report["deep"]["test_accuracy_ci95"], chance)
    out = {"matched_tokens": {"members": k, **paired_block(
        ev.find_comparison(report["statistics"], "committee/soft", "deep"), "committee", "BERT-6"),
        "both_at_chance": deep_idle and at_chance(report["committee"]["soft"]["test_accuracy_ci95"], chance)}}
    if m >= 2:
        labels = load_cfg_task(cfg).test_labels
        members = _member_results(run_dir, cfg, Role.PRETRAINED, m)
        deep = load_result(RunLayout.of(cfg, run_dir).member_dir("deep"))
        votes = aggregate(np.stack([r.test_logits for r in members]), "soft").argmax(axis=1) == labels
        for r in members:
            correct_of(r.test_logits, labels, r.test_accuracy, f"{run_dir} {r.name}")
        deep_correct = correct_of(deep.test_logits, labels, deep.test_accuracy, f"{run_dir} deep")
        test = compare_paired(votes, deep_correct, cfg.seed, f"committee of {m} vs deep")
        out["matched_parameters"] = {"members": m, "committee_accuracy": POINTS * float(votes.mean()),
                                     **paired_block(test, "committee", "BERT-6"),
                                     "both_at_chance": deep_idle and at_chance(accuracy_interval(votes)["ci95"],
                                                                               chance)}
    else:
        out["matched_parameters"] = {"members": m, "difference": None,
                                     "note": f"a BERT-1 holds {member_parameters:,} parameters and BERT-6 "
                                             f"{deep_parameters:,}: no committee of two or more fits"}
    out["parameters"] = {"member": member_parameters, "deep": deep_parameters,
                         "committee": k * member_parameters}
    out["tokens"] = {"member": report["timing"]["pretrain_tokens_per_member"],
                     "deep": report["timing"]["pretrain_tokens_per_member"] * k}
    return out


def committee_vs_deep_claim(suite: ClaimsConfig, steps: list[Step], suite_dir: Path) -> dict:
    """Claim 4: accuracy per task at matched tokens and matched parameters (equivalence within the margin), and
    latency on each block's checkpoints (ratio below 1)."""
    margin = suite.claims.margin_points
    tasks, verdicts = {}, []
    for task in [suite.experiment.task.name, *suite.other_tasks]:
        blocks = []
        for step in _run_steps(steps, task):
            report = read_json(suite_dir / step.id / "report.json")
            blocks.append({"block": step.block, "step": step.id,
                           "committee": POINTS * report["committee"]["soft"]["test_accuracy"],
                           "deep": POINTS * report["deep"]["test_accuracy"],
                           **_deep_comparisons(step, report, suite_dir / step.id)})
        entry = {"blocks": blocks}
        for matching in ("matched_tokens", "matched_parameters"):
            diffs = [b[matching]["difference"] for b in blocks]
            if any(d is None for d in diffs):
                entry[matching] = {"effect": None, "verdict": INCONCLUSIVE, "note": blocks[0][matching]["note"]}
                continue
            effect = over_blocks(diffs)
            verdict, note = guarded(equivalence_verdict(effect, margin), [{"block": b["block"], **b[matching]}
                                                                          for b in blocks])
            entry[matching] = {"effect": effect, "verdict": verdict, "note": note,
                               "members": blocks[0][matching]["members"],
                               "blocks_within_margin": sum(-margin < b[matching]["ci95"][0]
                                                           and b[matching]["ci95"][1] < margin for b in blocks)}
            verdicts.append(entry[matching]["verdict"])
        tasks[task] = entry
    latency = latency_part(steps, suite_dir)
    verdicts.append(latency["verdict"])
    return {"claim": 4, "statement": "a soft committee of BERT-1s matches BERT-6 at lower latency",
            "measure": f"soft committee minus BERT-6 (points, same test examples); matches = the 95% interval over "
                       f"blocks lies within +-{margin:g} points or wholly above 0; latency = committee / BERT-6, "
                       f"median per request",
            "margin_points": margin, "tasks": tasks, "latency": latency, "verdict": combined(verdicts)}


def latency_part(steps: list[Step], suite_dir: Path) -> dict:
    blocks = [{"block": s.block, "step": s.id, **read_json(suite_dir / s.id / "latency.json")}
              for s in sorted((s for s in steps if s.kind == "latency"), key=lambda s: s.block)]
    batches = {}
    for batch in blocks[0]["batches"] if blocks else []:
        ratio = ratio_over_blocks([b["batches"][batch]["ratio_p50"] for b in blocks])
        batches[batch] = {"ratio": ratio, "verdict": latency_verdict(ratio)}
    return {"blocks": blocks, "batches": batches, "verdict": combined([b["verdict"] for b in batches.values()])}


# ----------------------------------------------------------------------------------------------
# claims 2 and 3: a sweep's lowest and highest level, paired within seed


def _trial_result(sweep_dir: Path, cfg, trial_id: str, role: Role, index: int):
    """A sweep trial's member (its pre-trained member or scratch twin) as it finished: logits and accuracies."""
    from orchestrator.sweep.driver import trial_root

    root = trial_root(RunLayout.of(cfg.experiment, sweep_dir), trial_id)
    result = load_result(checkpoint.join(root, member_name(role, index)))
    if result is None:
        raise CommitteeError(f"{sweep_dir}: trial {trial_id} has no {member_name(role, index)}/result.npz")
    return result


def sweep_change(step: Step, suite_dir: Path, order_key: str, claim: int, statement: str) -> dict:
    """How the member-minus-twin gap moves from the sweep's lowest to its highest level of `order_key` (a measured
    point figure: corpus_tokens, type_overlap), per seed (block). Within a seed both trials share the scratch
    twin (it does not depend on the corpus), so the change of the gap is the pre-trained members' difference on
    the same test examples, tested with McNemar and the paired bootstrap."""
    sweep_dir = suite_dir / step.id
    sweep = read_json(sweep_dir / "sweep.json")
    points = sorted(sweep["points"], key=lambda p: p[order_key])
    low, high = points[0], points[-1]
    done = {(r["point_id"], r["member_index"]): r for r in sweep["rows"] if r["status"] == "done"}
    labels = load_cfg_task(step.config.experiment).test_labels
    chance = chance_level(labels)["rate"]
    blocks = []
    for index in range(step.config.sweep.seeds):
        rows = done.get((low["point_id"], index)), done.get((high["point_id"], index))
        if None in rows:
            continue
        pre = [_trial_result(sweep_dir, step.config, r["trial_id"], Role.PRETRAINED, index) for r in rows]
        twins = [_trial_result(sweep_dir, step.config, r["trial_id"], Role.SCRATCH, index) for r in rows]
        correct = [correct_of(p.test_logits, labels, r["test_accuracy"], f"{sweep_dir} trial {r['trial_id']}")
                   for p, r in zip(pre, rows)]
        shared = bool(np.array_equal(twins[0].test_logits, twins[1].test_logits))
        block = {"block": index, "seed": rows[1]["seed"], "gap_low": POINTS * rows[0]["gap"],
                 "gap_high": POINTS * rows[1]["gap"], "change": POINTS * (rows[1]["gap"] - rows[0]["gap"]),
                 "shared_twin": shared,
                 "both_at_chance": all(at_chance(accuracy_interval(c)["ci95"], chance) for c in correct)}
        if shared:
            test = compare_paired(correct[1], correct[0], sweep["seed"], f"{step.id} seed {index}: high vs low")
            block.update({k: v for k, v in paired_block(test, "high", "low").items() if k != "difference"})
        blocks.append(block)
    effect = over_blocks([b["change"] for b in blocks])
    level = ("corpus_tokens", "pretrain_tokens", "pretrain_articles", "type_overlap", "occurrence_overlap",
             "token_type_overlap", "token_occurrence_overlap")
    levels = [{"point_id": p["point_id"], "values": p["values"], **{k: p.get(k) for k in level},
               "gap": _points_interval(p["gap"]), "pretrained": _points_interval(p["test_accuracy"]),
               "scratch": _points_interval(p["scratch_test_accuracy"]), "committee": _committee_mechanics(p)}
              for p in points]
    return {"claim": claim, "statement": statement, "step": step.id, "order": order_key,
            "measure": f"gap (pre-trained member minus its scratch twin, points) at the highest {order_key} minus "
                       f"the gap at the lowest, within each seed",
            "low": low["point_id"], "high": high["point_id"], "levels": levels, "blocks": blocks, "effect": effect,
            "correlations": sweep.get("correlations", {}), **dict(zip(("verdict", "note"),
                                                                       guarded(direction_verdict(effect), blocks)))}


def _points_interval(stat: dict) -> dict:
    ci = stat.get("ci95")
    return {"mean": None if stat.get("mean") is None else POINTS * stat["mean"],
            "ci95": None if ci is None else [POINTS * x for x in ci], "n": stat.get("n")}


def _committee_mechanics(point: dict) -> dict | None:
    """A point's pre-trained committee (its seeds' members): vote and mean member accuracy, the vote's gain, and
    the soft vote's Brier split (mean member Brier - ambiguity): why voting adds more at one budget."""
    committee = point.get("committee") or {}
    spread = ((committee.get("statistics") or {}).get("diversity") or {}).get("pretrained")
    if not spread:
        return None
    return {"members": spread["members"], "vote_accuracy": POINTS * spread["vote_accuracy"],
            "mean_member_accuracy": POINTS * spread["mean_member_accuracy"],
            "vote_gain": POINTS * (spread["vote_accuracy"] - spread["mean_member_accuracy"]),
            "mean_member_brier": spread["brier"]["mean_member"], "ambiguity": spread["brier"]["ambiguity"],
            "vote_brier": spread["brier"]["vote"], "pairwise_disagreement": spread["pairwise_disagreement"],
            "error_correlation": spread["error_correlation"]["mean"]}


# ----------------------------------------------------------------------------------------------
# claim 5: the distillation's students, paired by student seed


def distill_claim(steps: list[Step], suite_dir: Path) -> dict:
    """Claim 5 from each block's distill.json: per IPC, committee labels against the best member's and prior
    weights against equal weights, differences of students trained with the same seed on the same examples."""
    parts: dict[tuple[str, int], list[dict]] = {}
    for step in sorted((s for s in steps if s.kind == "distill"), key=lambda s: s.block):
        report = read_json(suite_dir / step.id / "distill.json")
        tested = read_json(suite_dir / step.source / "report.json")["statistics"]  # the same task split
        n, chance = tested["test_examples"], tested["chance"]["rate"]
        accuracy = {(r["method"], r["ipc"], r["seed"]): r["test_accuracy"] for r in report["rows"]}
        for name, a, b in DISTILL_COMPARISONS:
            for ipc in report["settings"]["ipc"]:
                seeds = sorted(s for (m, i, s) in accuracy if m == a and i == ipc and (b, ipc, s) in accuracy)
                diffs = [POINTS * (accuracy[(a, ipc, s)] - accuracy[(b, ipc, s)]) for s in seeds]
                means = [float(np.mean([accuracy[(m, ipc, s)] for s in seeds])) for m in (a, b)]
                idle = all(at_chance(list(wilson_interval(round(x * n), n)), chance) for x in means)
                parts.setdefault((name, ipc), []).append({"block": step.block, "step": step.id,
                                                          "students": len(diffs), "by_seed": diffs,
                                                          "a_accuracy": POINTS * means[0],
                                                          "b_accuracy": POINTS * means[1],
                                                          **_within_block(diffs), "both_at_chance": idle})
    comparisons = []
    for (name, ipc), blocks in parts.items():
        effect = over_blocks([b["difference"] for b in blocks])
        a, b = next((a, b) for n, a, b in DISTILL_COMPARISONS if n == name)
        verdict, note = guarded(direction_verdict(effect), blocks)
        comparisons.append({"comparison": name, "a": a, "b": b, "ipc": ipc, "blocks": blocks, "effect": effect,
                            "verdict": verdict, "note": note})
    return {"claim": 5, "statement": "CV-DD: committee soft labels beat the best single member's, and prior weights "
                                     "beat equal weights",
            "measure": "mean test accuracy of students trained on the distilled set (a) minus (b), points; students "
                       "paired by seed (same examples, same initialisation)",
            "comparisons": comparisons, "verdict": combined([c["verdict"] for c in comparisons])}


def _within_block(diffs: list[float]) -> dict:
    """A block's paired test over its student seeds: mean difference and its 95% t interval (one test set, so no
    per-example test: distill.json keeps each student's accuracy, not its predictions)."""
    stat = mean_interval(diffs)
    ci = stat["ci95"]
    verdict = ("inconclusive" if ci is None or ci[0] <= 0 <= ci[1] else "a better" if ci[0] > 0 else "b better")
    return {"difference": stat["mean"], "ci95": ci, "verdict": verdict}


def measure_all(suite: ClaimsConfig, steps: list[Step], suite_dir: Path) -> list[dict]:
    """Every claim, in the papers' order."""
    by_id = {s.id: s for s in steps}
    return [pretraining_claim(suite, steps, suite_dir),
            sweep_change(by_id["data"], suite_dir, "corpus_tokens", 2,
                         "the gap between pre-trained and scratch grows with the pre-training data"),
            sweep_change(by_id["overlap"], suite_dir, "type_overlap", 3,
                         "the gap grows with the token overlap of corpus and task, at a fixed corpus size"),
            committee_vs_deep_claim(suite, steps, suite_dir),
            distill_claim(steps, suite_dir)]
