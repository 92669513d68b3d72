"""Section 4 on CPU, through Ray: member pre-training in 1 and N worker processes of 1 CPU, a member
actor's peak memory, and the committee served by one-core workers (members spread over them) against
the deep model on one worker, with the projection to one member per worker."""

from __future__ import annotations

import time

import numpy as np
import ray

from bench.actors import BenchWorker
from bench.options import BATCH_SIZE, NUM_LABELS, BenchOptions, Sizes, pretrain_settings
from bench.prepare import Prepared
from bench.serving import latency_requests, soft_vote
from bench.timing import latency_ms, median

WARMUP_REQUESTS = 2


def _scaling_rounds(workers: list, sizes: Sizes) -> dict[str, dict[str, list[float]]]:
    """Rounds alternating 1 worker and all of them (ABBA order): tokens/s, cores received, tokens per CPU second."""
    n = len(workers)
    rows = {what: {"1": [], str(n): []} for what in ("tokens_per_s", "cores", "tokens_per_cpu_s")}
    for r in range(sizes.scaling_rounds * 2):
        group = workers[:1] if (r % 2 == 0) == (r // 2 % 2 == 0) else workers
        t0 = time.perf_counter()
        done = ray.get([w.pretrain_steps.remote(sizes.scaling_steps) for w in group])
        wall = time.perf_counter() - t0
        tokens, cpu_s = sum(d[0] for d in done), sum(d[2] for d in done)
        key = str(len(group))
        rows["tokens_per_s"][key].append(tokens / wall)
        rows["cores"][key].append(cpu_s / wall)  # CPU seconds the workers got per wall second
        rows["tokens_per_cpu_s"][key].append(tokens / max(cpu_s, 1e-9))
    return rows


def bench_scaling(workers: list, p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> tuple[dict, dict]:
    """(scaling, memory): member pre-training in 1 and N workers, and the actors' peak resident memory."""
    n = len(workers)
    blocks = ray.put(p.packed)
    train_cfg = p.train_config.to_dict()
    ray.get([w.setup_pretrain.remote(train_cfg, blocks, p.special, pretrain_settings(opts, opts.precision, opts.seed + i))
             for i, w in enumerate(workers)])
    echo(f"scaling: member pre-training in 1 and {n} Ray worker processes of 1 CPU each")
    ray.get([w.pretrain_steps.remote(1) for w in workers])  # warm-up
    rows = _scaling_rounds(workers, sizes)
    rates, cores, per_cpu = rows["tokens_per_s"], rows["cores"], rows["tokens_per_cpu_s"]
    scaling = {"workers": n, "steps_per_round": sizes.scaling_steps,
               "tokens_per_s_1": median(rates["1"]), f"tokens_per_s_{n}": median(rates[str(n)]),
               "rounds": rates, "ratio": median(rates[str(n)]) / median(rates["1"]), "precision": opts.precision,
               "cores_received_1": median(cores["1"]), f"cores_received_{n}": median(cores[str(n)]),
               "tokens_per_cpu_s_1": median(per_cpu["1"]), f"tokens_per_cpu_s_{n}": median(per_cpu[str(n)]),
               "per_core_ratio": median(per_cpu[str(n)]) / median(per_cpu["1"])}
    memory = {"member_actor_peak_rss_mib": max(ray.get([w.peak_rss_mib.remote() for w in workers])),
              "what": "peak resident memory of a 1-CPU member actor after pre-training steps (model, AdamW state, "
                      "activations, torch and transformers)"}
    return scaling, memory


def _serve_once(workers: list, ids, mask) -> dict:
    """One request to the committee: end-to-end, vote, Ray overhead, slowest member, and the projection."""
    t0 = time.perf_counter()
    answers = ray.get([w.infer.remote(ids, mask) for w in workers])
    t_vote = time.perf_counter()
    soft_vote(np.concatenate([logits for logits, _ in answers]))
    vote = time.perf_counter() - t_vote
    e2e = time.perf_counter() - t0
    busiest = max(sum(times) for _, times in answers)
    slowest = max(max(times) for _, times in answers)
    overhead = max(0.0, e2e - vote - busiest)
    return {"committee_e2e": e2e, "vote": vote, "overhead": overhead, "slowest_member": slowest,
            "projected": slowest + overhead + vote}


def _serve_deep(worker, ids, mask) -> float:
    t0 = time.perf_counter()
    ray.get(worker.infer_deep.remote(ids, mask))
    return time.perf_counter() - t0


def bench_serving(workers: list, p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    """Worker i holds members i, i + n, ...; worker 0 also holds the deep model; requests alternate the two."""
    k, n = opts.members, len(workers)
    cfg, deep_cfg = p.member_config.to_dict(), p.deep_config.to_dict()
    ray.get([w.load_classifiers.remote(cfg, list(range(i, k, n)), NUM_LABELS, deep_cfg if i == 0 else None)
             for i, w in enumerate(workers)])
    serving: dict = {"members": k, "workers": n}
    for batch, count in ((1, sizes.latency_requests_b1), (BATCH_SIZE, sizes.latency_requests_b32)):
        echo(f"committee through Ray: {k} members on {n} workers, batch {batch}, {count} requests")
        requests = latency_requests(p.test, batch, count, p.special.pad, opts.seed, f"ray/{batch}")
        rows: dict[str, list[float]] = {name: [] for name in
                                        ("committee_e2e", "deep_e2e", "projected", "overhead", "vote", "slowest_member")}
        warmup = requests[:WARMUP_REQUESTS]  # served first and not counted
        for r, (ids, mask) in enumerate([*warmup, *requests]):
            for what in (("committee", "deep") if r % 2 == 0 else ("deep", "committee")):
                timed = {"deep_e2e": _serve_deep(workers[0], ids, mask)} if what == "deep" else _serve_once(workers, ids, mask)
                if r >= len(warmup):
                    for name, seconds in timed.items():
                        rows[name].append(seconds)
        stats = {name: latency_ms(v) for name, v in rows.items()}
        serving[f"batch{batch}"] = stats
        serving[f"projected_ratio_p50_batch{batch}"] = stats["projected"]["p50_ms"] / stats["deep_e2e"]["p50_ms"]
        serving[f"measured_ratio_p50_batch{batch}"] = stats["committee_e2e"]["p50_ms"] / stats["deep_e2e"]["p50_ms"]
    return serving


def bench_ray_cpu(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> tuple[dict, dict, dict]:
    """(scaling, memory, serving) on `opts.workers` one-CPU worker processes (Ray must be connected)."""
    workers = [BenchWorker.options(num_cpus=1).remote(1, "cpu") for _ in range(opts.workers)]
    try:
        scaling, memory = bench_scaling(workers, p, opts, sizes, echo)
        serving = bench_serving(workers, p, opts, sizes, echo)
    finally:
        for w in workers:
            ray.kill(w)
    return scaling, memory, serving
