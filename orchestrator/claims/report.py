"""The claims report: claims.json (every number), claims.md (a verdict per claim with its interval over seed
blocks, the blocks' paired tests, the budget, the commands, the hardware and the time) and two plots:
claims_effects.png (each claim's effect per block and its interval) and claims_latency.png."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from orchestrator.claims.measure import HOLDS, INCONCLUSIVE
from orchestrator.claims.plan import SUITE, Step
from orchestrator.config.claims import BLOCK_SEED_STRIDE, REPO, ClaimsConfig
from orchestrator.run.evidence import p_text
from orchestrator.sweep.report import T_975

JSON, MARKDOWN, EFFECTS_PNG, LATENCY_PNG = "claims.json", "claims.md", "claims_effects.png", "claims_latency.png"
VERDICT_RULES = {
    "direction": "holds when the 95% t interval of the effect over seed blocks lies above 0, does not hold when it "
                 "lies below 0, otherwise inconclusive at this budget",
    "equivalence": "matches when the 95% t interval of committee minus BERT-6 over seed blocks lies within "
                   "+-margin or wholly above 0; does not hold when it lies below -margin; otherwise inconclusive "
                   "(the interval is wider than the margin allows)",
    "latency": "lower latency when the 95% t interval of the committee's median latency over BERT-6's lies below 1",
    "combined": "a claim made of parts (tasks, matchings, batch sizes, comparisons) holds when every part holds and "
                "does not hold when any part does not",
    "blocks": f"a seed block is an independent replicate: block b runs with base seed seed + {BLOCK_SEED_STRIDE} x b "
              "(its own members, twins, BERT-6, students); a sweep's blocks are its seeds",
    "paired_tests": "within a block: exact McNemar test and paired bootstrap (10,000 resamples) on the same test "
                    "examples (workers.stats, docs/statistics.md); claim 5: the students' seeds paired (t interval)",
}


# ----------------------------------------------------------------------------------------------
# what ran, and where


def hardware(suite_dir: Path, steps: list[Step]) -> dict:
    """The machine the suite ran on: CPU (model name, family/model number, the flags that decide precision),
    cores, GPUs, torch, and the precision the first committee run chose."""
    import torch

    from workers.model.precision import cpu_bf16_flags, cpu_model

    info = {"cpu": cpu_model(), "cpu_family_model": _cpuinfo(("cpu family", "model")), "cpu_cores": os.cpu_count(),
            "cpu_flags": [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
                          if f in _cpu_flags()],
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "torch": torch.__version__, "python": platform.python_version(), "bf16_flags": cpu_bf16_flags()}
    first = next((s for s in steps if s.kind == "run"), None)
    if first is not None and (suite_dir / first.id / "report.json").is_file():
        run = json.loads((suite_dir / first.id / "report.json").read_text())
        info["precision"] = run.get("precision")
        info["member_device"] = run["members"][0].get("device")
    return info


def _cpu_flags() -> set[str]:
    text = _cpuinfo(("flags",))
    return set(text.split()) if text else set()


def _cpuinfo(fields: tuple[str, ...]) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    values = []
    for name in fields:
        values += [line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == name][:1]
    return " / ".join(values)


def setup(suite: ClaimsConfig) -> dict:
    """The budgets: shapes, tokens, task sizes; what each budget can show is the suite's own note."""
    e = suite.experiment
    member_tokens = e.pretrain.max_steps * e.pretrain.batch_size * e.pretrain.seq_len
    tasks = {e.task.name: e.task, **suite.other_tasks}
    return {"members": e.committee.members, "hidden_size": e.model.hidden_size, "heads": e.model.num_heads,
            "deep_layers": e.deep.num_layers, "vocabulary": e.tokenizer.vocab or e.tokenizer.vocab_size,
            "pretrain_articles": e.pretrain.articles, "pretrain_tokens_per_member": member_tokens,
            "deep_pretrain_tokens": member_tokens * e.committee.members,
            "finetune_epochs": e.finetune.epochs,
            "tasks": {label: {"name": t.name, "train_per_class": t.train_per_class, "val_per_class": t.val_per_class,
                              "test_per_class": t.test_per_class} for label, t in tasks.items()},
            "seed_blocks": suite.claims.seed_blocks,
            "block_seeds": [suite.block_seed(b) for b in range(suite.claims.seed_blocks)],
            "t_critical": T_975[suite.claims.seed_blocks - 2] if suite.claims.seed_blocks - 2 < len(T_975) else 1.96,
            "margin_points": suite.claims.margin_points,
            "data_sweep": {k: {d.kind: d.bounds} for k, d in suite.claims.data.space.items()},
            "overlap_sweep": {k: {d.kind: d.bounds} for k, d in suite.claims.overlap.space.items()},
            "distill": suite.claims.distill.model_dump(mode="json"), "budget_note": suite.claims.budget_note}


