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
    "random_single": "random real examples, soft labels of the best member",
    "random_equal": "random real examples, committee soft labels, equal weights (mean probability)",
    "random_prior": "random real examples, committee soft labels, prior weights (CV-DD relabel)",
    "selected_prior": "committee-selected real examples, prior-weighted soft labels",
    "recover": "CV-DD recover (pair of members per IPC index), prior-weighted soft labels",
    "recover_single": "recover guided and labelled by the best member alone",
    "full": "the whole training split, hard labels (upper bound)",
}
# (name, minuend, subtrahend): what the report compares at every IPC
COMPARISONS = (
    ("committee labels - single-member labels", "random_prior", "random_single"),
    ("committee labels - hard labels", "random_prior", "random_hard"),
    ("prior weights - equal weights", "random_prior", "random_equal"),
    ("committee selection - random selection", "selected_prior", "random_prior"),
    ("recover - its real starting examples", "recover", "random_prior"),
    ("committee recover - single-expert recover", "recover", "recover_single"),
)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof 1) of test accuracy per (method, IPC), in row order."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["method"], row["ipc"]), []).append(row["test_accuracy"])
    return [{"method": m, "ipc": ipc, "mean": float(np.mean(accs)),
             "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0, "students": len(accs)}
            for (m, ipc), accs in groups.items()]


def comparisons(summary: list[dict], ipcs: list[int]) -> list[dict]:
    """Differences of mean test accuracy (points) between the methods of COMPARISONS, per IPC."""
    means = {(s["method"], s["ipc"]): s["mean"] for s in summary}
    out = []
    for name, a, b in COMPARISONS:
        for ipc in ipcs:
            if (a, ipc) in means and (b, ipc) in means:
                out.append({"comparison": name, "ipc": ipc, "a": a, "b": b,
                            "points": 100 * (means[(a, ipc)] - means[(b, ipc)])})
    return out


def build(cfg, num_classes: int, train_examples: int, members: list[dict], rows: list[dict], saved: dict,
          selection: dict, recover: dict, committee_dir: Path, timing: dict) -> dict:
    """distill.json's dict: everything but `timing` is a function of the config, the seeds and the data."""
    d, st = cfg.distill, cfg.distill.student
    summary = summarize(rows)
    return {
        "name": cfg.name,
        "task": cfg.task.name,
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
        "train_examples": train_examples,
        "committee": {"run_dir": str(committee_dir), "members": members},
        "student": {"init": st.init, "layers": st.num_layers or cfg.model.num_layers,
                    "hidden_size": cfg.model.hidden_size, "steps": st.steps, "seeds": st.seeds,
                    "batch_size": st.batch_size, "lr": st.lr, "temperature": st.temperature},
        "settings": d.model_dump(mode="json"),
        "selection": selection,
        "recover": recover,
        "rows": rows,
        "summary": summary,
        "comparisons": comparisons(summary, d.ipc),
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
    full = next((s for s in report["summary"] if s["method"] == "full"), None)
    if full:
        ax.axhline(100 * full["mean"], color="k", linestyle="--",
                   label=f"full training split ({report['train_examples']})")
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


def _cell(summary: dict | None) -> str:
    return "–" if summary is None else f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def markdown(r: dict, run_dir: Path, command: str) -> str:
    ipcs, st = r["settings"]["ipc"], r["student"]
    by_key = {(s["method"], s["ipc"]): s for s in r["summary"]}
    members = r["committee"]["members"]
    lines = [
        f"# Distillation report: {r['name']}",
        "",
        f"Task **{r['task']}** ({r['num_classes']} classes, {r['train_examples']} training examples). Committee of "
        f"{len(members)} fine-tuned members from `{r['committee']['run_dir']}`. Each distilled set trains "
        f"{st['seeds']} fresh students (BERT-{st['layers']}, hidden {st['hidden_size']}, "
        f"{'pre-trained non-member' if st['init'] == 'pretrained' else 'random'} initialisation) for {st['steps']} "
        f"steps (soft labels: KL at T = {st['temperature']:g}; hard labels: cross-entropy); test accuracy is "
        f"measured once, after the last step. Cells: mean ± sample standard deviation over the students, in %.",
        "",
        "## Test accuracy (%) by method and examples per class",
        "",
        "| method | what | " + " | ".join(f"IPC {n}" for n in ipcs) + " |",
        "|---|---|" + "---|" * len(ipcs),
    ]
    for method in r["settings"]["methods"]:
        if method == "full":
            cells = [_cell(by_key.get(("full", None)))] + [""] * (len(ipcs) - 1)
        else:
            cells = [_cell(by_key.get((method, n))) for n in ipcs]
        lines.append(f"| {method} | {METHOD_TEXT[method]} | " + " | ".join(cells) + " |")
    lines.append(f"| chance | 1 / classes | {100 * r['chance']:.1f} |" + " |" * (len(ipcs) - 1))
    lines += ["", "![accuracy against IPC](accuracy_vs_ipc.png)", ""]
    if r["comparisons"]:
        lines += ["## Comparisons (difference of mean test accuracy, points)", "",
                  "| comparison | " + " | ".join(f"IPC {n}" for n in ipcs) + " |", "|---|" + "---|" * len(ipcs)]
        for name, a, b in COMPARISONS:
            found = {c["ipc"]: c["points"] for c in r["comparisons"] if c["comparison"] == name}
            if found:
                lines.append(f"| {name} ({a} - {b}) | " + " | ".join(
                    f"{found[n]:+.1f}" if n in found else "–" for n in ipcs) + " |")
        lines.append("")
    lines += ["## Committee", "",
              "Prior weights are softmax(validation accuracy in % / T): T = "
              f"{r['settings']['relabel_temperature']:g} for relabelling, "
              f"T = {r['settings']['recover']['temperature']:g} for mixing a recover pair (there over the pair only).",
              "",
              "| member | val acc | test acc | relabel weight | recover weight |", "|---|---|---|---|---|"]
    for m in members:
        best = " (best)" if m["best"] else ""
        lines.append(f"| {m['name']}{best} | {100 * m['val_accuracy']:.1f} | {100 * m['test_accuracy']:.1f} | "
                     f"{m['relabel_weight']:.3f} | {m['recover_weight']:.3f} |")
    if r["recover"]:
        lines += ["", "## Recover", "",
                  "| method | guides | loss first -> last | guides classify as the class (before -> after) | "
                  "committee label = class |", "|---|---|---|---|---|"]
        for method, info in r["recover"].items():
            lines.append(f"| {method} | {info['guides']} | {info['loss_first']:.3f} -> {info['loss_last']:.3f} | "
                         f"{100 * info['guide_accuracy_before']:.0f}% -> {100 * info['guide_accuracy_after']:.0f}% | "
                         f"{100 * info['committee_agrees_with_class']:.0f}% |")
    if r["selection"].get("rule"):
        lines += ["", f"selected_prior chooses its examples by **{r['selection']['rule']}**."]
    t = r["timing"]
    lines += ["", "## Distilled sets", "",
              "Under `distilled/<method>/ipc-<n>/`. Real examples: `data.parquet` (`text`, `label`, `soft_label` = "
              "teacher logits, `train_row`), read with `datasets.load_dataset(\"parquet\", data_files=PATH)`. "
              "Synthetic examples: `tokens.safetensors` (`token_ids`, `token_probs` [n, seq, k]: each position a "
              "distribution over k vocabulary ids of the run's tokenizer; `lengths`, `labels`, `soft_labels`) and "
              "`decoded.parquet` (each position's most probable token, decoded).", "",
              "## Timing", "",
              f"- wall time {t['wall_s']:.0f} s: committee {t['committee_s']:.0f} s, recover "
              f"{t.get('recover_s', 0):.0f} s, students {t['students_s']:.0f} s"
              + (" (the last attempt only: the distillation was resumed)" if t.get("resumed") else ""), "",
              "## Reproduce", "", "```", command or f"committee distill {run_dir}/config.yaml", "```", ""]
    return "\n".join(lines)
