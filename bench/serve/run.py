"""`committee serve RUN_DIR --bench`: the committee, the deep model and the cascade served side by side.

One Ray Serve instance on the loopback interface holds three applications of the same run, each one
replica with the same settings: `/committee` (every member, packed), `/deep` (the run's deep model
through the same packed forward) and `/cascade` (the committee with the confidence cascade, its
threshold chosen on the validation split). Then:
1. accuracy: every test text once through each application (requests of ACCURACY_BATCH texts); the
   served committee's labels are checked against `Committee.predict` on the same texts;
2. Serve's floor: `GET /healthz` back to back (the HTTP path without the model);
3. load: closed loop at concurrency 1, 8 and 32, then open loop at fixed rates (fractions of the
   committee's closed-loop throughput at 32, measured in the first round, the same for every model);
   rounds alternate the order of the models, so load from other processes weighs on all of them.
   Around every level the replica's counters (/metadata) give its batches and compute seconds.
Requests hold one real test text each, in a seeded order. The load generator (bench.serve.http_load) runs
in this process, on the same CPU as the servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.serve.http_load import LoadResult, closed_loop, open_loop, throughput_windows
from bench.serve.report import (
    format_table,
    paired_accuracy_difference,
    percentile_ratio,
    tail_ratio,
    targets,
    throughput_ratio,
)
from workers.errors import CommitteeError

MODELS = ("committee", "deep", "cascade")
CONCURRENCY = (1, 8, 32)
OPEN_FRACTIONS = (0.25, 0.5, 0.75)  # of the committee's closed-loop throughput at concurrency 32
ACCURACY_BATCH = 32  # texts per request in the accuracy pass
MAX_IN_FLIGHT = 512  # the open loop's bound (above the server's max_ongoing + max_queued defaults)
BENCH_THREADS = 1  # torch threads per replica unless --threads: the other core serves HTTP and the load


@dataclass(frozen=True)
class Sizes:
    duration_s: float  # measured seconds per model and level, per round
    warmup_s: float
    rounds: int
    floor_s: float


FULL = Sizes(duration_s=6.0, warmup_s=1.0, rounds=3, floor_s=4.0)
QUICK = Sizes(duration_s=1.0, warmup_s=0.3, rounds=1, floor_s=0.5)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def served_answers(url: str, texts: list[str], batch: int = ACCURACY_BATCH) -> list[dict]:
    """Every text's answer from the application at `url`, in requests of `batch` texts."""
    answers = []
    for start in range(0, len(texts), batch):
        answers += _post_json(f"{url}/predict", {"texts": texts[start:start + batch]})["predictions"]
    return answers


def accuracy_pass(urls: dict, committee, texts: list[str], labels: np.ndarray, echo) -> dict:
    """Test accuracy of each served model, the cascade's loss against the committee (paired), its early exits,
    and whether the served committee answers as `Committee.predict` does."""
    echo(f"accuracy: {len(texts)} test texts through each model")
    correct, out = {}, {}
    for name, url in urls.items():
        answers = served_answers(url, texts)
        predicted = np.array([a["label"] for a in answers])
        correct[name] = predicted == labels
        out[name] = 100 * float(correct[name].mean())
        if name == "committee":
            offline = committee.predict(texts).labels
            out["committee_equals_predict"] = float((predicted == offline).mean())
        if name == "cascade":
            used = np.array([a["members_used"] for a in answers])
            out["cascade_early_exit_share"] = float((used < len(committee)).mean())
            out["cascade_mean_members"] = float(used.mean())
    loss = paired_accuracy_difference(correct["committee"], correct["cascade"])
    out["cascade_loss_points"] = loss
    out["committee_minus_deep_points"] = paired_accuracy_difference(correct["committee"], correct["deep"])
    out["test_texts"] = len(texts)
    return out


def _counters(url: str) -> dict:
    return _get_json(f"{url}/metadata")["counters"]


def _replica_delta(before: dict, after: dict) -> dict:
    batches = after["batches"] - before["batches"]
    texts = after["texts"] - before["texts"]
    compute = after["compute_s"] - before["compute_s"]
    used = np.subtract(after["members_used"], before["members_used"])
    return {"batches": batches, "texts": texts, "compute_s": compute,
            "mean_batch_texts": texts / batches if batches else 0.0,
            "compute_ms_per_batch": 1e3 * compute / batches if batches else 0.0,
            "early_exit_share": float(used[:-1].sum() / max(used.sum(), 1))}


