"""A bounded HTTP load generator for the served committee: closed loop and open loop, on one event loop.

- Closed loop (`closed_loop`): `concurrency` clients, each sending its next request when the previous one
  is answered; throughput is what the server sustains at that concurrency.
- Open loop (`open_loop`): requests arrive at a fixed rate (Poisson arrivals from a seeded stream) whether
  or not earlier ones were answered; latency runs from the scheduled arrival, so a server that falls
  behind shows it (no coordinated omission). At most `max_in_flight` requests are outstanding: an
  arrival beyond that is not sent and counted as `shed`, so the generator itself stays bounded.

Both run for a warm-up (not recorded) and then `duration_s`; a request counts when it started inside
the measured window. Every answer is classified: 200 ok, 503 rejected by the server's bounded queue,
anything else (another status, a reset connection, a timeout) failed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

REQUEST_TIMEOUT_S = 60.0


@dataclass
class LoadResult:
    """What one load level measured."""

    latencies_s: list[float] = field(default_factory=list)  # answered 200, in completion order
    completed_at_s: list[float] = field(default_factory=list)  # since the window opened, per 200
    rejected: int = 0  # 503 (the bounded queue)
    failed: int = 0  # any other status, a connection error or a timeout
    shed: int = 0  # open loop: arrivals not sent (max_in_flight outstanding)
    window_s: float = 0.0  # the measured window (to the last answer of a request started in it)
    statuses: dict = field(default_factory=dict)  # status -> count (errors under "error")
    answered_all: int = 0  # every answer, warm-up included (what CPU time over the whole level divides by)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Answered requests per second over the window."""
        return self.ok / self.window_s if self.window_s > 0 else float("nan")

    def summary(self) -> dict:
        lat_ms = 1e3 * np.asarray(self.latencies_s, dtype=np.float64)
        pct = (lambda q: float(np.percentile(lat_ms, q))) if len(lat_ms) else (lambda q: float("nan"))
        return {"ok": self.ok, "rejected": self.rejected, "failed": self.failed, "shed": self.shed,
                "window_s": self.window_s, "throughput_rps": self.throughput,
                "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
                "mean_ms": float(lat_ms.mean()) if len(lat_ms) else float("nan"),
                "statuses": dict(self.statuses)}


class _Recorder:
    def __init__(self, result: LoadResult, window_start: float, window_end: float):
        self.result, self.window_start, self.window_end = result, window_start, window_end
        self.last_done = window_start

    def record(self, started: float, status: int | str, done: float) -> None:
        self.result.answered_all += 1
        if not self.window_start <= started < self.window_end:
            return  # warm-up, or after the window closed
        r = self.result
        r.statuses[status] = r.statuses.get(status, 0) + 1
        if status == 200:
            r.latencies_s.append(done - started)
            r.completed_at_s.append(done - self.window_start)
            self.last_done = max(self.last_done, done)
        elif status == 503:
            r.rejected += 1
        else:
            r.failed += 1


async def _post(session, url: str, body: bytes) -> int | str:
    import aiohttp

    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
        return "error"


def _session(limit: int):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False))


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, duration_s: float,
                      warmup_s: float) -> LoadResult:
    """`concurrency` clients back to back for warmup_s + duration_s; bodies are sent in turn."""
    result = LoadResult()
    start = time.perf_counter()
    rec = _Recorder(result, start + warmup_s, start + warmup_s + duration_s)
    counter = iter(range(1 << 62))

    async def client(session):
        while time.perf_counter() < rec.window_end:
            body = bodies[next(counter) % len(bodies)]
            t0 = time.perf_counter()
            status = await _post(session, url, body)
            rec.record(t0, status, time.perf_counter())

    async with _session(concurrency) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    result.window_s = rec.last_done - rec.window_start
    return result


async def open_loop(url: str, bodies: list[bytes], rate_per_s: float, duration_s: float, warmup_s: float,
                    seed: int, max_in_flight: int) -> LoadResult:
    """Poisson arrivals at `rate_per_s` for warmup_s + duration_s, at most `max_in_flight` outstanding."""
    rng = np.random.default_rng(seed)
    total_s = warmup_s + duration_s
    arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, size=int(rate_per_s * total_s * 1.5) + 10))
    arrivals = arrivals[arrivals < total_s]
    result = LoadResult()
    start = time.perf_counter()
    rec = _Recorder(result, start + warmup_s, start + total_s)
    in_flight: set = set()

    async def one(session, body: bytes, scheduled: float):
        status = await _post(session, url, body)
        rec.record(scheduled, status, time.perf_counter())

    async with _session(max_in_flight) as session:
        for i, offset in enumerate(arrivals):
            scheduled = start + float(offset)
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                if rec.window_start <= scheduled < rec.window_end:
                    result.shed += 1
                continue
            task = asyncio.ensure_future(one(session, bodies[i % len(bodies)], scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    result.window_s = max(rec.last_done, rec.window_end) - rec.window_start
    return result


def throughput_windows(result: LoadResult, window_s: float = 1.0) -> np.ndarray:
    """Answers per second in consecutive windows of the measured window (for intervals on throughput)."""
    n = max(1, int(result.window_s // window_s))
    counts = np.bincount(np.minimum((np.asarray(result.completed_at_s) // window_s).astype(int), n - 1),
                         minlength=n)
    return counts[:n] / window_s
