"""The run's report: report.json (machine-readable), report.md (tables, commands) and committee_curve.png."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.run import evidence as ev
from orchestrator.run import rundir
from workers.committee.voting import RULES
from workers.train.member import Role

EVIDENCE_KEYS = ("methods", "test_examples", "chance", "comparisons", "warnings", "diversity")


def _with_evidence(entry: dict, name: str, evidence: dict | None) -> dict:
    """A report entry (a member, a vote, the deep model) with its 95% interval and calibration, when known."""
    model = (evidence or {}).get("models", {}).get(name)
    if model is None:
        return entry
    return {**entry, "test_accuracy_ci95": model["ci95"], "calibration": model["calibration"]}


def _rules(vote: dict | None, key: str, evidence: dict | None = None) -> dict | None:
    """Each rule's test accuracy (with interval and calibration) of the committee reported under `key`."""
    if vote is None:
        return None
    return {rule: _with_evidence(vote["rules"][rule], f"{key}/{rule}", evidence) for rule in RULES}


def statistics_section(evidence: dict | None, seed: int) -> dict | None:
    """report.json's `statistics`: how the numbers were tested, the chance level, the paired comparisons, the
    warnings and each committee's diversity (per-model intervals and calibration sit with each model)."""
    if evidence is None:
        return None
    return {"seed": seed, **{key: evidence[key] for key in EVIDENCE_KEYS}}


def precision_summary(cfg, results: dict) -> dict:
    """Which precision each phase ran in and why, as the members resolved it where they ran:
    {"pretrain"|"finetune": {"setting", "chosen": [{"precision", "reason", "members"}]}} (one entry per
    distinct choice: members on different hardware may choose differently)."""
    summary = {}
    for phase, setting in (("pretrain", cfg.pretrain.precision), ("finetune", cfg.finetune.precision)):
        counts: dict[tuple[str, str], int] = {}
        for r in results.values():
            stats = r.pretrain_stats if phase == "pretrain" else r.finetune_stats
            if "precision" in stats:
                key = (stats["precision"], stats.get("precision_reason", ""))
                counts[key] = counts.get(key, 0) + 1
        summary[phase] = {"setting": setting, "chosen": [{"precision": p, "reason": why, "members": n}
                                                         for (p, why), n in counts.items()]}
    return summary


def _precision_line(summary: dict) -> str:
    """One line: `- precision: pre-training and fine-tuning: bf16 (auto: the CPU ... has AVX-512 BF16 ...)`."""
    labels_by_text: dict[str, list[str]] = {}
    for phase, label in (("pretrain", "pre-training"), ("finetune", "fine-tuning")):
        chosen = summary[phase]["chosen"]
        text = "; ".join(f"{c['precision']} ({c['reason']}" + (f"; {c['members']} members)" if len(chosen) > 1 else ")")
                         for c in chosen) or "not recorded"
        labels_by_text.setdefault(text, []).append(label)
    return "- precision: " + "; ".join(f"{' and '.join(labels)}: {text}" for text, labels in labels_by_text.items())


def device_of(result) -> str:
    """Where a member ran (fine-tuning, and pre-training when that ran elsewhere), as its stats recorded it."""
    finetune, pretrain = result.finetune_stats.get("device"), result.pretrain_stats.get("device")
    if pretrain is None or pretrain == finetune:
        return finetune or "not recorded"
    return f"pre-training {pretrain}, fine-tuning {finetune}"