def suite_file(suite: ClaimsConfig) -> str:
    """The suite file as a reader types it: relative to the repository when it lies there."""
    path = Path(suite.path).resolve()
    return str(path.relative_to(REPO)) if REPO in path.parents else path.name


def build(suite: ClaimsConfig, steps: list[Step], suite_dir: Path, claims: list[dict]) -> dict:
    recorded = json.loads((suite_dir / "steps.json").read_text()) if (suite_dir / "steps.json").is_file() else {}
    ran = [{"id": s.id, "kind": s.kind, "claims": list(s.claims), "command": s.command(),
            **{k: v for k, v in recorded.get(s.id, {}).items() if k in ("wall_s", "load_average_before",
                                                                      "load_average_after", "finished_utc")}}
           for s in steps]
    return {"suite": suite.name, "suite_file": suite_file(suite), "command": f"committee claims {suite_file(suite)}",
            "setup": setup(suite), "hardware": hardware(suite_dir, steps), "steps": ran,
            "wall_s": round(sum(s.get("wall_s", 0.0) for s in ran), 1), "verdict_rules": VERDICT_RULES,
            "claims": claims}


def write(suite_dir: Path, out: dict) -> None:
    plot_effects(out, suite_dir / EFFECTS_PNG)
    plot_latency(out, suite_dir / LATENCY_PNG)
    (suite_dir / MARKDOWN).write_text(markdown(out))
    (suite_dir / JSON).write_text(json.dumps(out, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# rows: every effect of the report as (label, effect, kind)


def effect_rows(out: dict) -> list[dict]:
    """Every effect measured over blocks, in points (latency apart): claim, label, effect, verdict, kind."""
    rows = []
    c1, c2, c3, c4, c5 = out["claims"]
    for task, t in c1["tasks"].items():
        rows.append({"claim": 1, "label": f"1 pre-trained - scratch, {task}", "effect": t["effect"],
                     "verdict": t["verdict"], "kind": "direction", "note": t.get("note")})
    for c in (c2, c3):
        rows.append({"claim": c["claim"], "label": f"{c['claim']} gap change, {c['step']} (high - low)",
                     "effect": c["effect"], "verdict": c["verdict"], "kind": "direction", "note": c.get("note")})
    for task, t in c4["tasks"].items():
        for matching in ("matched_tokens", "matched_parameters"):
            if t[matching]["effect"] is not None:
                rows.append({"claim": 4, "label": f"4 committee of {t[matching]['members']} - BERT-6, {task}, "
                                                  f"{matching.replace('_', ' ')}",
                             "effect": t[matching]["effect"], "verdict": t[matching]["verdict"], "kind": "equivalence",
                             "note": t[matching].get("note")})
    for comp in c5["comparisons"]:
        rows.append({"claim": 5, "label": f"5 {comp['comparison']}, IPC {comp['ipc']}", "effect": comp["effect"],
                     "verdict": comp["verdict"], "kind": "direction", "note": comp.get("note")})
    return rows


def _signed(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:+.{digits}f}"


def interval_text(effect: dict | None, digits: int = 1) -> str:
    """'+1.2 [-0.5, +2.9]' (mean and its 95% interval over blocks)."""
    if not effect or effect.get("mean") is None:
        return "–"
    ci = effect.get("ci95")
    tail = "" if ci is None else f" [{_signed(ci[0], digits)}, {_signed(ci[1], digits)}]"
    return _signed(effect["mean"], digits) + tail


def accuracy_text(stat: dict | None) -> str:
    """'78.1 [74.2, 82.0]': an accuracy (points) and its interval, unsigned."""
    if not stat or stat.get("mean") is None:
        return "–"
    ci = stat.get("ci95")
    return f"{stat['mean']:.1f}" + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def _note(part: dict) -> str:
    return f" ({part['note']})" if part.get("note") else ""


def _ratio_text(effect: dict) -> str:
    ci = effect.get("ci95")
    return f"{effect['mean']:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def _block_cell(b: dict) -> str:
    """A block's paired test: '+1.3 [-0.9, +3.5], p 0.27, inconclusive'."""
    if b.get("difference") is None:
        return "–"
    ci = b.get("ci95")
    text = _signed(b["difference"]) + ("" if ci is None else f" [{_signed(ci[0])}, {_signed(ci[1])}]")
    if b.get("mcnemar_p") is not None:
        text += f", p {p_text(b['mcnemar_p'])}"
    return text + (f", {b['verdict']}" if b.get("verdict") else "")


# ----------------------------------------------------------------------------------------------
# claims.md


def markdown(out: dict) -> str:
    s, c1, c2, c3, c4, c5 = out["setup"], *out["claims"]
    blocks = s["seed_blocks"]
    lines = [f"# Claims: {out['suite']}", "",
             f"`{out['command']}` measured the papers' claims over {blocks} seed blocks (independent replicates: "
             f"every model of a block has its own seeds). Each effect is in accuracy points; its interval is the 95% "
             f"t interval over the blocks (t = {s['t_critical']:.3f} with {blocks - 1} degrees of freedom), and "
             f"each block carries its own paired test on the same test examples. A claim **holds** only when its "
             f"interval says so, **does not hold** when the interval says the opposite, and is **inconclusive** at "
             f"this budget otherwise.", ""]
    if s["budget_note"]:
        lines += ["## What this budget can and cannot show", "", s["budget_note"].strip(), ""]
    lines += ["## Verdicts", "", *verdict_table(out), "", f"![effects per block and over blocks]({EFFECTS_PNG})", ""]
    lines += _claim1(c1) + _sweep_claim(c2) + _sweep_claim(c3) + _claim4(c4, s) + _claim5(c5)
    lines += _setup_lines(s) + _hardware_lines(out) + _commands_lines(out) + _method_lines(out)
    return "\n".join(lines)


def verdict_table(out: dict) -> list[str]:
    """Every effect with its interval over blocks and its verdict, one row each (docs/claims.md holds this table
    for the committed laptop suite: `python -m orchestrator.claims.report CLAIMS_JSON`)."""
    margin = out["setup"]["margin_points"]
    lines = ["| claim | verdict | effect over blocks [95% CI] | what |", "|---|---|---|---|"]
    rows = effect_rows(out)
    for row in rows:
        what = f"equivalence, margin {margin:g}" if row["kind"] == "equivalence" else "direction"
        flag = " (at chance)" if row.get("note") else ""
        lines.append(f"| {row['label']} | {row['verdict']}{flag} | {interval_text(row['effect'])} | {what} |")
    for batch, b in out["claims"][3]["latency"]["batches"].items():
        lines.append(f"| 4 latency committee / BERT-6, batch {batch} | {b['verdict']} | {_ratio_text(b['ratio'])} "
                     f"| ratio of medians (geometric mean) |")
    if any(row.get("note") for row in rows):
        lines += ["", "(at chance): in some block both compared models are not above chance, so the part is "
                      "inconclusive whatever its interval."]
    return lines


def _claim1(c: dict) -> list[str]:
    lines = [f"## Claim 1: {c['statement']} — {c['verdict']}", "", c["measure"] + ".", ""]
    for task, t in c["tasks"].items():
        lines += [f"**{task}**: {interval_text(t['effect'])} points, {t['verdict']}{_note(t)}; mean member minus "
                  f"its twin {interval_text(t['member_gap'])}.", "",
                  "| block | pre-trained committee | scratch committee | paired test (diff [95% CI], McNemar p, verdict) "
                  "| members beating / losing to their twin |", "|---|---|---|---|---|"]
        for b in t["blocks"]:
            lines.append(f"| {b['block']} | {b['pretrained']:.1f} | {b['scratch']:.1f} | {_block_cell(b)} | "
                         f"{b['members_better']} / {b['members_worse']} of {b['members']} |")
        lines.append("")
    return lines


def _sweep_claim(c: dict) -> list[str]:
    lines = [f"## Claim {c['claim']}: {c['statement']} — {c['verdict']}", "", c["measure"] + f" (step `{c['step']}`).",
             "", "| level | corpus tokens | tokens seen | type / occurrence overlap | members | scratch twins | gap "
             "[95% CI over seeds] | committee vote / mean member (gain), ambiguity |", "|---|---|---|---|---|---|---|---|"]
    for lv in c["levels"]:
        name = ", ".join(f"{k}={v}" for k, v in lv["values"].items())
        m = lv["committee"]
        mech = "–" if m is None else (f"{m['vote_accuracy']:.1f} / {m['mean_member_accuracy']:.1f} "
                                      f"({m['vote_gain']:+.1f}), {m['ambiguity']:.3f}")
        lines.append(f"| {name} | {lv['corpus_tokens']:,} | {lv['pretrain_tokens'] or 0:,} | "
                     f"{100 * lv['type_overlap']:.1f}% / {100 * lv['occurrence_overlap']:.1f}% | "
                     f"{accuracy_text(lv['pretrained'])} | {accuracy_text(lv['scratch'])} | "
                     f"{interval_text(lv['gap'])} | {mech} |")
    lines += ["", f"Change of the gap from the lowest to the highest level, per seed: "
                  f"{interval_text(c['effect'])} points over {c['effect']['n']} blocks{_note(c)}.", "",
              "| block (seed) | gap, low | gap, high | change | paired test of the members, high vs low (same twin) |",
              "|---|---|---|---|---|"]
    for b in c["blocks"]:
        test = _block_cell({**b, "difference": b["change"]}) if b["shared_twin"] else "twins differ: no paired test"
        lines.append(f"| {b['block']} ({b['seed']}) | {b['gap_low']:+.1f} | {b['gap_high']:+.1f} | {b['change']:+.1f} "
                     f"| {test} |")
    corr = c.get("correlations") or {}
    found = [f"{axis}: {v['rho']:+.2f} (p {p_text(v['p'])})" for axis, v in corr.items() if v.get("rho") is not None]
    if found:
        lines += ["", "Spearman correlation of the trials' gaps with " + "; ".join(found) + "."]
    return lines + [""]


def _claim4(c: dict, s: dict) -> list[str]:
    margin = c["margin_points"]
    lines = [f"## Claim 4: {c['statement']} — {c['verdict']}", "", c["measure"] + ".", ""]
    for task, t in c["tasks"].items():
        first = t["blocks"][0]
        lines += [f"**{task}**: BERT-6 holds {first['parameters']['deep']:,} parameters and saw "
                  f"{first['tokens']['deep']:,} pre-training tokens; the committee of {first['matched_tokens']['members']} "
                  f"holds {first['parameters']['committee']:,} and saw as many tokens (matched tokens); the committee "
                  f"of {first['matched_parameters']['members']} holds at most BERT-6's parameters (matched parameters).",
                  ""]
        for matching in ("matched_tokens", "matched_parameters"):
            part = t[matching]
            if part["effect"] is None:
                lines += [f"- {matching.replace('_', ' ')}: not measured ({part['note']})."]
                continue
            lines += [f"- {matching.replace('_', ' ')} (committee of {part['members']}): {interval_text(part['effect'])} "
                      f"points, {part['verdict']} (margin +-{margin:g}){_note(part)}; blocks whose own bootstrap "
                      f"interval lies within the margin: {part['blocks_within_margin']} of {len(t['blocks'])}."]
        lines += ["", "| block | committee | BERT-6 | matched tokens (paired test) | matched parameters (paired test) |",
                  "|---|---|---|---|---|"]
        for b in t["blocks"]:
            lines.append(f"| {b['block']} | {b['committee']:.1f} | {b['deep']:.1f} | {_block_cell(b['matched_tokens'])} "
                         f"| {_block_cell(b['matched_parameters'])} |")
        lines.append("")
    lat = c["latency"]
    lines += [f"**Latency** ({lat['verdict']}): the committee as `committee predict` runs it (one packed forward of "
              "all members, then the soft vote) against BERT-6 through the same packed kernels and as Hugging Face "
              "runs it, on each block's own checkpoints, alternating request by request in one process (median ms "
              "per request; ratio = committee over the faster BERT-6):", "",
              "| block | batch | committee | BERT-6 packed | BERT-6 (HF) | ratio | threads | load average |",
              "|---|---|---|---|---|---|---|---|"]
    for b in lat["blocks"]:
        for batch, r in b["batches"].items():
            ms = r["latency"]
            lines.append(f"| {b['block']} | {batch} | {ms['committee_packed']['p50_ms']:.2f} | "
                         f"{ms['deep_packed_kernels']['p50_ms']:.2f} | {ms['deep_hf']['p50_ms']:.2f} | "
                         f"{r['ratio_p50']:.2f} | {b['threads']} | {b['load_average'][0]:.1f} |")
    lines += ["", "Over blocks: " + "; ".join(f"batch {batch}: {_ratio_text(r['ratio'])} ({r['verdict']})"
                                             for batch, r in lat["batches"].items()) + ".",
              "", f"![latency]({LATENCY_PNG})", ""]
    return lines


def _claim5(c: dict) -> list[str]:
    lines = [f"## Claim 5: {c['statement']} — {c['verdict']}", "", c["measure"] + ".", "",
             "| comparison | IPC | over blocks [95% CI] | verdict | per block: mean [95% CI over student seeds] |",
             "|---|---|---|---|---|"]
    for comp in c["comparisons"]:
        cells = "; ".join(f"{b['block']}: {_block_cell({**b, 'mcnemar_p': None})}" for b in comp["blocks"])
        lines.append(f"| {comp['comparison']} ({comp['a']} - {comp['b']}) | {comp['ipc']} | "
                     f"{interval_text(comp['effect'])} | {comp['verdict']}{_note(comp)} | {cells} |")
    return lines + [""]


def _setup_lines(s: dict) -> list[str]:
    tasks = "; ".join(f"{label} ({t['name']}): {t['train_per_class']} train / {t['val_per_class']} validation / "
                      f"{t['test_per_class'] or 'all'} test per class" for label, t in s["tasks"].items())
    return ["## Setup", "",
            f"- per block: {s['members']} BERT-1 members (hidden {s['hidden_size']}, {s['heads']} heads, vocabulary "
            f"{s['vocabulary']}), each pre-trained on {s['pretrain_tokens_per_member']:,} tokens from the first "
            f"{s['pretrain_articles']:,} Wikipedia articles of the seeded order; their scratch twins; BERT-"
            f"{s['deep_layers']} of the same width pre-trained on {s['deep_pretrain_tokens']:,} tokens (the "
            f"committee's); all fine-tuned for {s['finetune_epochs']} epochs",
            f"- tasks (pre-trained once on the first, then fine-tuned on each): {tasks}",
            f"- seed blocks: {s['seed_blocks']} (base seeds {', '.join(map(str, s['block_seeds']))})",
            f"- claim 2 sweep: {json.dumps(s['data_sweep'])}; claim 3 sweep: {json.dumps(s['overlap_sweep'])}",
            f"- claim 5: IPC {s['distill']['ipc']}, {s['distill']['student']['seeds']} students per set "
            f"({s['distill']['student']['init']} initialisation, {s['distill']['student']['steps']} steps)", ""]


def _hardware_lines(out: dict) -> list[str]:
    h = out["hardware"]
    precision = h.get("precision") or {}
    chosen = "; ".join(f"{phase}: " + ", ".join(f"{c['precision']} ({c['reason']})" for c in p.get("chosen", []))
                       for phase, p in precision.items())
    walls = [s.get("wall_s", 0.0) for s in out["steps"]]
    loads = [s["load_average_before"][0] for s in out["steps"] if s.get("load_average_before")]
    lines = ["## Hardware and time", "",
             f"- {h['cpu']} (family / model {h['cpu_family_model'] or 'not recorded'}), {h['cpu_cores']} cores, flags: "
             f"{', '.join(h['cpu_flags']) or 'none of AVX-512, AVX-512 BF16, AMX'}; GPUs: {', '.join(h['gpus']) or 'none'}; "
             f"torch {h['torch']}",
             f"- precision chosen by the members: {chosen or 'not recorded'}",
             f"- wall time of the steps: {sum(walls) / 60:.0f} minutes in all"
             + (f"; 1-minute load average at the start of each step {min(loads):.1f}-{max(loads):.1f} on "
                f"{h['cpu_cores']} cores (other jobs shared the machine when it exceeds the cores)" if loads else ""),
             "", "| step | claims | wall (min) | load average at start | load average at end |", "|---|---|---|---|---|"]
    for s in out["steps"]:
        before, after = s.get("load_average_before"), s.get("load_average_after")
        lines.append(f"| {s['id']} | {','.join(map(str, s['claims']))} | "
                     f"{s['wall_s'] / 60 if 'wall_s' in s else float('nan'):.1f} | "
                     f"{before[0] if before else '–'} | {after[0] if after else '–'} |")
    return lines + [""]


def _commands_lines(out: dict) -> list[str]:
    lines = ["## Commands", "", f"The whole suite: `{out['command']}` (its directory, `{SUITE}` below, is "
             f"runs/{out['suite']} unless `--run-dir` says otherwise; `committee claims --resume {SUITE}` continues "
             "it). Each step alone:", "", "```"]
    lines += [s["command"] for s in out["steps"]]
    return lines + ["```", ""]


def _method_lines(out: dict) -> list[str]:
    r = out["verdict_rules"]
    return ["## How the verdicts were reached", "", *[f"- {k.replace('_', ' ')}: {v}" for k, v in r.items()], ""]


# ----------------------------------------------------------------------------------------------
# plots


def plot_effects(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = effect_rows(out)
    margin = out["setup"]["margin_points"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    colours = {HOLDS: "tab:green", INCONCLUSIVE: "tab:grey"}
    for y, row in enumerate(reversed(rows)):
        e = row["effect"]
        ax.scatter(e["blocks"], [y] * len(e["blocks"]), s=14, color="k", alpha=0.5, zorder=3)
        if e.get("ci95"):
            ax.plot(e["ci95"], [y, y], color=colours.get(row["verdict"], "tab:red"), linewidth=3, zorder=2)
        if e.get("mean") is not None:
            ax.scatter([e["mean"]], [y], marker="D", color=colours.get(row["verdict"], "tab:red"), zorder=4)
        if row["kind"] == "equivalence":
            ax.plot([-margin, margin], [y, y], color="tab:blue", alpha=0.15, linewidth=12, zorder=1)
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in reversed(rows)], fontsize=8)
    ax.set_xlabel("effect, accuracy points\n(dots: blocks; diamond and bar: mean and 95% t interval over blocks; "
                  "green holds, red does not hold,\ngrey inconclusive; blue band: claim 4's equivalence margin)",
                  fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = out["claims"][3]["latency"]["batches"]
    fig, ax = plt.subplots(figsize=(6, 3))
    for x, (batch, b) in enumerate(batches.items()):
        r = b["ratio"]
        ax.scatter([x] * len(r["blocks"]), r["blocks"], color="k", s=14, alpha=0.5)
        if r.get("ci95"):
            ax.plot([x, x], r["ci95"], color="tab:green" if b["verdict"] == HOLDS else "tab:grey", linewidth=3)
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("committee / BERT-6 latency")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)



if __name__ == "__main__":
    import sys

    print("\n".join(verdict_table(json.loads(Path(sys.argv[1]).read_text()))))
