"""The distillation report: distill.json (one row per method x IPC x student seed, and the summary),
distill.md (mean +- std table, the committee and its prior weights, the comparisons) and
accuracy_vs_ipc.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

JSON, MARKDOWN, PLOT = "distill.json", "distill.md", "accuracy_vs_ipc.png"

METHOD_TEXT = {
    "random_hard": "random real examples, hard labels",
    "random_single": "random real examples, soft labels of the best member (by alpha)",
    "random_soft": "random real examples, committee soft labels: mean probability (the soft committee)",
    "random_equal": "random real examples, committee soft labels: equal-weight logit sum (CV-DD's equal voter)",
    "random_prior": "random real examples, committee soft labels: prior-weighted logit sum (CV-DD relabel)",
    "selected_prior": "committee-selected real examples, prior-weighted soft labels",
    "recover": "CV-DD recover (pair of members per IPC index), prior-weighted soft labels",
    "recover_single": "recover guided and labelled by the best member alone",
    "attention": "synthetic embeddings, learned soft and [CLS] attention labels (Maekawa et al. 2023), one step",
    "full": "the whole training split, hard labels (the reference)",
    "kd_full": "the committee distilled into one student: training split (+ unlabelled texts), committee labels",
}
# (name, minuend, subtrahend): what the report compares, paired over the student seeds, at every IPC
COMPARISONS = (
    ("committee labels - best member's labels", "random_prior", "random_single"),
    ("committee labels - hard labels", "random_prior", "random_hard"),
    ("prior weights - equal weights (both logit sums)", "random_prior", "random_equal"),
    ("equal-weight logit sum - mean probability", "random_equal", "random_soft"),
    ("committee selection - random selection", "selected_prior", "random_prior"),
    ("recover - its real starting examples", "recover", "random_prior"),
    ("committee recover - single-expert recover", "recover", "recover_single"),
    ("attention labels - committee labels on real examples", "attention", "random_prior"),
    ("committee distilled into one student - full split, hard labels", "kd_full", "full"),
)
WHOLE_SPLIT = ("full", "kd_full")  # rows without an IPC


def summarize(rows: list[dict]) -> list[dict]:
    """Mean, sample standard deviation (ddof 1) and 95% t interval of test accuracy per (method, IPC), in row
    order; with a `full` row, each mean's share of the full split's mean."""
    from workers.stats import mean_interval

    groups: dict = {}
    for row in rows:
        groups.setdefault((row["method"], row["ipc"]), []).append(row["test_accuracy"])
    out = []
    for (m, ipc), accs in groups.items():
        spread = mean_interval(accs)
        out.append({"method": m, "ipc": ipc, "mean": spread["mean"], "std": spread["std"], "ci95": spread["ci95"],
                    "students": len(accs)})
    full = next((s["mean"] for s in out if s["method"] == "full"), None)
    for s in out:
        s["share_of_full"] = None if not full else s["mean"] / full
    return out


def comparisons(rows: list[dict], ipcs: list[int]) -> list[dict]:
    """The COMPARISONS present in `rows`, per IPC, each paired over the student seeds the two methods share
    (workers.stats.compare_over_seeds: mean difference, 95% t interval, paired t test), Holm-adjusted as one
    family; `points` is the mean difference in percentage points."""
    from workers.stats import adjust_seed_family, compare_over_seeds

    by = {}
    for row in rows:
        by.setdefault((row["method"], row["ipc"]), {})[row["seed"]] = row["test_accuracy"]
    found = []
    for name, a, b in COMPARISONS:
        for ipc in ([None] if a in WHOLE_SPLIT else ipcs):
            if (a, ipc) in by and (b, ipc) in by:
                stats = compare_over_seeds(by[(a, ipc)], by[(b, ipc)])
                found.append({"comparison": name, "ipc": ipc, "a": a, "b": b, **stats,
                              "points": 100 * stats["difference"]})
    return adjust_seed_family(found) if found else []


def kd_summary(rows: list[dict], references: dict | None) -> dict | None:
    """kd_full's students against the soft committee and the best member: accuracy, the per-seed difference's
    mean and 95% t interval (the committee and the member are fixed models: the spread is the students'), and
    the latency ratios measured side by side."""
    from workers.stats import mean_interval

    accs = [r["test_accuracy"] for r in rows if r["method"] == "kd_full"]
    if not accs or references is None:
        return None
    soft, best = references["soft_committee_test_accuracy"], references["best_member"]["test_accuracy"]
    return {"student": mean_interval(accs),
            "minus_soft_committee": mean_interval([a - soft for a in accs]),
            "minus_best_member": mean_interval([a - best for a in accs]),
            **references}


def build(cfg, num_classes: int, train_examples: int, members: list[dict], rows: list[dict], saved: dict,
          selection: dict, recover: dict, committee_dir: Path, timing: dict, prior: dict | None = None,
          attention: dict | None = None, references: dict | None = None) -> dict:
    """distill.json's dict: everything but `timing` (and kd_full's latency) is a function of the config, the
    seeds and the data."""
    from workers.stats.paired import PAIRED_SEEDS_METHOD

    d, st = cfg.distill, cfg.distill.student
    summary = summarize(rows)
    return {
        "name": cfg.name,
        "task": cfg.task.name,
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
        "train_examples": train_examples,
        "committee": {"run_dir": str(committee_dir), "members": members},
        "prior": prior or {"source": "validation"},
        "student": {"init": st.init, "layers": st.num_layers or cfg.model.num_layers,
                    "hidden_size": cfg.model.hidden_size, "steps": st.steps, "seeds": st.seeds,
                    "batch_size": st.batch_size, "lr": st.lr, "temperature": st.temperature,
                    "augment": st.augment, "relabel": st.relabel},
        "settings": d.model_dump(mode="json"),
        "selection": selection,
        "recover": recover,
        "attention": attention or {},
        "rows": rows,
        "summary": summary,
        "comparisons": comparisons(rows, d.ipc),
        "comparison_method": PAIRED_SEEDS_METHOD + "; Holm-adjusted over the report's comparisons",
        "kd_full": kd_summary(rows, references),
        "distilled_sets": saved,
        "timing": timing,
    }


def write(run_dir: Path, report: dict, command: str = "") -> None:
    """accuracy_vs_ipc.png, distill.md, then distill.json into `run_dir`: distill.json comes last and whole
    (a temporary file renamed), so its presence says the distillation finished."""
    from workers.storage import checkpoint

    run_dir = Path(run_dir)
    plot(report, run_dir / PLOT)
    (run_dir / MARKDOWN).write_text(markdown(report, run_dir, command))
    checkpoint.write_bytes(run_dir / JSON, (json.dumps(report, indent=2) + "\n").encode())


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ipcs = report["settings"]["ipc"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for method in report["settings"]["methods"]:
        points = [s for s in report["summary"] if s["method"] == method and s["ipc"] is not None]
        if points:
            ax.errorbar([p["ipc"] for p in points], [100 * p["mean"] for p in points],
                        yerr=[100 * p["std"] for p in points], marker="o", capsize=3, label=method)
    for method, style in (("full", "--"), ("kd_full", "-.")):
        whole = next((s for s in report["summary"] if s["method"] == method), None)
        if whole:
            ax.axhline(100 * whole["mean"], color="k", linestyle=style,
                       label=f"{method} ({report['train_examples']} training examples)")
    ax.axhline(100 * report["chance"], color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(ipcs)
    ax.set_xticklabels([str(i) for i in ipcs])
    ax.set_xlabel("examples per class (IPC)")
    ax.set_ylabel(f"{report['task']} test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cell(summary: dict | None) -> str:
    """A table cell: mean ± sample standard deviation over the students, in %."""
    return "–" if summary is None else f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def share_cell(summary: dict | None) -> str:
    return "–" if summary is None or summary.get("share_of_full") is None else f"{100 * summary['share_of_full']:.0f}%"


def interval_text(ci95, scale: float = 100.0) -> str:
    return "–" if ci95 is None else f"[{scale * ci95[0]:+.1f}, {scale * ci95[1]:+.1f}]"


def p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def accuracy_table(r: dict) -> list[str]:
    """The table of test accuracy (%) by method and IPC (what docs/distill.md shows and its test checks)."""
    ipcs = r["settings"]["ipc"]
    by_key = {(s["method"], s["ipc"]): s for s in r["summary"]}
    lines = ["| method | what | " + " | ".join(f"IPC {n}" for n in ipcs) + " |", "|---|---|" + "---|" * len(ipcs)]
    for method in r["settings"]["methods"]:
        if method in WHOLE_SPLIT:
            cells = [cell(by_key.get((method, None)))] + [""] * (len(ipcs) - 1)
        else:
            cells = [cell(by_key.get((method, n))) for n in ipcs]
        lines.append(f"| {method} | {METHOD_TEXT[method]} | " + " | ".join(cells) + " |")
    lines.append(f"| chance | 1 / classes | {100 * r['chance']:.1f} |" + " |" * (len(ipcs) - 1))
    return lines


def share_table(r: dict) -> list[str]:
    """Each distilled set's mean as a share of the full split's (the same student start and steps)."""
    ipcs = r["settings"]["ipc"]
    by_key = {(s["method"], s["ipc"]): s for s in r["summary"]}
    lines = ["| method | " + " | ".join(f"IPC {n}" for n in ipcs) + " |", "|---|" + "---|" * len(ipcs)]
    for method in r["settings"]["methods"]:
        if method not in WHOLE_SPLIT:
            lines.append(f"| {method} | " + " | ".join(share_cell(by_key.get((method, n))) for n in ipcs) + " |")
    return lines


def comparison_table(r: dict) -> list[str]:
    """Every comparison, paired over the student seeds: mean difference, 95% t interval, p (raw and Holm)."""
    lines = ["| comparison | IPC | difference (points) | 95% interval | seeds a > b | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in r["comparisons"]:
        ipc = "all" if c["ipc"] is None else c["ipc"]
        lines.append(f"| {c['comparison']} ({c['a']} - {c['b']}) | {ipc} | {c['points']:+.1f} | "
                     f"{interval_text(c['ci95'])} | {c['a_better_seeds']}/{c['n']} | {p_text(c['p_unadjusted'])} | "
                     f"{p_text(c['p'])} | {c['verdict']} |")
    return lines


def kd_lines(kd: dict) -> list[str]:
    lat = kd["latency"]
    ms, thr = lat["ms_per_example"], lat["throughput_ms_per_example"]
    student = kd["student"]
    batch = lat["throughput_batch"]
    return [
        "## The committee distilled into one student (kd_full)", "",
        f"| model | test accuracy (%) | latency, batch 1 (ms) | / committee's | ms per example, batch {batch} | "
        "/ committee's |",
        "|---|---|---|---|---|---|",
        f"| soft committee of {kd['members']} members | {100 * kd['soft_committee_test_accuracy']:.1f} | "
        f"{ms['committee']:.3f} | 1.00 | {thr['committee']:.3f} | 1.00 |",
        f"| best member ({kd['best_member']['name']}) | {100 * kd['best_member']['test_accuracy']:.1f} | "
        f"{ms['best member']:.3f} | {lat['best_member_over_committee']:.2f} | {thr['best member']:.3f} | "
        f"{lat['throughput_best_member_over_committee']:.2f} |",
        f"| kd_full student (mean ± std of {student['n']}) | {100 * student['mean']:.1f} ± {100 * student['std']:.1f}"
        f" | {ms['student']:.3f} | {lat['student_over_committee']:.2f} | {thr['student']:.3f} | "
        f"{lat['throughput_student_over_committee']:.2f} |", "",
        f"Student - soft committee: {100 * kd['minus_soft_committee']['mean']:+.1f} points, 95% interval "
        f"{interval_text(kd['minus_soft_committee']['ci95'])} over the students' seeds; student - best member: "
        f"{100 * kd['minus_best_member']['mean']:+.1f}, {interval_text(kd['minus_best_member']['ci95'])}. "
        f"Timed side by side in this run: {lat['examples']} test examples, one at a time and in batches of {batch}, "
        f"{lat['rounds']} interleaved rounds (median), {lat['threads']} thread, on {lat['cpu']}.", ""]


def committee_table(r: dict) -> list[str]:
    """Each member's accuracies, alpha and prior weights."""
    lines = ["| member | val acc | test acc | alpha | relabel weight | recover weight |", "|---|---|---|---|---|---|"]
    for m in r["committee"]["members"]:
        best = " (best)" if m["best"] else ""
        lines.append(f"| {m['name']}{best} | {100 * m['val_accuracy']:.1f} | {100 * m['test_accuracy']:.1f} | "
                     f"{100 * m['alpha']:.1f} | {m['relabel_weight']:.3f} | {m['recover_weight']:.3f} |")
    return lines