def build(cfg, corpus: dict, results: dict, specs, votes: dict, timing: dict, pretrained_from: dict | None = None,
          evidence: dict | None = None) -> dict:
    """The report dict. Everything outside `timing` is a pure function of config, seed, data and the hardware
    (with `precision: auto` the hardware decides the precision: `precision` says which and why).
    `pretrained_from`: {"run", "members"} when members' pre-training was taken from another run (recorded
    as `pretrained_from`; their pre-training stats, throughput included, are that run's).
    `evidence`: workers.committee.evidence.committee_evidence of the same members (orchestrator.run.evidence):
    each model's interval and calibration, and the `statistics` section."""
    members = []
    for spec in specs:
        if spec.role is Role.DEEP:
            continue
        r = results[spec.name]
        members.append(_with_evidence({"name": r.name, "index": r.index, "seed": r.seed, "pretrained": r.pretrained,
                                       "layers": r.num_layers, "parameters": r.parameters,
                                       "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                                       "pretrain_final_loss": r.pretrain_stats.get("final_loss"),
                                       "device": device_of(r)}, r.name, evidence))
    pre, scratch = votes.get("pretrained"), votes.get("scratch")
    k = cfg.committee.members
    curve = [{"size": i + 1, "pretrained_accuracy": pre["curve"][i],
              "scratch_accuracy": scratch["curve"][i] if scratch else None} for i in range(k)]
    deep = next((results[s.name] for s in specs if s.role is Role.DEEP), None)
    pre_results = [results[s.name] for s in specs if s.role is Role.PRETRAINED]
    tokens = sum(r.pretrain_stats["tokens"] for r in pre_results)
    train_s = sum(r.pretrain_stats["train_s"] for r in pre_results)
    timing = {**timing,
              "pretrain_tokens_per_s": tokens / train_s if train_s else 0.0,
              "pretrain_tokens_per_member": pre_results[0].pretrain_stats["tokens"] if pre_results else 0}
    if deep is not None:
        timing["deep_pretrain_tokens_per_s"] = deep.pretrain_stats["tokens_per_s"]
    out = {
        "name": cfg.name,
        "task": cfg.task.name,
        "seed": cfg.seed,
        "corpus": corpus,
        "members": members,
        "committee": _rules(pre, "committee", evidence),
        "scratch_committee": _rules(scratch, "scratch_committee", evidence),
        "weights": {"pretrained": pre["weights"], "scratch": scratch["weights"] if scratch else None},
        "committee_curve": curve,
        "deep": None if deep is None else _with_evidence(
            {"layers": deep.num_layers, "parameters": deep.parameters, "val_accuracy": deep.val_accuracy,
             "test_accuracy": deep.test_accuracy, "pretrain_final_loss": deep.pretrain_stats.get("final_loss"),
             "device": device_of(deep)}, deep.name, evidence),
        "statistics": statistics_section(evidence, cfg.seed),
        "precision": precision_summary(cfg, results),
        "timing": timing,
    }
    if pretrained_from is not None:
        out["pretrained_from"] = pretrained_from
    return out


def write(layout, report: dict, command: str = "") -> None:
    """report.json, committee_curve.png and report.md into the run directory of `layout` (a RunLayout)."""
    layout.report_json.write_text(json.dumps(report, indent=2) + "\n")
    plot_curve(report, layout.curve_png)
    layout.report_md.write_text(markdown(report, layout.run_dir, command))


