"""Section 4 on CUDA: members per GPU. K fractional-GPU Ray actors pre-training at once against K
members trained in turn in this process; and K one-member actors answering a request against the
packed committee in this process."""

from __future__ import annotations

import time

import numpy as np
import ray
import torch

from bench.actors import BenchWorker
from bench.loops import PretrainLoop, seeded_mlm
from bench.options import BATCH_SIZE, NUM_LABELS, BenchOptions, Sizes, pretrain_settings
from bench.prepare import Prepared
from bench.serving import committee_members, latency_requests, soft_vote
from bench.timing import latency_ms, median, sync
from workers.model.packed import PackedCommittee

WARMUP_REQUESTS = 2


def _actors(opts: BenchOptions) -> list:
    gpus = 1 / opts.members if opts.device == "cuda" else 0  # cpu: only to exercise this code path without a GPU
    return [BenchWorker.options(num_cpus=1, num_gpus=gpus).remote(1, opts.device) for _ in range(opts.members)]


def _process_loops(p: Prepared, opts: BenchOptions) -> list[PretrainLoop]:
    """K member loops in this process, member i with seed `opts.seed + i` (as the actors)."""
    loops = []
    for i in range(opts.members):
        settings = pretrain_settings(opts, opts.precision, opts.seed + i)
        model = seeded_mlm(p.member_config, settings.seed, opts.device)
        loops.append(PretrainLoop(f"m{i}", model, p.packed, p.special, settings, False, opts.device))
    return loops


def _sharing_rounds(actors: list, loops: list, steps: int, rounds: int, device: str) -> tuple[list, list]:
    """Aggregate tokens/s of every round: the actors all at once, and this process's loops in turn."""
    actor_rates, process_rates = [], []
    for r in range(rounds):
        for what in (("actors", "process") if r % 2 == 0 else ("process", "actors")):
            t0 = time.perf_counter()
            if what == "actors":
                tokens = sum(d[0] for d in ray.get([a.pretrain_steps.remote(steps) for a in actors]))
                actor_rates.append(tokens / (time.perf_counter() - t0))
            else:
                tokens = sum(lp.step() for _ in range(steps) for lp in loops)
                sync(device)
                process_rates.append(tokens / (time.perf_counter() - t0))
    return actor_rates, process_rates


def bench_sharing(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    """Pre-training: K fractional-GPU actors against K members in one process."""
    k = opts.members
    steps = max(2, sizes.pretrain_steps * 2)
    echo(f"members per GPU: {k} fractional-GPU actors (num_gpus={1 / k if opts.device == 'cuda' else 0:.3f}) "
         f"against {k} members in one process")
    actors, loops = _actors(opts), []
    try:
        blocks, cfg = ray.put(p.packed), p.member_config.to_dict()
        ray.get([a.setup_pretrain.remote(cfg, blocks, p.special, pretrain_settings(opts, opts.precision, opts.seed + i))
                 for i, a in enumerate(actors)])
        ray.get([a.pretrain_steps.remote(1) for a in actors])  # warm-up
        loops = _process_loops(p, opts)
        for lp in loops:
            lp.step()
        actor_rates, process_rates = _sharing_rounds(actors, loops, steps, max(2, sizes.pretrain_rounds), opts.device)
        gpu_mib = ray.get([a.peak_gpu_mib.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    del loops
    if opts.device == "cuda":
        torch.cuda.empty_cache()
    return {"members": k, "steps_per_round": steps,
            "fractional_actors_tokens_per_s": median(actor_rates), "one_process_tokens_per_s": median(process_rates),
            "ratio": median(actor_rates) / median(process_rates), "actor_peak_gpu_mib": max(gpu_mib)}


def _serving_rows(actors: list, packed, requests: list, device: str) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"actors_e2e": [], "packed": [], "deep_actor_e2e": []}
    warmup = requests[:WARMUP_REQUESTS]  # served first and not counted
    for r, (ids, mask) in enumerate([*warmup, *requests]):
        t0 = time.perf_counter()
        answers = ray.get([a.infer.remote(ids, mask) for a in actors])
        soft_vote(np.concatenate([logits for logits, _ in answers]))
        t1 = time.perf_counter()
        with torch.no_grad():
            soft_vote(packed(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)).cpu().numpy())
        sync(device)
        t2 = time.perf_counter()
        ray.get(actors[0].infer_deep.remote(ids, mask))
        t3 = time.perf_counter()
        if r >= len(warmup):
            rows["actors_e2e"].append(t1 - t0)
            rows["packed"].append(t2 - t1)
            rows["deep_actor_e2e"].append(t3 - t2)
    return rows


def bench_gpu_serving(p: Prepared, opts: BenchOptions, sizes: Sizes) -> dict:
    """Serving: K one-member fractional actors through Ray against the packed committee in one process."""
    actors = _actors(opts)
    try:
        cfg, deep_cfg = p.member_config.to_dict(), p.deep_config.to_dict()
        ray.get([a.load_classifiers.remote(cfg, [i], NUM_LABELS, deep_cfg if i == 0 else None)
                 for i, a in enumerate(actors)])
        members = committee_members(p.member_config, NUM_LABELS, range(opts.members), opts.device)
        packed = PackedCommittee.from_members(members)
        serving = {}
        for batch in (1, BATCH_SIZE):
            requests = latency_requests(p.test, batch, max(10, sizes.latency_requests_b1), p.special.pad, opts.seed,
                                        f"gpu/{batch}")
            rows = _serving_rows(actors, packed, requests, opts.device)
            serving[f"batch{batch}"] = {name: latency_ms(v) for name, v in rows.items()}
    finally:
        for a in actors:
            ray.kill(a)
    return serving


def bench_gpu_sharing(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    return bench_sharing(p, opts, sizes, echo) | {"serving": bench_gpu_serving(p, opts, sizes)}
