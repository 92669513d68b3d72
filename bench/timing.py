"""Side-by-side timing: contenders alternate round by round, and the figures are medians.

After warm-up, rounds alternate between the contenders (the order flips every round), so load from
other processes on a shared machine weighs on every side alike; ratios of medians are what to read.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer sees it (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def latency_ms(seconds: list[float]) -> dict:
    """{"p50_ms", "p95_ms"} of per-request seconds."""
    return {"p50_ms": 1e3 * median(seconds), "p95_ms": 1e3 * percentile(seconds, 95)}


def alternate_rounds(contenders: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each contender `warmup` times, then `rounds` times in alternating order.

    A contender does one unit of work and returns its amount (tokens, examples, FLOPs); the result
    holds its rate (amount per second) for every round.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            amount = contenders[name]()
            rates[name].append(amount / (time.perf_counter() - t0))
    return rates


def alternate_latency(contenders: dict[str, Callable[[object], object]], requests: list,
                      warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per request for every contender; each request is served by all contenders in turn."""
    names = list(contenders)
    for req in requests[:warmup]:
        for name in names:
            contenders[name](req)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r, req in enumerate(requests):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            contenders[name](req)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