def plot_curve(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["committee_curve"]
    sizes = [c["size"] for c in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [100 * c["pretrained_accuracy"] for c in curve], "o-", label="pre-trained members (soft vote)")
    if curve and curve[0]["scratch_accuracy"] is not None:
        ax.plot(sizes, [100 * c["scratch_accuracy"] for c in curve], "s--", label="scratch members (soft vote)")
    if report["deep"]:
        ax.axhline(100 * report["deep"]["test_accuracy"], color="k", linestyle=":",
                   label=f"deep model ({report['deep']['layers']} layers)")
    ax.set_xlabel("committee size (members in index order)")
    ax.set_ylabel(f"{report['task']} test accuracy (%)")
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _corpus_words(c: dict) -> str:
    """'the first N Wikipedia articles of the seeded order', or the same words for the user's own corpus."""
    source = c.get("corpus_source", "Wikipedia")
    if source.startswith("Wikipedia"):
        return f"the first {c['articles']} Wikipedia articles of the seeded order"
    return f"the first {c['articles']} documents of the seeded order of {source}"


def _vocabulary(c: dict) -> str:
    return f": {c['vocabulary']}" if c.get("vocabulary") else ""


def _token_overlap_words(c: dict) -> str:
    """The corpus's token overlap with the task's training text, and what it means for this vocabulary."""
    shares = f"{100 * c['token_overlap']:.1f}% of the task's training-token occurrences"
    if "token_type_overlap" in c:
        shares += f" and {100 * c['token_type_overlap']:.1f}% of its distinct tokens"
    if str(c.get("vocabulary", "")).startswith("fixed"):
        return f"Token overlap, on the fixed vocabulary: {shares} occur in the corpus."
    return (f"Token overlap: {shares} occur in the corpus (near 100% whenever the tokenizer was learned on that "
            f"corpus; a fixed vocabulary, tokenizer.vocab, makes it a measure of the corpus).")


def _classes_lines(c: dict) -> list[str]:
    """The task's classes (id: name) and where its examples came from, when prepare recorded them."""
    if not c.get("label_names"):
        return []
    names = ", ".join(f"{i} {name}" for i, name in enumerate(c["label_names"]))
    lines = [f"Classes (id name; ids follow {c['label_order']}): {names}. Task examples from {c['task_source']}."]
    if c.get("data_labels"):
        lines.append("Labels in the data: " + ", ".join(f"{label} is class {i}" for i, label in enumerate(c["data_labels"]))
                     + ".")
    carved = c.get("test_carved_from_train")
    if carved:
        setting = carved["test_from_train"]
        share = f"{setting} per class" if isinstance(setting, int) else f"a share of {setting:g} of each class"
        counts = sorted(set(carved["per_class"]))
        per_class = (f"{counts[0]} examples of every class" if len(counts) == 1
                     else f"{min(counts)}-{max(counts)} examples per class")
        lines.append(f"The data has no test split: {sum(carved['per_class'])} examples of its train split were "
                     f"carved off as test examples ({share}: {per_class}), stratified, drawn with task.sample_seed "
                     f"{carved['seed']}, disjoint from the training and validation examples.")
    return [" ".join(lines), ""]


def _committee_lines(r: dict) -> list[str]:
    """Each vote of both committees with its interval, their paired comparison, and the deep model against the
    committee (a comparison whose difference is inside the noise reads "inconclusive")."""
    stats = r.get("statistics")
    n = f" over {stats['test_examples']} test examples" if stats else ""
    lines = [f"## Committee (test accuracy, %, with 95% interval{n})", "",
             "| vote | pre-trained members | scratch members | pre-trained − scratch (points) [95% CI] | "
             "McNemar p | verdict |", "|---|---|---|---|---|---|"]
    for rule in RULES:
        mine = r["committee"][rule]
        theirs = r["scratch_committee"][rule] if r["scratch_committee"] else {}
        comparison = ev.find_comparison(stats, f"committee/{rule}", f"scratch_committee/{rule}")
        lines.append(f"| {rule} | {ev.accuracy_cell(mine['test_accuracy'], mine.get('test_accuracy_ci95'))} | "
                     f"{ev.accuracy_cell(theirs.get('test_accuracy'), theirs.get('test_accuracy_ci95'))} | "
                     f"{ev.difference_cell(comparison)} | {ev.p_text(comparison and comparison['p'])} | "
                     f"{ev.verdict_text(comparison, 'pre-trained', 'scratch')} |")
    if stats:
        lines += ["", "The soft vote's comparison is the paper's claim and stands alone; the other votes' p-values are "
                      "Holm-adjusted over those three."]
    if not r["deep"]:
        return lines
    d = r["deep"]
    lines += ["", f"Deep model ({d['layers']} layers, {d['parameters']:,} parameters, pre-trained on the same corpus): "
                  f"**{_pct(d['test_accuracy'])}%** test accuracy{_interval_words(d.get('test_accuracy_ci95'))} "
                  f"(ran on {d.get('device', 'not recorded')})."]
    if stats:
        lines += ["", "| pre-trained committee | committee − deep model (points) [95% CI] | McNemar p | verdict |",
                  "|---|---|---|---|"]
        for rule in RULES:
            comparison = ev.find_comparison(stats, f"committee/{rule}", "deep")
            lines.append(f"| {rule} vote | {ev.difference_cell(comparison)} | {ev.p_text(comparison and comparison['p'])} "
                         f"| {ev.verdict_text(comparison, 'committee', 'deep model')} |")
    return lines


def _interval_words(ci95: list | None) -> str:
    return "" if not ci95 else f" (95% CI {100 * ci95[0]:.1f}-{100 * ci95[1]:.1f})"


def _member_lines(r: dict) -> list[str]:
    """The members' table: test accuracy with its interval and each pre-trained member against its twin."""
    stats = r.get("statistics")
    twins = {m["index"]: m["name"] for m in r["members"] if not m["pretrained"]}
    lines = ["## Members", "",
             "| member | seed | layers | parameters | pre-train loss | val acc | test acc [95% CI] | "
             "− scratch twin (points) [95% CI] | McNemar p (Holm) | verdict | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in r["members"]:
        loss = "–" if m["pretrain_final_loss"] is None else f"{m['pretrain_final_loss']:.3f}"
        twin = twins.get(m["index"]) if m["pretrained"] else None
        comparison = ev.find_comparison(stats, m["name"], twin) if twin else None
        lines.append(f"| {m['name']} | {m['seed']} | {m['layers']} | {m['parameters']:,} | {loss} | "
                     f"{_pct(m['val_accuracy'])} | {ev.accuracy_cell(m['test_accuracy'], m.get('test_accuracy_ci95'))} | "
                     f"{ev.difference_cell(comparison)} | {ev.p_text(comparison and comparison['p'])} | "
                     f"{ev.verdict_text(comparison, 'member', 'twin') if twin else '–'} | "
                     f"{m.get('device', 'not recorded')} |")
    return lines


def _number(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mechanics_lines(r: dict) -> list[str]:
    """Committee mechanics: each committee's diversity and the Brier split of its soft vote, and the
    calibration of every member, vote and the deep model."""
    stats = r.get("statistics")
    if not stats:
        return []
    lines = ["", "## Committee mechanics", "",
             "Brier(soft vote) = mean member Brier − ambiguity, exactly: the soft vote's gain over its average member "
             "is the members' ambiguity (their mean squared distance from the vote).", "",
             "| committee | members | pairwise disagreement | error correlation | mean member acc | soft-vote acc | "
             "mean member Brier | ambiguity | soft-vote Brier |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, label in (("pretrained", "pre-trained"), ("scratch", "scratch")):
        d = stats["diversity"].get(arm)
        if d is None:
            continue
        b = d["brier"]
        lines.append(f"| {label} | {d['members']} | {_number(d['pairwise_disagreement'])} | "
                     f"{_number(d['error_correlation']['mean'])} | {_pct(d['mean_member_accuracy'])} | "
                     f"{_pct(d['vote_accuracy'])} | {_number(b['mean_member'])} | {_number(b['ambiguity'])} | "
                     f"{_number(b['vote'])} |")
    lines += ["", "Calibration on the test set (the hard vote has no probabilities):", "",
              "| model | NLL | ECE (15 bins) | Brier |", "|---|---|---|---|"]
    entries = [(m["name"], m) for m in r["members"]]
    for key, label in (("committee", "pre-trained committee"), ("scratch_committee", "scratch committee")):
        entries += [(f"{label}, {rule} vote", v) for rule, v in (r[key] or {}).items()]
    if r["deep"]:
        entries.append(("deep model", r["deep"]))
    for name, entry in entries:
        cal = entry.get("calibration")
        if cal:
            lines.append(f"| {name} | {_number(cal['nll'])} | {_number(cal['ece'])} | {_number(cal['brier'])} |")
    return lines


def markdown(r: dict, run_dir: Path, command: str) -> str:
    c, t = r["corpus"], r["timing"]
    lines = [
        f"# Committee report: {r['name']}",
        "",
        f"Task **{r['task']}** ({c['train_examples']} train / {c['val_examples']} validation / {c['test_examples']} test "
        f"examples), pre-training on {_corpus_words(c)} "
        f"({c['corpus_tokens']:,} tokens, vocab {c['vocab_size']:,}{_vocabulary(c)}). {_token_overlap_words(c)} "
        f"Base seed {r['seed']}. Test accuracy is measured once, after the final step; "
        f"the validation split (carved from the training data) serves the weighted vote.",
        "",
        *_classes_lines(c),
        *ev.warning_lines(r.get("statistics")),
        *_committee_lines(r),
    ]
    lines += ["", "## Committee size (soft vote, members in index order)", "",
              "| size | pre-trained | scratch | gap (points) |", "|---|---|---|---|"]
    for p in r["committee_curve"]:
        gap = None if p["scratch_accuracy"] is None else 100 * (p["pretrained_accuracy"] - p["scratch_accuracy"])
        lines.append(f"| {p['size']} | {_pct(p['pretrained_accuracy'])} | {_pct(p['scratch_accuracy'])} | "
                     f"{'–' if gap is None else f'{gap:+.1f}'} |")
    lines += ["", "![committee curve](committee_curve.png)", "", *_member_lines(r), *_mechanics_lines(r)]
    lines += ["", "## Timing", "",
              f"- wall time: {t['wall_s']:.1f} s (data and tokenizer {t['prepare_s']:.1f} s)",
              *([_precision_line(r["precision"])] if "precision" in r else []),
              f"- pre-training throughput per member process: {t['pretrain_tokens_per_s']:,.0f} real tokens/s "
              f"({t['pretrain_tokens_per_member']:,} tokens per member)"]
    if "deep_pretrain_tokens_per_s" in t:
        lines.append(f"- deep model pre-training: {t['deep_pretrain_tokens_per_s']:,.0f} real tokens/s")
    if r.get("pretrained_from"):
        source = r["pretrained_from"]
        lines.append(f"- pre-training of {', '.join(source['members'])} taken from {source['run']} (`--pretrained-from`; "
                     f"their pre-training figures are that run's)")
    lines += ["", *ev.methods_lines(r.get("statistics")),
              "## Reproduce", "", "```", *rundir.RunDir(Path(run_dir), "run").reproduce_lines(command), "```",
              "", "Same config and seed on CPU give the same numbers (everything but the timing).", ""]
    return "\n".join(lines)
