"""The benchmark's output: the targets check, the printed table and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

WIDTH = 58  # the measure column


def targets(r: dict) -> dict:
    """The targets set for a 2-core CPU at the paper BERT-1 shape, with the measured values."""
    rows = {
        "pretrain.ratio": (r["pretrain"]["ratio"], ">=", 5.0),
        "pretrain.mfu": (r["pretrain"]["mfu"], ">=", 0.25),
        "finetune.ratio": (r["finetune"]["ratio"], ">=", 2.0),
        "latency.ratio_p50_batch1": (r["latency"]["ratio_p50_batch1"], "<=", 1.1),
    }
    if "projected_ratio_p50_batch1" in r["latency"]:
        rows["latency.projected_ratio_p50_batch1"] = (r["latency"]["projected_ratio_p50_batch1"], "<=", 0.35)
    if "scaling" in r:
        rows["scaling.ratio"] = (r["scaling"]["ratio"], ">=", 1.7)
    return {name: {"value": v, "target": f"{op} {t}", "met": bool(v >= t if op == ">=" else v <= t)}
            for name, (v, op, t) in rows.items()}


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _gflops(x: float) -> str:
    return f"{x / 1e9:,.0f}"


def _flops(loop: dict) -> str:
    return f"{loop['flops_per_s'] / 1e9:,.0f} ({loop['mfu']:.0%})"


def _row(label: str, *cells: str) -> str:
    return f"{'   ' + label:<{WIDTH}}" + "".join(f"{c:>12}" for c in cells)


def _ratio(x: float) -> str:
    return f"{x:>8.2f}x"


def _header(r: dict) -> list[str]:
    m, mach, pt, prec = r["model"], r["machine"], r["pretrain"], r["precision"]
    lines = [
        f"committee bench: model {m['name']} ({m.get('layers', 1)} layer(s), hidden {m['hidden']}, {m['heads']} heads, "
        f"vocab {m['vocab']:,}, seq {m['seq_len']}, batch {m['batch_size']}; member {m['member_parameters']:,} "
        f"parameters), device {mach['device']} ({mach['torch_threads']} torch threads)",
        f"machine: {mach['device_name']}, {mach['cpu_cores']} cores, torch {mach['torch']}",
        f"precision: {prec['why']}",
    ]
    peak = (f"matmul peak measured in this run (GFLOP/s): alone fp32 {_gflops(mach['peak_flops_fp32'])}, "
            f"bf16 {_gflops(mach['peak_flops_bf16'])}")
    if "peak_flops_in_rounds" in pt:
        used = ", ".join(f"{p} {_gflops(pt['peak_flops_used'][p])} ({pt['peak_source'][p]})" for p in ("fp32", "bf16"))
        peak += (f"; between the pre-training rounds fp32 {_gflops(pt['peak_flops_in_rounds']['fp32'])}, "
                 f"bf16 {_gflops(pt['peak_flops_in_rounds']['bf16'])}; shares use the higher: {used}")
    return lines + [peak]


def _pretrain(pt: dict) -> list[str]:
    lines = ["1. pre-training, real tokens/s (median of rounds)",
             _row(f"HF labels= {pt['reference']['precision']} pad-128 | member loop packed {pt['member']['precision']}",
                  _n(pt["reference"]["tokens_per_s"]), _n(pt["member"]["tokens_per_s"])) + _ratio(pt["ratio"])]
    if "member_fp32" in pt:
        lines.append(_row("... member loop in fp32", "", _n(pt["member_fp32"]["tokens_per_s"])) + _ratio(pt["ratio_fp32"]))
    lines += [_row("model GFLOP/s (share of peak of its precision)", _flops(pt["reference"]), _flops(pt["member"])),
              _row("masked share of maskable tokens", f"{pt['reference']['mask']['masked_share']:.3f}",
                   f"{pt['member']['mask']['masked_share']:.3f}")]
    return lines


def _finetune(ft: dict) -> list[str]:
    return [f"2. AG News, examples/s (pad-128 {ft.get('reference_precision', 'fp32')} | length buckets {ft['precision']})",
            _row("fine-tuning", _n(ft["reference_examples_per_s"]), _n(ft["project_examples_per_s"])) + _ratio(ft["ratio"]),
            _row("prediction", _n(ft["predict"]["reference_examples_per_s"]),
                 _n(ft["predict"]["project_examples_per_s"])) + _ratio(ft["predict"]["ratio"])]


def _latency(lat: dict) -> list[str]:
    lines = [f"3. committee latency, {lat['members']} members vs {lat['deep_layers']}-layer model, p50 / p95 ms"]
    for b in ("batch1", "batch32"):
        s = lat[b]
        deep = min(s["deep_hf"]["p50_ms"], s["deep_packed_kernels"]["p50_ms"])
        for name, label in (("members_one_by_one", "members one after another"), ("members_packed", "members packed"),
                            ("deep_hf", "deep model (HF)"), ("deep_packed_kernels", "deep model (packed kernels)")):
            ratio = _ratio(s[name]["p50_ms"] / deep) if name.startswith("members") else ""
            lines.append(_row(f"{b}, {label}", f"{s[name]['p50_ms']:.1f}", f"{s[name]['p95_ms']:.1f}") + ratio)
    if "ray" in lat:
        lines += _latency_ray(lat["ray"])
    return lines


def _latency_ray(ray_s: dict) -> list[str]:
    lines = [f"   through Ray, {ray_s['members']} members on {ray_s['workers']} one-core workers + vote; "
             "projection = slowest member + Ray overhead + vote"]
    for b in ("batch1", "batch32"):
        s = ray_s[b]
        for name, label in (("committee_e2e", f"committee on {ray_s['workers']} workers"),
                            ("deep_e2e", "deep model on 1 worker"), ("projected", "projected: 1 member per worker"),
                            ("overhead", "Ray round trip (measured)")):
            ratio = _ratio(s[name]["p50_ms"] / s["deep_e2e"]["p50_ms"]) if name in ("committee_e2e", "projected") else ""
            lines.append(_row(f"{b}, {label}", f"{s[name]['p50_ms']:.1f}", f"{s[name]['p95_ms']:.1f}") + ratio)
    return lines


def _scaling(sc: dict, memory: dict) -> list[str]:
    n = sc["workers"]
    return [f"4. scaling, member pre-training tokens/s, 1 -> {n} Ray workers of 1 CPU",
            _row("aggregate", _n(sc["tokens_per_s_1"]), _n(sc[f"tokens_per_s_{n}"])) + _ratio(sc["ratio"]),
            _row("CPU cores the workers actually got (others share them)", f"{sc['cores_received_1']:.2f}",
                 f"{sc[f'cores_received_{n}']:.2f}"),
            _row("tokens per CPU-second (per-core efficiency)", _n(sc["tokens_per_cpu_s_1"]),
                 _n(sc[f"tokens_per_cpu_s_{n}"])) + _ratio(sc["per_core_ratio"]),
            f"5. peak memory of one member actor: {memory['member_actor_peak_rss_mib']:,.0f} MiB"]


def _members_per_gpu(g: dict) -> list[str]:
    lines = [f"4. members per GPU ({g['members']}): tokens/s, {g['members']} in one process | fractional-GPU actors",
             _row("aggregate pre-training", _n(g["one_process_tokens_per_s"]),
                  _n(g["fractional_actors_tokens_per_s"])) + _ratio(g["ratio"]),
             f"   peak GPU memory of one member actor: {g['actor_peak_gpu_mib']:,.0f} MiB"]
    for b, s in g["serving"].items():
        for name, v in s.items():
            lines.append(_row(f"{b}, {name} p50 / p95 ms", f"{v['p50_ms']:.2f}", f"{v['p95_ms']:.2f}"))
    return lines


def _targets(r: dict) -> list[str]:
    lines = [f"targets (set for a 2-core CPU at the paper BERT-1 shape; this run: {r['machine']['device']}, "
             f"model {r['model']['name']}):"]
    for name, t in r["targets"].items():
        lines.append(f"   {name:<40}{t['value']:>8.3f}  target {t['target']:<8} {'met' if t['met'] else 'NOT met'}")
    return lines


def format_table(r: dict) -> str:
    lines = _header(r) + ["", f"{'measure':<{WIDTH}}{'reference':>12}{'project':>12}{'ratio':>9}"]
    lines += _pretrain(r["pretrain"]) + _finetune(r["finetune"]) + _latency(r["latency"])
    if "scaling" in r:
        lines += _scaling(r["scaling"], r["memory"])
    if "members_per_gpu" in r:
        lines += _members_per_gpu(r["members_per_gpu"])
    if "groups" in r:
        from bench.sections.groups import groups_table

        lines += groups_table(r["groups"], _row)
    lines += [""] + _targets(r) + [f"wall time {r['wall_s']:.0f} s"]
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    """The results as JSON, written to a temporary file and renamed (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    tmp.replace(path)
