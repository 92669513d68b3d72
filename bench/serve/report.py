"""The served benchmark's statistics, targets and table (`committee serve RUN_DIR --bench`).

Ratios between the served models carry 95% bootstrap intervals: latency percentiles resample each
model's answered requests, throughput resamples its one-second windows, accuracy differences resample
the test texts paired (both models answered the same texts). A target is "met" when the whole interval
is on its side, "NOT met" when the whole interval is on the other side, else "inconclusive".
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP = 2000
SEED = 0


def _bootstrap_ratio(a: np.ndarray, b: np.ndarray, statistic, seed: int = SEED) -> list[float]:
    """95% interval of statistic(a) / statistic(b), a and b resampled independently."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not len(a) or not len(b):
        return [float("nan"), float("nan")]
    ratios = [statistic(a[rng.integers(0, len(a), len(a))]) / statistic(b[rng.integers(0, len(b), len(b))])
              for _ in range(BOOTSTRAP)]
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def percentile_ratio(a_s, b_s, q: float) -> dict:
    """p_q(a) / p_q(b) with its 95% bootstrap interval."""
    stat = (lambda x: np.percentile(x, q))
    a, b = np.asarray(a_s, dtype=np.float64), np.asarray(b_s, dtype=np.float64)
    value = float(stat(a) / stat(b)) if len(a) and len(b) else float("nan")
    return {"value": value, "ci95": _bootstrap_ratio(a, b, stat)}


