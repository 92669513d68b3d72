"""A sweep's report: sweep.csv / sweep.json (one row per trial), sweep.md (points with their mean gap and
95% interval over seeds, paired comparisons within seeds, Spearman correlations, committees), gap_vs_size.png
and gap_vs_overlap.png.

Statistics are plain numpy: a t interval for the mean gap over a point's seeds, a paired t interval for
moving one space key with the seed and the other keys fixed, Spearman's rank correlation (ties share their
mean rank) of the trials' gaps with corpus size and with overlap, and a two-sided permutation p-value for it
(seeded, so a report is reproducible).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from orchestrator.run import evidence as ev
from orchestrator.run import rundir
from orchestrator.run.plan import member_name
from workers.stats import wilson_interval
from workers.train.member import Role

# two-sided 95% critical values of Student's t for 1..30 degrees of freedom (beyond: the normal 1.96)
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
PERMUTATIONS = 5000
ROW_FIELDS = ("trial_id", "point_id", "member_index", "seed", "status", "corpus_source", "pretrain_articles",
              "corpus_tokens", "pretrain_tokens", "pretrain_steps", "type_overlap", "occurrence_overlap",
              "token_type_overlap", "token_occurrence_overlap",
              "val_accuracy", "scratch_val_accuracy", "val_gap", "test_accuracy", "scratch_test_accuracy", "gap",
              "scratch_reused", "iterations", "error")


def mean_interval(values: list[float]) -> dict:
    """Mean and 95% t interval of `values` (the interval is None for fewer than two values)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "ci95": None, "n": 1}
    df = len(x) - 1
    half = (T_975[df - 1] if df <= len(T_975) else 1.96) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(len(x))}


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranked = np.empty(len(x), dtype=np.float64)
    ranked[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranked[tied] = ranked[tied].mean()
    return ranked


AXIS_SPREAD = 1e-3  # an axis whose values lie within 0.1% of its largest does not vary (see spearman)


def spearman(x: list[float], y: list[float], seed: int = 0) -> dict:
    """Spearman's rho of x and y with a two-sided permutation p-value; rho None when y is constant or x does not
    vary: its values within AXIS_SPREAD of its largest. Corpora of one size differ by a few tokens (the last
    article is cut at a word boundary) and a tokens budget by a few hundred real tokens in 16 M: ranking trials
    by such differences would report a correlation with noise."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) <= AXIS_SPREAD * np.abs(x).max() or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": int(len(x))}
    rx, ry = ranks(x), ranks(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    rng = np.random.default_rng(seed)
    shuffled = np.array([np.corrcoef(rx, rng.permutation(ry))[0, 1] for _ in range(PERMUTATIONS)])
    p = float((np.sum(np.abs(shuffled) >= abs(rho) - 1e-12) + 1) / (PERMUTATIONS + 1))
    return {"rho": rho, "p": p, "n": int(len(x))}


# ----------------------------------------------------------------------------------------------
# the report's content


def point_summary(point: dict, rows: list[dict], committee: dict | None) -> dict:
    """A point's row of sweep.md: its values, corpus, mean accuracies and gap with intervals, committees."""
    done = [r for r in rows if r["status"] == "done"]
    first = rows[0]
    out = {"point_id": point["point_id"], "values": point["values"], "trials": len(rows), "seeds_done": len(done),
           "corpus_tokens": first["corpus_tokens"], "pretrain_articles": first["pretrain_articles"],
           "pretrain_tokens": done[0]["pretrain_tokens"] if done else None,
           "type_overlap": first["type_overlap"], "occurrence_overlap": first["occurrence_overlap"],
           "token_type_overlap": first.get("token_type_overlap"),
           "token_occurrence_overlap": first.get("token_occurrence_overlap"),
           "gap": mean_interval([r["gap"] for r in done]),
           "val_gap": mean_interval([r["val_gap"] for r in done]),
           "test_accuracy": mean_interval([r["test_accuracy"] for r in done]),
           "scratch_test_accuracy": mean_interval([r["scratch_test_accuracy"] for r in done])}
    out["committee"] = committee
    return out


def committee_summary(votes: dict, evidence: dict | None = None, trials: dict | None = None) -> dict:
    """Soft-vote test accuracy of both committees, their gap, and the curves over committee size; with the
    point's `evidence` (orchestrator.run.evidence) also each soft vote's 95% interval, their paired comparison
    and the whole evidence (`statistics`); `trials`: member index -> the trial whose members the committee holds."""
    pre, scratch = votes.get("pretrained"), votes.get("scratch")
    pre_acc = pre["rules"]["soft"]["test_accuracy"] if pre else None
    scratch_acc = scratch["rules"]["soft"]["test_accuracy"] if scratch else None
    gap = None if pre_acc is None or scratch_acc is None else pre_acc - scratch_acc
    out = {"members": len(pre["curve"]) if pre else 0, "pretrained_accuracy": pre_acc,
           "scratch_accuracy": scratch_acc, "gap": gap,
           "pretrained_curve": pre["curve"] if pre else [], "scratch_curve": scratch["curve"] if scratch else []}
    if evidence is not None:
        models = evidence["models"]
        out.update({"pretrained_ci95": models.get("committee/soft", {}).get("ci95"),
                    "scratch_ci95": models.get("scratch_committee/soft", {}).get("ci95"),
                    "comparison": ev.find_comparison(evidence, "committee/soft", "scratch_committee/soft"),
                    "trials": {str(i): t for i, t in sorted((trials or {}).items())}, "statistics": evidence})
    return out


def add_trial_evidence(rows: list[dict], points: list[dict]) -> None:
    """Each finished trial's test accuracies with their 95% Wilson intervals over the point's test examples and,
    for the trial whose members its point's committee holds, the paired test of the member against its scratch
    twin on the same examples (`twin_test`: difference, bootstrap interval, McNemar p Holm-adjusted over the
    point's seeds, verdict)."""
    by_point = {p["point_id"]: p for p in points}
    for row in rows:
        committee = (by_point.get(row["point_id"]) or {}).get("committee") or {}
        stats = committee.get("statistics")
        if row["status"] != "done" or stats is None:
            continue
        n = stats["test_examples"]
        for key in ("test_accuracy", "scratch_test_accuracy"):
            row[f"{key}_ci95"] = list(wilson_interval(round(row[key] * n), n))
        if committee["trials"].get(str(row["member_index"])) == row["trial_id"]:
            index = row["member_index"]
            test = ev.find_comparison(stats, member_name(Role.PRETRAINED, index), member_name(Role.SCRATCH, index))
            if test is not None:
                row["twin_test"] = {k: test[k] for k in ("difference", "ci95", "mcnemar_p", "p", "verdict")}


CORRELATION_AXES = ("corpus_tokens", "pretrain_tokens", "type_overlap", "occurrence_overlap", "token_type_overlap",
                    "token_occurrence_overlap")


def correlations(rows: list[dict], seed: int) -> dict:
    done = [r for r in rows if r["status"] == "done"]
    gaps = [r["gap"] for r in done]
    return {axis: spearman([r[axis] for r in done], gaps, seed) for axis in CORRELATION_AXES
            if all(r.get(axis) is not None for r in done)}


PAIRED_ALL_VALUES = 4  # a key with at most this many values: every pair of them; more: neighbours in sorted order


def _sorted_values(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:  # values of mixed types: keep the order the trials met them
        return values


def paired_effects(rows: list[dict], space_keys: list[str]) -> list[dict]:
    """What moving one space key from value a to value b does to the gap, within blocks: the trials of one seed
    (member index) whose other keys' values agree. In a block the two trials share the seed's data order and,
    unless the key changes what the scratch twin learns (fine-tuning settings, task data), the very same twin,
    so the twin's seed-to-seed variance, which dominates a point's interval, cancels. One entry per key and
    pair of its values with at least one block where both trials finished: the blocks' differences (gap at b
    minus gap at a), their mean with a 95% t interval, and how many favour b. A random or Bayesian search
    rarely repeats the other keys' values, so it gives few or no blocks."""
    done = [r for r in rows if r["status"] == "done" and r.get("gap") is not None]
    out = []
    for key in space_keys:
        values = _sorted_values(list({json.dumps(r["values"][key]): r["values"][key] for r in done}.values()))
        if len(values) < 2:
            continue
        if len(values) <= PAIRED_ALL_VALUES:
            pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]
        else:
            pairs = list(zip(values, values[1:]))
        blocks: dict[str, dict[str, float]] = {}
        for r in done:
            others = {k: v for k, v in r["values"].items() if k != key}
            block = json.dumps([r["member_index"], others], sort_keys=True)
            blocks.setdefault(block, {})[json.dumps(r["values"][key])] = r["gap"]
        for a, b in pairs:
            ka, kb = json.dumps(a), json.dumps(b)
            diffs = [gaps[kb] - gaps[ka] for gaps in blocks.values() if ka in gaps and kb in gaps]
            if not diffs:
                continue
            out.append({"key": key, "a": a, "b": b, "blocks": len(diffs), "diffs": diffs,
                        "delta": mean_interval(diffs), "b_better": sum(d > 0 for d in diffs),
                        "a_better": sum(d < 0 for d in diffs)})
    return out


def twin_counts(rows: list[dict]) -> dict:
    """How many scratch twins the trials trained and how many they reused (trials that reported neither, e.g.
    failed before their twin was ready, are not counted). `distinct`: different twins among those trained
    (two trials that trained the same twin at once count once)."""
    known = [r for r in rows if r.get("scratch_reused") is not None]
    trained = [r for r in known if not r["scratch_reused"]]
    return {"trials": len(known), "trained": len(trained), "reused": len(known) - len(trained),
            "distinct": len({r.get("twin_key") or r["trial_id"] for r in trained})}


def build(header: dict, rows: list[dict], points: list[dict]) -> dict:
    """sweep.json's content. `header`: name, search, metric, ... (see orchestrator.sweep.driver)."""
    return {**header, "rows": rows, "points": points, "correlations": correlations(rows, header.get("seed", 0)),
            "paired": paired_effects(rows, header.get("space_keys", [])), "twins": twin_counts(rows)}


# ----------------------------------------------------------------------------------------------
# files


def write(run_dir: Path, report: dict, command: str) -> list[Path]:
    """sweep.csv, sweep.json, the two plots and sweep.md into `run_dir`; returns the paths."""
    run_dir = Path(run_dir)
    paths = [run_dir / "sweep.csv", run_dir / "sweep.json", run_dir / "gap_vs_size.png",
             run_dir / "gap_vs_overlap.png", run_dir / "sweep.md"]
    write_csv(paths[0], report["rows"], report["space_keys"])
    paths[1].write_text(json.dumps(report, indent=2) + "\n")
    plot_gap(report["points"], report["rows"], "corpus_tokens", "pre-training corpus (tokens)", paths[2], log_x=True)
    plot_gap(report["points"], report["rows"], "occurrence_overlap",
             "occurrence overlap with the task's training words (measured)", paths[3])
    paths[4].write_text(markdown(report, command, run_dir))
    return paths


def write_csv(path: Path, rows: list[dict], space_keys: list[str]) -> None:
    fields = list(ROW_FIELDS[:3]) + list(space_keys) + list(ROW_FIELDS[3:])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **row["values"]})