def _descendants(root: int) -> list[int]:
    """Every process below `root` (Ray's workers run under the raylet this process started), from /proc."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def serve_processes(apps) -> dict[str, int]:
    """The pid of Serve's HTTP proxy ("proxy") and of each application's replica (its name) in this session,
    found by their process titles (`ray::ProxyActor...`, `ray::ServeReplica:APP:...`); {} off Linux."""
    if not Path("/proc").is_dir():
        return {}
    pids = {}
    for pid in _descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::ProxyActor"):
            pids["proxy"] = pid
        for app in apps:
            if title.startswith(f"ray::ServeReplica:{app}:"):
                pids[app] = pid
    return pids


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of a process so far; this process's own when pid is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_snapshot(pids: dict[str, int], app: str) -> dict[str, float]:
    snapshot = {"client": _cpu_s(None)}
    for role, pid in (("proxy", pids.get("proxy")), ("replica", pids.get(app))):
        if pid is not None:
            try:
                snapshot[role] = _cpu_s(pid)
            except OSError:  # the process ended (a replica restarted)
                pass
    return snapshot


def _measure(url: str, bodies: list[bytes], level: dict, sizes: Sizes, seed: int,
             pids: dict[str, int], app: str) -> tuple[LoadResult, dict]:
    before, cpu_before = _counters(url), _cpu_snapshot(pids, app)
    if level["kind"] == "closed":
        coro = closed_loop(f"{url}/predict", bodies, level["concurrency"], sizes.duration_s, sizes.warmup_s)
    else:
        coro = open_loop(f"{url}/predict", bodies, level["rate_rps"], sizes.duration_s, sizes.warmup_s, seed,
                         MAX_IN_FLIGHT)
    result = asyncio.run(coro)
    cpu_after = _cpu_snapshot(pids, app)
    delta = _replica_delta(before, _counters(url))
    delta["cpu_s"] = {role: cpu_after[role] - cpu_before[role] for role in cpu_before if role in cpu_after}
    delta["answered_all"] = result.answered_all
    return result, delta


def _merge(results: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for r in results:
        merged.latencies_s += r.latencies_s
        merged.rejected += r.rejected
        merged.failed += r.failed
        merged.shed += r.shed
        merged.window_s += r.window_s
        for k, v in r.statuses.items():
            merged.statuses[k] = merged.statuses.get(k, 0) + v
    return merged


def _sum_deltas(deltas: list[dict]) -> dict:
    """The replica's counters over every round of a level, and CPU milliseconds per answered request of the
    proxy, the replica (its compute inside) and the load generator."""
    batches = sum(d["batches"] for d in deltas)
    texts = sum(d["texts"] for d in deltas)
    compute = sum(d["compute_s"] for d in deltas)
    exits = [d["early_exit_share"] * d["texts"] for d in deltas]
    answered = sum(d["answered_all"] for d in deltas)
    roles = set.intersection(*(set(d["cpu_s"]) for d in deltas)) if deltas else set()
    cpu_ms = {role: 1e3 * sum(d["cpu_s"][role] for d in deltas) / answered if answered else 0.0
              for role in sorted(roles)}
    return {"batches": batches, "texts": texts, "compute_s": compute,
            "mean_batch_texts": texts / batches if batches else 0.0,
            "compute_ms_per_batch": 1e3 * compute / batches if batches else 0.0,
            "compute_ms_per_request": 1e3 * compute / answered if answered else 0.0,
            "early_exit_share": sum(exits) / texts if texts else 0.0,
            "cpu_ms_per_request": cpu_ms}


def run_levels(urls: dict, bodies: list[bytes], sizes: Sizes, echo) -> tuple[list[dict], list[float]]:
    """Every level for every model, `sizes.rounds` times, the models' order alternating; results pooled.
    Around every level: the replica's counters, and the CPU seconds of Serve's proxy, the model's replica
    and this process (the load generator)."""
    pids = serve_processes(list(urls))
    levels = [{"kind": "closed", "concurrency": c, "label": f"closed c={c}"} for c in CONCURRENCY]
    raw = {}  # (level index, model) -> [(LoadResult, replica delta)]
    rates: list[float] = []
    for rnd in range(sizes.rounds):
        for li, level in enumerate(levels):
            order = list(urls) if (rnd + li) % 2 == 0 else list(urls)[::-1]
            for name in order:
                result, delta = _measure(urls[name], bodies, level, sizes, 1000 * rnd + li, pids, name)
                raw.setdefault((li, name), []).append((result, delta))
                echo(f"  round {rnd + 1}/{sizes.rounds} {level['label']:<14} {name:<10} "
                     f"p50 {1e3 * np.median(result.latencies_s) if result.ok else float('nan'):7.1f} ms, "
                     f"{result.throughput:6.1f} req/s, {result.rejected} rejected, {result.failed} failed")
            if rnd == 0 and level["kind"] == "closed" and level["concurrency"] == max(CONCURRENCY):
                peak = raw[(li, "committee")][0][0].throughput
                rates = [round(f * peak, 1) for f in OPEN_FRACTIONS]
                levels += [{"kind": "open", "rate_rps": r, "label": f"open {r:g}/s"} for r in rates]
    pooled = []
    for li, level in enumerate(levels):
        models = {}
        for name in urls:
            results = [r for r, _ in raw[(li, name)]]
            merged = _merge(results)
            windows = np.concatenate([throughput_windows(r) for r in results])
            models[name] = {**merged.summary(), "throughput_rps": float(np.mean([r.throughput for r in results])),
                            "throughput_windows": windows.tolist(),
                            "latencies_ms": [1e3 * x for x in merged.latencies_s],
                            "replica": _sum_deltas([d for _, d in raw[(li, name)]])}
        pooled.append({**level, "models": models})
    return pooled, rates


def floor_latency(url: str, sizes: Sizes) -> dict:
    """GET /healthz back to back: the HTTP path through Serve's proxy and the replica, without the model."""
    import aiohttp

    async def run():
        lat = []
        async with aiohttp.ClientSession() as session:
            deadline = time.perf_counter() + sizes.floor_s
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.get(f"{url}/healthz") as response:
                    await response.read()
                lat.append(time.perf_counter() - t0)
        return lat

    lat_ms = 1e3 * np.asarray(asyncio.run(run()))
    return {"requests": len(lat_ms), "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99))}


def _level(levels: list[dict], label: str) -> dict:
    return next(level for level in levels if level["label"] == label)


def ratios(levels: list[dict]) -> dict:
    c1, c32 = _level(levels, "closed c=1")["models"], _level(levels, "closed c=32")["models"]
    return {
        "p50_committee_over_deep_c1": percentile_ratio(c1["committee"]["latencies_ms"], c1["deep"]["latencies_ms"], 50),
        "throughput_committee_over_deep_c32": throughput_ratio(c32["committee"]["throughput_windows"],
                                                               c32["deep"]["throughput_windows"]),
        "p99_over_p50_committee_c32": tail_ratio(c32["committee"]["latencies_ms"]),
        "throughput_cascade_over_committee_c32": throughput_ratio(c32["cascade"]["throughput_windows"],
                                                                  c32["committee"]["throughput_windows"]),
        "p50_cascade_over_committee_c1": percentile_ratio(c1["cascade"]["latencies_ms"],
                                                          c1["committee"]["latencies_ms"], 50),
    }


def _request_bodies(texts: list[str], seed: int, count: int = 2000) -> list[bytes]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))[:count]
    return [json.dumps({"texts": [texts[i]]}).encode() for i in order]