def document_tables(r: dict) -> str:
    """The tables a document shows for a committed distill.json (docs/distill.md: a test regenerates them from
    the JSON and compares; `python -m orchestrator.distill.report FILE` prints them)."""
    lines = ["#### Test accuracy (%) by method and examples per class", "", *accuracy_table(r), ""]
    if any(s.get("share_of_full") for s in r["summary"]):
        lines += ["#### Share of the full split's accuracy (same student start and steps)", "", *share_table(r), ""]
    if r["comparisons"]:
        lines += ["#### Comparisons, paired over the student seeds", "", *comparison_table(r), ""]
    if r.get("kd_full"):
        lines += ["##" + line if line.startswith("## ") else line for line in kd_lines(r["kd_full"])]
    lines += ["#### Committee", "", *committee_table(r)]
    return "\n".join(lines)


def markdown(r: dict, run_dir: Path, command: str) -> str:
    st = r["student"]
    members = r["committee"]["members"]
    prior = r["prior"]
    lines = [
        f"# Distillation report: {r['name']}",
        "",
        f"Task **{r['task']}** ({r['num_classes']} classes, {r['train_examples']} training examples). Committee of "
        f"{len(members)} fine-tuned members from `{r['committee']['run_dir']}`. Each distilled set trains "
        f"{st['seeds']} fresh students (BERT-{st['layers']}, hidden {st['hidden_size']}, "
        f"{'pre-trained non-member' if st['init'] == 'pretrained' else 'random'} initialisation) for {st['steps']} "
        f"steps (soft labels: KL at T = {st['temperature']:g}; hard labels: cross-entropy; augmentation "
        f"{st['augment']}, soft labels {'recomputed on every augmented view' if st['relabel'] == 'per_view' else 'fixed'}"
        f"); test accuracy is measured once, after the last step. Cells: mean ± sample standard deviation over the "
        f"students, in %.",
        "",
        "## Test accuracy (%) by method and examples per class",
        "",
        *accuracy_table(r),
        "", "![accuracy against IPC](accuracy_vs_ipc.png)", "",
    ]
    if any(s.get("share_of_full") for s in r["summary"]):
        lines += ["## Share of the full split's accuracy (same student start and steps)", "", *share_table(r), ""]
    if r["comparisons"]:
        lines += ["## Comparisons (paired over the student seeds)", "",
                  f"{r['comparison_method']}. A difference is called when the Holm-adjusted p is below 0.05 and "
                  "the interval excludes 0; otherwise it is inconclusive.", "", *comparison_table(r), ""]
    if r.get("kd_full"):
        lines += kd_lines(r["kd_full"])
    source = ("alpha = the validation accuracy of students taught by that member alone on "
              f"{prior['ipc']} random real example(s) per class (CV-DD's prior; {prior['seeds']} student(s) each)"
              if prior["source"] == "student" else "alpha = the member's own validation accuracy")
    lines += ["## Committee", "",
              f"{source}. Prior weights are softmax(alpha in % / T): T = "
              f"{r['settings']['relabel_temperature']:g} for relabelling, "
              f"T = {r['settings']['recover']['temperature']:g} for mixing a recover pair (there over the pair only).",
              "", *committee_table(r)]
    if r["recover"]:
        lines += ["", "## Recover", "",
                  "| method | guides | iterations | augmentation | loss first -> last | guides classify as the class "
                  "(real start -> recovered) | committee label = class |", "|---|---|---|---|---|---|---|"]
        for method, info in r["recover"].items():
            lines.append(f"| {method} | {info['guides']} | {info.get('iterations', '–')} | {info.get('augment', '–')}"
                         f" | {info['loss_first']:.3f} -> {info['loss_last']:.3f} | "
                         f"{100 * info['guide_accuracy_before']:.0f}% -> {100 * info['guide_accuracy_after']:.0f}% | "
                         f"{100 * info['committee_agrees_with_class']:.0f}% |")
    if r.get("attention"):
        lines += ["", "## Attention sets", "",
                  "| IPC | outer loss first -> last | learned step size | soft label = class | seconds |",
                  "|---|---|---|---|---|"]
        for ipc, info in r["attention"].items():
            lines.append(f"| {ipc} | {info['loss_first']:.3f} -> {info['loss_last']:.3f} | {info['inner_lr']:.4f} | "
                         f"{100 * info['soft_label_agrees_with_class']:.0f}% | {info['seconds']:.0f} |")
    if r["selection"].get("rule"):
        lines += ["", f"selected_prior chooses its examples by **{r['selection']['rule']}**."]
    t = r["timing"]
    stages = ", ".join(f"{name} {t[key]:.0f} s" for name, key in (
        ("committee", "committee_s"), ("prior", "prior_s"), ("recover", "recover_s"), ("attention", "attention_s"),
        ("students", "students_s")) if key in t)
    lines += ["", "## Distilled sets", "",
              "Under `distilled/<method>/ipc-<n>/`. Real examples: `data.parquet` (`text`, `label`, `soft_label` = "
              "teacher logits, `train_row`), read with `datasets.load_dataset(\"parquet\", data_files=PATH)`. "
              "Synthetic examples: `tokens.safetensors` (`token_ids`, `token_probs` [n, seq, k]: each position a "
              "distribution over k vocabulary ids of the run's tokenizer; `lengths`, `labels`, `soft_labels`) and "
              "`decoded.parquet` (each position's most probable token, decoded). Attention sets: `set.safetensors` "
              "(`embeds` [n, seq, hidden] in the students' base's input-embedding space, `lengths`, `labels`, "
              "`soft_labels`, `attention_labels` [n, layers, heads, seq], `inner_lr`).", "",
              "## Timing", "",
              f"- wall time {t['wall_s']:.0f} s: {stages}"
              + (" (the last attempt only: the distillation was resumed)" if t.get("resumed") else ""), "",
              "## Reproduce", "", "```", command or f"committee distill {run_dir}/config.yaml", "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(document_tables(json.loads(Path(sys.argv[1]).read_text())))