def plot_gap(points: list[dict], rows: list[dict], axis: str, label: str, path: Path, log_x: bool = False) -> None:
    """Mean gap per point (95% interval over seeds) and each trial's gap against `axis`, plus committee gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    done = [r for r in rows if r["status"] == "done"]
    ax.scatter([r[axis] for r in done], [100 * r["gap"] for r in done], s=12, alpha=0.35, color="gray",
               label="trials (one seed each)")
    shown = [p for p in points if p["gap"]["mean"] is not None]
    xs = [p[axis] for p in shown]
    means = [100 * p["gap"]["mean"] for p in shown]
    errs = [[100 * (p["gap"]["mean"] - p["gap"]["ci95"][0]) if p["gap"]["ci95"] else 0 for p in shown],
            [100 * (p["gap"]["ci95"][1] - p["gap"]["mean"]) if p["gap"]["ci95"] else 0 for p in shown]]
    ax.errorbar(xs, means, yerr=errs, fmt="o", capsize=4, color="C0", label="point mean, 95% interval over seeds")
    committee = [(p[axis], 100 * p["committee"]["gap"]) for p in shown if p["committee"] and p["committee"]["gap"] is not None]
    if committee:
        ax.scatter(*zip(*committee), marker="s", color="C1", label="committee gap (soft vote over seeds)")
    ax.axhline(0, color="k", linewidth=0.8)
    if log_x and xs and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("pre-trained minus scratch test accuracy (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _signed(x) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def _gap(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["ci95"] is None:
        return f"{100 * stat['mean']:+.1f}"
    lo, hi = stat["ci95"]
    return f"{100 * stat['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _corr(c: dict) -> str:
    if c["rho"] is None:
        return f"– (n = {c['n']}: too few trials, or the axis does not vary)"
    return f"{c['rho']:+.2f} (permutation p = {c['p']:.3f}, n = {c['n']} trials)"


def _verdict_counts(comparisons: list[dict]) -> str:
    """'1 / 0 / 2': members better / twins better / inconclusive."""
    counts = {v: sum(c["verdict"] == v for c in comparisons) for v in ("a better", "b better", "inconclusive")}
    return f"{counts['a better']} / {counts['b better']} / {counts['inconclusive']}"


def tested_lines(points: list[dict]) -> list[str]:
    """sweep.md's section on the test examples: each point's committees with 95% intervals, their paired test,
    the members against their twins, and the warnings of models not above chance (nothing without evidence)."""
    tested = [p for p in points if (p["committee"] or {}).get("statistics")]
    if not tested:
        return []
    lines = ["## Committees on the test examples (paired)", "",
             "Each point's committees hold its seeds' members (soft vote). Intervals are over the test examples "
             "(95% Wilson); the committees and each member and its twin are compared on the same examples (exact "
             "McNemar, paired bootstrap; members Holm-adjusted over the point's seeds).", "",
             "| point | pre-trained committee [95% CI] | scratch committee [95% CI] | pre − scratch (points) [95% CI] | "
             "McNemar p | verdict | members vs twins: better / worse / inconclusive |", "|---|---|---|---|---|---|---|"]
    warnings = []
    for p in tested:
        c, stats = p["committee"], p["committee"]["statistics"]
        values = ", ".join(f"{k}={v}" for k, v in p["values"].items()) or p["point_id"]
        twins = [t for t in stats["comparisons"] if t["family"] == "members vs scratch twins"]
        lines.append(f"| {values} | {ev.accuracy_cell(c['pretrained_accuracy'], c.get('pretrained_ci95'))} | "
                     f"{ev.accuracy_cell(c['scratch_accuracy'], c.get('scratch_ci95'))} | "
                     f"{ev.difference_cell(c.get('comparison'))} | {ev.p_text((c.get('comparison') or {}).get('p'))} | "
                     f"{ev.verdict_text(c.get('comparison'), 'pre-trained', 'scratch')} | {_verdict_counts(twins)} |")
        warnings += [f"- **not above chance** at {values}: {w['message']}" for w in stats["warnings"]]
    lines.append("")
    if warnings:
        lines += ["## Warnings", "", *warnings, ""]
    return lines


def paired_lines(paired: list[dict] | None) -> list[str]:
    """sweep.md's section of paired comparisons (nothing when no key has a block with both trials done)."""
    if not paired:
        return []
    lines = ["## Paired comparisons (within seed)", "",
             "Each row moves one key from a to b and keeps the seed and every other key fixed (a block), so the "
             "seed's scratch twin, which both trials share unless the key changes fine-tuning, cancels. "
             "Δ gap = gap at b minus gap at a, mean over blocks with a 95% t interval; blocks of one seed under "
             "different other keys are not independent, so read the interval as a guide.", "",
             "| key | a → b | blocks | Δ gap [95% CI] | b better / a better |", "|---|---|---|---|---|"]
    for e in paired:
        lines.append(f"| `{e['key']}` | {e['a']} → {e['b']} | {e['blocks']} | {_gap(e['delta'])} | "
                     f"{e['b_better']} / {e['a_better']} |")
    return lines + [""]


