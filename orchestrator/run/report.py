"""The run's report: report.json (machine-readable), report.md (tables, commands) and committee_curve.png."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.run import rundir
from workers.train.member import Role
from workers.committee.voting import RULES


def _rules(vote: dict | None) -> dict | None:
    return None if vote is None else {rule: vote["rules"][rule] for rule in RULES}


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


def build(cfg, corpus: dict, results: dict, specs, votes: dict, timing: dict, pretrained_from: dict | None = None) -> dict:
    """The report dict. Everything outside `timing` is a pure function of config, seed, data and the hardware
    (with `precision: auto` the hardware decides the precision: `precision` says which and why).
    `pretrained_from`: {"run", "members"} when members' pre-training was taken from another run (recorded
    as `pretrained_from`; their pre-training stats, throughput included, are that run's)."""
    members = []
    for spec in specs:
        if spec.role is Role.DEEP:
            continue
        r = results[spec.name]
        members.append({"name": r.name, "index": r.index, "seed": r.seed, "pretrained": r.pretrained,
                        "layers": r.num_layers, "parameters": r.parameters,
                        "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                        "pretrain_final_loss": r.pretrain_stats.get("final_loss"), "device": device_of(r)})
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
        "committee": _rules(pre),
        "scratch_committee": _rules(scratch),
        "weights": {"pretrained": pre["weights"], "scratch": scratch["weights"] if scratch else None},
        "committee_curve": curve,
        "deep": None if deep is None else {"layers": deep.num_layers, "parameters": deep.parameters,
                                            "val_accuracy": deep.val_accuracy, "test_accuracy": deep.test_accuracy,
                                            "pretrain_final_loss": deep.pretrain_stats.get("final_loss"),
                                            "device": device_of(deep)},
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


def markdown(r: dict, run_dir: Path, command: str) -> str:
    c, t = r["corpus"], r["timing"]
    lines = [
        f"# Committee report: {r['name']}",
        "",
        f"Task **{r['task']}** ({c['train_examples']} train / {c['val_examples']} validation / {c['test_examples']} test "
        f"examples), pre-training on {_corpus_words(c)} "
        f"({c['corpus_tokens']:,} tokens, vocab {c['vocab_size']:,}). Token overlap: {100 * c['token_overlap']:.1f}% of the "
        f"task's training-token occurrences have ids that occur in the corpus (near 100% whenever the tokenizer "
        f"was trained on that corpus). Base seed {r['seed']}. Test accuracy is measured once, after the final step; "
        f"the validation split (carved from the training data) serves the weighted vote.",
        "",
        *_classes_lines(c),
        "## Committee (test accuracy, %)",
        "",
        "| vote | pre-trained members | scratch members |",
        "|---|---|---|",
    ]
    for rule in RULES:
        scratch = r["scratch_committee"][rule]["test_accuracy"] if r["scratch_committee"] else None
        lines.append(f"| {rule} | {_pct(r['committee'][rule]['test_accuracy'])} | {_pct(scratch)} |")
    if r["deep"]:
        d = r["deep"]
        lines += ["", f"Deep model ({d['layers']} layers, {d['parameters']:,} parameters, pre-trained on the same corpus): "
                      f"**{_pct(d['test_accuracy'])}%** test accuracy (ran on {d.get('device', 'not recorded')})."]
    lines += ["", "## Committee size (soft vote, members in index order)", "",
              "| size | pre-trained | scratch | gap (points) |", "|---|---|---|---|"]
    for p in r["committee_curve"]:
        gap = None if p["scratch_accuracy"] is None else 100 * (p["pretrained_accuracy"] - p["scratch_accuracy"])
        lines.append(f"| {p['size']} | {_pct(p['pretrained_accuracy'])} | {_pct(p['scratch_accuracy'])} | "
                     f"{'–' if gap is None else f'{gap:+.1f}'} |")
    lines += ["", "![committee curve](committee_curve.png)", "", "## Members", "",
              "| member | seed | layers | parameters | pre-train loss | val acc | test acc | device |",
              "|---|---|---|---|---|---|---|---|"]
    for m in r["members"]:
        loss = "–" if m["pretrain_final_loss"] is None else f"{m['pretrain_final_loss']:.3f}"
        lines.append(f"| {m['name']} | {m['seed']} | {m['layers']} | {m['parameters']:,} | {loss} | "
                     f"{_pct(m['val_accuracy'])} | {_pct(m['test_accuracy'])} | {m.get('device', 'not recorded')} |")
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
    lines += ["", "## Reproduce", "", "```", *rundir.reproduce_lines("run", run_dir, command), "```",
              "", "Same config and seed on CPU give the same numbers (everything but the timing).", ""]
    return "\n".join(lines)