def tail_ratio(latencies_s, q_tail: float = 99, q_mid: float = 50, seed: int = SEED) -> dict:
    """p99 / p50 of one model's latencies with its 95% bootstrap interval."""
    x = np.asarray(latencies_s, dtype=np.float64)
    rng = np.random.default_rng(seed)
    value = float(np.percentile(x, q_tail) / np.percentile(x, q_mid))
    draws = [np.percentile(s, q_tail) / np.percentile(s, q_mid)
             for s in (x[rng.integers(0, len(x), len(x))] for _ in range(BOOTSTRAP))]
    return {"value": value, "ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]}


def throughput_ratio(a_windows, b_windows) -> dict:
    """Mean answers per second of a over b (one-second windows), with its 95% bootstrap interval."""
    a, b = np.asarray(a_windows, dtype=np.float64), np.asarray(b_windows, dtype=np.float64)
    return {"value": float(a.mean() / b.mean()), "ci95": _bootstrap_ratio(a, b, np.mean)}


def paired_accuracy_difference(correct_a, correct_b, seed: int = SEED) -> dict:
    """Accuracy of a minus accuracy of b in points on the same texts, with a paired 95% bootstrap interval."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    diff = a - b
    rng = np.random.default_rng(seed)
    draws = [100 * diff[idx].mean() for idx in (rng.integers(0, len(diff), len(diff)) for _ in range(BOOTSTRAP))]
    return {"value": float(100 * diff.mean()), "ci95": [float(np.percentile(draws, 2.5)),
                                                        float(np.percentile(draws, 97.5))],
            "discordant": int((a != b).sum()), "n": len(a)}


def verdict(interval: list[float], op: str, target: float) -> str:
    """met / NOT met / inconclusive for `value op target` given the value's 95% interval."""
    low, high = interval
    if op == "<=":
        return "met" if high <= target else "NOT met" if low > target else "inconclusive"
    return "met" if low >= target else "NOT met" if high < target else "inconclusive"


def targets(r: dict) -> dict:
    """The issue's targets for the served committee on a 2-core CPU, each with its interval and verdict."""
    ratios = r["ratios"]
    rows = {
        "committee p50 / deep p50, concurrency 1": (ratios["p50_committee_over_deep_c1"], "<=", 0.4),
        "committee / deep throughput, concurrency 32": (ratios["throughput_committee_over_deep_c32"], ">=", 2.5),
        "committee p99 / p50, concurrency 32": (ratios["p99_over_p50_committee_c32"], "<=", 5.0),
        "cascade / committee throughput, concurrency 32": (ratios["throughput_cascade_over_committee_c32"], ">=", 1.5),
        "cascade accuracy loss on test, points": (r["accuracy"]["cascade_loss_points"], "<=", 0.3),
    }
    out = {name: {"value": v["value"], "ci95": v["ci95"], "target": f"{op} {t}", "verdict": verdict(v["ci95"], op, t)}
           for name, (v, op, t) in rows.items()}
    failed = r["failed_requests_closed_loop"]
    out["failed requests, closed loop (committee, cascade)"] = {
        "value": failed, "ci95": None, "target": "== 0", "verdict": "met" if failed == 0 else "NOT met"}
    return out


PROFILE_KEYS = ("proxy", "replica", "client", "total", "answer_wall")
PROFILE_LEVELS = ("closed c=1", "closed c=32")


def profile_rows(r: dict) -> list[tuple[str, str, dict]]:
    """(level, model, CPU ms per request by process) at concurrency 1 and 32: where a request's CPU goes; beside
    it `answer_wall`, the wall milliseconds per request inside the model's answer (tokenize, forward, vote: CPU
    when the replica has a core, waiting when other processes hold it)."""
    rows = []
    for level in r["levels"]:
        if level["label"] not in PROFILE_LEVELS:
            continue
        for model in r["models"]:
            replica = level["models"][model]["replica"]
            cpu = dict(replica.get("cpu_ms_per_request", {}))
            cpu["total"] = sum(cpu.get(k, 0.0) for k in ("proxy", "replica", "client"))
            cpu["answer_wall"] = replica.get("compute_ms_per_request", float("nan"))
            rows.append((level["label"], model, cpu))
    return rows


def _ci(ci) -> str:
    return "" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def format_table(r: dict) -> str:
    """The printed table: per model and load level, latency percentiles and throughput; then the targets."""
    m = r["machine"]
    run = r["run"]
    lines = [f"committee serve --bench: {run['dir']} ({run['members']} members of {run['member_layers']} "
             f"layer(s), hidden {run['hidden']}; deep model {run['deep_layers']} layers), served by Ray Serve "
             f"on {m['cpu']} ({m['cpu_cores']} cores), {r['settings']['torch_threads']} torch thread(s) per replica, "
             f"{r['settings'].get('num_replicas', 1)} replica(s) each; load from this process on the loopback "
             f"interface; machine load average "
             f"{m['load_average_1min']['start']:.1f} at the start, {m['load_average_1min']['end']:.1f} at the end",
             f"test accuracy (%): committee {r['accuracy']['committee']:.1f}, deep {r['accuracy']['deep']:.1f}, "
             f"cascade {r['accuracy']['cascade']:.1f} (threshold {r['cascade']['threshold']:.4f}; "
             f"{100 * r['accuracy']['cascade_early_exit_share']:.0f}% of test texts stop early)",
             f"Serve's floor (GET /healthz, concurrency 1): p50 {r['floor']['p50_ms']:.1f} ms", "",
             f"{'load':<14}{'model':<11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>9}{'ok':>7}"
             f"{'503':>6}{'failed':>7}{'texts/batch':>12}{'compute ms/batch':>17}"]
    for level in r["levels"]:
        for name in r["models"]:
            s = level["models"][name]
            lines.append(f"{level['label']:<14}{name:<11}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}"
                         f"{s['throughput_rps']:>9.1f}{s['ok']:>7}{s['rejected']:>6}{s['failed']:>7}"
                         f"{s['replica']['mean_batch_texts']:>12.1f}{s['replica']['compute_ms_per_batch']:>17.1f}")
    lines += ["", "CPU milliseconds per answered request (proxy: Serve's HTTP proxy; replica: the model's replica; "
                  "client: the load generator), and the wall milliseconds per request inside the model's answer"]
    for label, model, cpu in profile_rows(r):
        cells = "  ".join(f"{k} {cpu.get(k, float('nan')):.1f}" for k in PROFILE_KEYS)
        lines.append(f"   {label:<14}{model:<11}{cells}")
    lines += ["", "targets (a 2-core CPU; 95% bootstrap intervals):"]
    for name, t in r["targets"].items():
        value = f"{t['value']:.3f}" if isinstance(t["value"], float) else str(t["value"])
        lines.append(f"   {name:<52}{value:>9} {_ci(t['ci95']):>16}  target {t['target']:<7} {t['verdict']}")
    lines.append(f"wall time {r['wall_s']:.0f} s")
    return "\n".join(lines)


def markdown_tables(r: dict, name: str) -> str:
    """The two tables docs/performance.md shows for a committed result (`name`: its file name), each after a
    marker that tests/test_serve_bench.py finds: load levels x models, then the targets."""
    lines = [f"<!-- serve table: {name} -->", "",
             "| load | model | p50 ms | p95 ms | p99 ms | req/s | 503 + failed | texts per batch "
             "| compute ms per batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for level in r["levels"]:
        for model in r["models"]:
            s = level["models"][model]
            lines.append(f"| {level['label']} | {model} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} | "
                         f"{s['throughput_rps']:.1f} | {s['rejected'] + s['failed']} | "
                         f"{s['replica']['mean_batch_texts']:.1f} | {s['replica']['compute_ms_per_batch']:.1f} |")
    lines += ["", f"<!-- serve profile: {name} -->", "",
              "| load | model | proxy CPU | replica CPU | load generator CPU | total CPU | model's answer, wall |",
              "|---|---|---|---|---|---|---|"]
    for label, model, cpu in profile_rows(r):
        lines.append(f"| {label} | {model} | " + " | ".join(f"{cpu.get(k, float('nan')):.1f}" for k in PROFILE_KEYS)
                     + " |")
    lines += ["", f"<!-- serve targets: {name} -->", "", "| measure | target | value | 95% interval | verdict |",
              "|---|---|---|---|---|"]
    for measure, t in r["targets"].items():
        value = f"{t['value']:.2f}" if isinstance(t["value"], float) else str(t["value"])
        lines.append(f"| {measure} | {t['target']} | {value} | {_ci(t['ci95']) or '-'} | {t['verdict']} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.serve.report docs/serve_bench_X.json: the tables for the docs
    import json
    import sys
    from pathlib import Path

    for arg in sys.argv[1:]:
        print(markdown_tables(json.loads(Path(arg).read_text()), Path(arg).name) + "\n")