def twin_line(twins: dict | None) -> str:
    """One sentence: how many scratch twins were trained for how many trials."""
    if not twins or not twins["trials"]:
        return "No trial reported its scratch twin."
    distinct = "" if twins["distinct"] == twins["trained"] else f" ({twins['distinct']} distinct)"
    return (f"Scratch twins: {twins['trained']} trained{distinct} for {twins['trials']} trial(s); "
            f"{twins['reused']} trial(s) reused the twin of a trial with the same fine-tuning settings, seed and "
            f"task data (docs/sweep.md).")


def chance_line(r: dict) -> str:
    """The points left out of the selection, each with the bar it failed: one bar when they share it (one
    task), else each point's own (its task's validation labels set its chance level)."""
    left_out = r["best_at_chance"]
    levels = {point_id: r["chance"][point_id] for point_id in left_out}
    head = "Left out of the selection, their models no better than chance"

    def bar(c: dict) -> str:
        return (f"mean validation accuracy at most {_pct(c['bar'])}%: the most frequent class's {_pct(c['chance'])}% "
                f"plus two standard errors on {c['val_examples']} examples")

    first = levels[left_out[0]]
    if all(c == first for c in levels.values()):
        return f"{head} ({bar(first)}): {', '.join(left_out)}."
    return f"{head}: " + "; ".join(f"{point_id} ({bar(levels[point_id])})" for point_id in left_out) + "."