def _run_facts(committee, deep) -> dict:
    first = committee.members[0].config
    return {"members": len(committee), "member_layers": int(first.num_hidden_layers), "hidden": int(first.hidden_size),
            "heads": int(first.num_attention_heads), "vocab": int(first.vocab_size),
            "deep_layers": int(deep.members[0].config.num_hidden_layers),
            "member_val_accuracy": committee.val_accuracy.tolist(), "deep_val_accuracy": float(deep.val_accuracy[0])}


def without_latencies(result: dict) -> dict:
    """The results without every request's latency (kept in memory for the intervals; the JSON holds the
    percentiles and the one-second throughput windows)."""
    levels = [{**level, "models": {name: {k: v for k, v in s.items() if k != "latencies_ms"}
                                   for name, s in level["models"].items()}} for level in result["levels"]]
    return {**result, "levels": levels}


def bench_served(run_dir: Path, values: dict, settings, max_loss_points: float, json_path: Path | None, quick: bool,
                 echo) -> dict:
    """The benchmark (see the module docstring); prints the table, writes the JSON when asked, returns it."""
    import torch

    from orchestrator.run.prepare import load_cfg_task
    from orchestrator.run.rundir import read_finished
    from orchestrator.serve.driver import AppSpec, calibrate_cascade, cpus_for, deploy, free_port, serve_session
    from orchestrator.serve.runs import load_served
    from orchestrator.serve.settings import app_args
    from workers.model.precision import cpu_model, native_bf16, probe

    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]  # other processes on the machine: the figures are read with it
    sizes = QUICK if quick else FULL
    run = read_finished(run_dir)
    if not run.config.deep.enabled:
        raise CommitteeError(f"{run_dir} has no deep model (deep.enabled: false): the benchmark serves the "
                             f"committee beside it; run the config with deep.enabled=true")
    if values.get("cascade_threshold") is not None:
        raise CommitteeError("committee serve --bench chooses the cascade's threshold itself; leave out "
                             "--cascade-threshold")
    values = {**values, "threads_per_replica": values.get("threads_per_replica") or BENCH_THREADS}
    splits = load_cfg_task(run.config)
    committee, deep = load_served(run_dir, "committee"), load_served(run_dir, "deep")
    echo("choosing the cascade's threshold on the validation split")
    calibration = calibrate_cascade(run_dir, max_loss_points, committee, splits)
    args = {"committee": app_args(run_dir=str(run_dir.resolve()), **values),
            "deep": app_args(run_dir=str(run_dir.resolve()), **{**values, "model": "deep", "rule": "soft"}),
            "cascade": app_args(run_dir=str(run_dir.resolve()), **{**values, "rule": "soft",
                                                                    "cascade_threshold": calibration.threshold,
                                                                    "calibration": calibration.as_dict()})}
    host, port = "127.0.0.1", free_port()
    apps = [AppSpec(name, f"/{name}", args[name], settings) for name in MODELS]
    with serve_session(host, port, num_cpus=cpus_for(apps)) as deployed:
        echo(f"deploying {', '.join('/' + name for name in MODELS)} ({settings.replicas} replica(s) each)")
        urls = deploy(deployed, apps, host, port)
        accuracy = accuracy_pass(urls, committee, splits.test_texts, splits.test_labels, echo)
        floor = floor_latency(urls["committee"], sizes)
        echo(f"Serve's floor: GET /healthz p50 {floor['p50_ms']:.1f} ms")
        levels, rates = run_levels(urls, _request_bodies(splits.test_texts, seed=0), sizes, echo)
    failed = sum(level["models"][m]["failed"] + level["models"][m]["rejected"]
                 for level in levels if level["kind"] == "closed" for m in ("committee", "cascade"))
    result = {
        "command": "committee serve RUN_DIR --bench" + (" --quick" if quick else ""),
        "machine": {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "device": "cpu",
                    "hardware": native_bf16(probe("cpu"))[1], "torch": torch.__version__,
                    "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]}},
        "run": {"dir": run_dir.name, "name": run.config.name, "task": run.config.task.name,
                "pretrain_steps": run.config.pretrain.max_steps, **_run_facts(committee, deep)},
        "models": list(MODELS),
        "settings": {"torch_threads": values["threads_per_replica"],
                     "max_batch_texts": args["committee"].max_batch_texts,
                     "batch_wait_ms": args["committee"].batch_wait_ms, **settings.serve_options(),
                     "texts_per_request": 1, "duration_s": sizes.duration_s, "warmup_s": sizes.warmup_s,
                     "rounds": sizes.rounds, "open_loop_rates_rps": rates},
        "cascade": calibration.as_dict(),
        "accuracy": accuracy,
        "floor": floor,
        "levels": levels,
        "failed_requests_closed_loop": int(failed),
    }
    result["ratios"] = ratios(levels)
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - t0
    echo(format_table(result))
    if json_path is not None:
        from bench.report import write_json

        write_json(without_latencies(result), json_path)
        echo(f"wrote {json_path}")
    return result
