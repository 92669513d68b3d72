"""Following Ray work as it finishes: the one loop every command waits on Ray with.

`batches(ray, pending)` yields the refs of `pending` ({object ref: what it is}) that finished, a batch at a
time (`ray.wait` with a timeout, never a `ray.get` in a loop), and an empty batch at least every `poll_s`, so
the caller can drain progress and notice lost nodes between results; the caller pops what it collects.
`result_of` fetches one finished ref and turns a failure into a `CommitteeError` naming the work (a user-fixable
fault inside it, such as a full disk, is passed on as its own message). `Every` paces progress lines.
Members (orchestrator.run.monitor) and a distillation's recover tasks and students (orchestrator.distill.stages)
are followed with it.
"""

from __future__ import annotations

import time
from typing import Iterator

from workers.errors import CommitteeError

PROGRESS_EVERY_S = 10.0


def batches(ray, pending: dict, poll_s: float = 1.0) -> Iterator[list]:
    """Until `pending` is empty: the refs that finished in the last `poll_s` (possibly none). The caller pops the
    refs it collects from `pending` and may add new ones (work placed again)."""
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
        yield ready


def result_of(ray, ref, what: str):
    """`ray.get(ref)` of finished work; its failure as a CommitteeError naming `what`."""
    try:
        return ray.get(ref)
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CommitteeError):  # a user-fixable fault inside the work (disk full, ...)
            raise CommitteeError(f"{what} failed: {cause}") from None
        raise CommitteeError(f"{what} failed: {exc}") from exc


class Every:
    """`due()` is true once every `seconds` (the first time after `seconds` have passed)."""

    def __init__(self, seconds: float = PROGRESS_EVERY_S):
        self.seconds, self.last = seconds, time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True