def _tokenizer_words(r: dict) -> str:
    vocabulary = r.get("vocabulary") or ""
    if vocabulary.startswith("fixed"):
        return f"one fixed vocabulary at every point ({vocabulary.split(': ', 1)[-1]}), on which token overlap is measured"
    return "one tokenizer per vocabulary size, learned on a reference corpus every point shares"


def markdown(r: dict, command: str, run_dir: Path) -> str:
    lines = [f"# Sweep report: {r['name']}", "",
             f"Task **{r['task']}**; search **{r['search']}** over {', '.join(f'`{k}`' for k in r['space_keys'])}, "
             f"{r['seeds']} seed(s) per point (member i and its scratch twin share seed {r['base_seed']} + i); "
             f"pre-training budget **{r['budget']}**; corpus source **{r['corpus_source']}**; {_tokenizer_words(r)}. "
             f"{len(r['rows'])} trial(s): {r['status_counts']}. Gap = pre-trained minus scratch accuracy on the "
             f"test set, in points; overlap measured on the task's training text (docs/sweep.md defines it).", "",
             twin_line(r.get("twins")), "",
             "## Points", "",
             "| point | corpus tokens | articles | type overlap | occ. overlap | token occ. overlap | seeds done | "
             "pre-trained | scratch | gap [95% CI] | committee pre / scratch (gap) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["points"]:
        values = ", ".join(f"{k}={v}" for k, v in p["values"].items())
        c = p["committee"]
        committee = "–" if not c else (f"{_pct(c['pretrained_accuracy'])} / {_pct(c['scratch_accuracy'])} "
                                       f"({_signed(c['gap'])})")
        lines.append(f"| {values} | {p['corpus_tokens']:,} | {p['pretrain_articles']} | {_pct(p['type_overlap'])}% | "
                     f"{_pct(p['occurrence_overlap'])}% | {_pct(p.get('token_occurrence_overlap'))}% | "
                     f"{p['seeds_done']}/{p['trials']} | "
                     f"{_pct(p['test_accuracy']['mean'])} | {_pct(p['scratch_test_accuracy']['mean'])} | "
                     f"{_gap(p['gap'])} | {committee} |")
    lines += [""] + tested_lines(r["points"]) + paired_lines(r.get("paired"))
    corr = r["correlations"]
    lines += ["## Does the gap grow with size and overlap?", "",
              "Spearman's rank correlation of the trials' gaps with:", "",
              f"- corpus size (tokens): {_corr(corr['corpus_tokens'])}",
              f"- pre-training tokens seen: {_corr(corr['pretrain_tokens'])}",
              f"- type overlap (words): {_corr(corr['type_overlap'])}",
              f"- occurrence overlap (words): {_corr(corr['occurrence_overlap'])}",
              *[f"- token {kind} overlap (vocabulary {r.get('vocabulary') or 'of the sweep'}): "
                f"{_corr(corr[f'token_{kind}_overlap'])}" for kind in ("type", "occurrence")
                if f"token_{kind}_overlap" in corr], "",
              "![gap against size](gap_vs_size.png)", "", "![gap against overlap](gap_vs_overlap.png)", ""]
    if "best" in r:
        lines += ["## Best point (validation only)", ""]
        if r["best"]:
            b = r["best"]
            lines += [f"{', '.join(f'`{k}={v}`' for k, v in b['values'].items())}: mean {r['metric']} "
                      f"{b['metric_mean']:+.4f} over {b['seeds_done']} seed(s); `best_config.yaml` runs it with "
                      f"`committee run`."]
        else:
            lines += ["No point's model learned the task above chance on validation, so no `best_config.yaml`."]
        if r.get("best_at_chance"):
            lines += ["", chance_line(r)]
        lines += [""]
    first = next((p["committee"]["statistics"] for p in r["points"] if (p["committee"] or {}).get("statistics")), None)
    lines += ev.methods_lines(first)
    lines += ["## Reproduce", "", "```", *rundir.RunDir(Path(run_dir), "sweep").reproduce_lines(command), "```", ""]
    return "\n".join(lines)
