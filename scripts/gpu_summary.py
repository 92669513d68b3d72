"""The tables of one scripts/gpu_check.sh session, as markdown on stdout.

python scripts/gpu_summary.py OUT RUNS PARTS_FILE
- the parts: exit status and seconds (124: stopped at its time limit);
- members per GPU (OUT/groups.json, scripts/gpu_groups.py): per shape, a row per K, a column per side,
  aggregate tokens/s in millions with the share of the bf16 peak, then peak GPU memory per side;
- the committee runs (RUNS/<name>/report.json): wall time, members per actor, pre-training throughput,
  the committees' soft-vote test accuracy and the deep model's;
- compiled against eager (OUT/compile_check.json, scripts/gpu_compile_check.py).
Anything missing (a part that did not run or did not finish) is said so, not left out.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SIDES = ("alone", "alone, compiled", "fractional", "stack", "stack, compiled")


def parts_table(parts_file: Path) -> list[str]:
    lines = ["## Parts", "", "| part | exit | seconds |", "|---|---|---|"]
    if not parts_file.is_file():
        return lines + ["| (no part ran) | | |"]
    for line in parts_file.read_text().splitlines():
        name, rc, seconds = (line.split() + ["", "", ""])[:3]
        lines.append(f"| {name} | {rc}{' (time limit)' if rc == '124' else ''} | {seconds} |")
    return lines


def _cell(row: dict | None) -> str:
    if row is None:
        return ""
    if "skipped" in row:
        return "skipped"
    share = "" if row.get("bf16_peak_share") is None else f" ({row['bf16_peak_share']:.0%})"
    return f"{row['tokens_per_s'] / 1e6:.2f} M{share}"


def _memory(row: dict | None) -> str:
    if row is None or "skipped" in row or row.get("peak_gpu_mib") is None:
        return ""
    return f"{row['peak_gpu_mib'] / 1024:.1f}"


def groups_tables(path: Path) -> list[str]:
    if not path.is_file():
        return ["## Members per GPU", "", f"no {path.name}: the part did not finish (see check.log)"]
    result = json.loads(path.read_text())
    g = result["groups"]
    lines = ["## Members per GPU", "",
             f"{result['machine'].get('device_name', result['machine'].get('device'))}, precision {g['precision']}, "
             f"{g['rounds']} rounds of {g['steps_per_round']} steps after a warm-up round, section wall "
             f"{g['wall_s']:.0f} s. Aggregate real tokens/s (share of the bf16 matmul peak); then peak GPU memory "
             f"(GiB; fractional: summed over the actors, CUDA contexts not counted)."]
    skipped = []
    for shape in dict.fromkeys(r["shape"] for r in g["rows"]):
        rows = [r for r in g["rows"] if r["shape"] == shape]
        by = {(r["members"], r["side"]): r for r in rows}
        lines += ["", f"### {shape}", "", "| K | " + " | ".join(SIDES) + " | memory: " + " | ".join(SIDES) + " |",
                  "|---" * (1 + 2 * len(SIDES)) + "|"]
        for k in sorted({r["members"] for r in rows}):
            cells = [_cell(by.get((k, side))) for side in SIDES] + [_memory(by.get((k, side))) for side in SIDES]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        skipped += [f"- {shape}, K = {r['members']}, {r['side']}: {r['skipped']}" for r in rows if "skipped" in r]
        warm = [f"{r['side']} K = {r['members']}: {r['warmup_s']:.0f} s" for r in rows
                if "compiled" in r["side"] and "warmup_s" in r]
        if warm:
            lines += ["", "Warm-up rounds of the compiled sides (compilation included): " + "; ".join(warm)]
    if skipped:
        lines += ["", "Skipped rows:", *skipped]
    return lines


def _members_per_actor(runs: Path, name: str) -> str:
    """The run's resources.members_per_actor and GPU share per member (its config.yaml), with what `auto` chose
    and the placement (its log)."""
    import yaml

    config_file = runs / name / "config.yaml"
    text = (runs / f"{name}.log").read_text(errors="replace") if (runs / f"{name}.log").is_file() else ""
    said = [line.strip() for line in re.findall(r"(members per actor: .*|placement \(.*)", text)]
    if not config_file.is_file():
        return "; ".join(said)
    resources = (yaml.safe_load(config_file.read_text()) or {}).get("resources", {})
    setting = f"{resources.get('members_per_actor', 1)} (GPU share {resources.get('gpus_per_member', 0)} per member)"
    return "; ".join([setting] + said)


def runs_table(runs: Path) -> list[str]:
    lines = ["## Committee runs (through Ray on the GPU)", "",
             "| run | wall s | members per actor | pre-train tokens/s per member | tokens per member | "
             "committee soft % | scratch soft % | deep % | precision |", "|---" * 9 + "|"]
    logs = sorted(runs.glob("*.log")) if runs.is_dir() else []
    if not logs:
        return lines + ["| (no run) | | | | | | | | |"]
    for log in logs:
        name = log.stem
        report_file = runs / name / "report.json"
        if not report_file.is_file():
            lines.append(f"| {name} | no report (see {name}.log in runs.tar.gz) | {_members_per_actor(runs, name)} "
                         f"| | | | | | |")
            continue
        r = json.loads(report_file.read_text())
        t = r["timing"]
        deep = "" if not r.get("deep") else f"{100 * r['deep']['test_accuracy']:.1f} ({r['deep']['layers']} layers)"
        chosen = ", ".join(c["precision"] for c in r["precision"]["pretrain"]["chosen"]) if r.get("precision") else ""
        scratch = r.get("scratch_committee") or {}
        lines.append(
            f"| {name} | {t['wall_s']:.0f} | {_members_per_actor(runs, name)} | {t['pretrain_tokens_per_s']:,.0f} | "
            f"{t['pretrain_tokens_per_member'] / 1e6:.3g} M | {100 * r['committee']['soft']['test_accuracy']:.1f} | "
            f"{100 * scratch['soft']['test_accuracy'] if scratch else float('nan'):.1f} | {deep} | {chosen} |")
    return lines


def compile_lines(path: Path) -> list[str]:
    lines = ["## Compiled against eager (fp32, dropout on)", ""]
    if not path.is_file():
        return lines + [f"no {path.name}: the part did not run or did not finish"]
    result = json.loads(path.read_text())
    for name in ("member_loop", "group_of_3"):
        r = result.get(name)
        if r is None:
            lines.append(f"- {name.replace('_', ' ')}: not measured (the part stopped before it)")
            continue
        lines.append(f"- {name.replace('_', ' ')} on {result['device']} ({result['backend']}, {result['steps']} steps): "
                     f"largest relative difference of the loss curves {r['max_relative_difference']:.1e}; compiled run "
                     f"{r['compiled_s']:.0f} s, compilation included")
    return lines


def main(argv: list[str]) -> None:
    out, runs, parts_file = Path(argv[0]), Path(argv[1]), Path(argv[2])
    lines = ["# GPU check", ""] + parts_table(parts_file) + [""] + groups_tables(out / "groups.json") + [""]
    lines += runs_table(runs) + [""] + compile_lines(out / "compile_check.json")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
