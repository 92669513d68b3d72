"""How long a committee, one member and a student take to answer one example, measured side by side.

The committee answers with its members packed into one batched forward (`workers.model.packed`), the way
`committee predict` and the benchmark run it, and its soft vote (mean probability); a member and a student
of the member's shape run as a packed model of one, so every model gets the same kernels and the same
[CLS]-only last layer. Latency: examples one at a time (batch 1), where a packed committee pays little more
than one member because fixed per-call costs dominate; throughput: batches of THROUGHPUT_BATCH, where the
arithmetic dominates and K members cost nearly K times one. Rounds interleave the models batch by batch,
rotating which goes first, so a change in the machine's load falls on all of them alike; each model's figure
is the median over rounds of its mean time per example, and ratios are taken within the run (the shared
machine's speed varies by up to a third between runs).
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from workers.text.corpus import Ragged

ROUNDS = 5
THROUGHPUT_BATCH = 64


def _batches(examples: Ragged, count: int, batch_size: int, pad_id: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` examples as padded batches of `batch_size` (input_ids, attention_mask)."""
    from workers.train.finetune import pad_batch

    rows = np.arange(min(count, len(examples)))
    return [pad_batch(examples, rows[i:i + batch_size], pad_id) for i in range(0, len(rows), batch_size)]


def soft_vote(packed) -> callable:
    """The committee's answer: its members' mean probability (the paper's soft committee)."""
    def answer(ids, mask):
        return torch.softmax(packed(ids, mask), dim=-1).mean(dim=0)
    return answer


@torch.no_grad()
def latency_side_by_side(models: dict, examples: Ragged, pad_id: int, count: int = 200, rounds: int = ROUNDS,
                         threads: int = 1) -> dict:
    """{"ms_per_example": {name: median ms at batch 1}, "throughput_ms_per_example": {name: the same at batch
    THROUGHPUT_BATCH}, "rounds", "examples", "threads", "cpu"} for `models` ({name: callable(input_ids [b, s],
    mask [b, s])}) on the first `count` of `examples`."""
    from workers.model.precision import cpu_model

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        one = _time(models, _batches(examples, count, 1, pad_id), rounds)
        batched = _time(models, _batches(examples, count, THROUGHPUT_BATCH, pad_id), rounds)
    finally:
        torch.set_num_threads(before)
    return {"ms_per_example": one, "throughput_ms_per_example": batched, "throughput_batch": THROUGHPUT_BATCH,
            "rounds": rounds, "examples": min(count, len(examples)), "threads": threads, "cpu": cpu_model(),
            "machine": platform.machine()}


def _time(models: dict, batches: list, rounds: int) -> dict:
    """Median over `rounds` of each model's mean ms per example over `batches`, models interleaved."""
    names = list(models)
    examples = sum(len(ids) for ids, _ in batches)
    for ids, mask in batches[:10]:  # warm-up: first calls allocate
        for name in names:
            models[name](ids, mask)
    per_round = {name: [] for name in names}
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for j, (ids, mask) in enumerate(batches):
            order = names[(j + r) % len(names):] + names[:(j + r) % len(names)]
            for name in order:
                t0 = time.perf_counter()
                models[name](ids, mask)
                spent[name] += time.perf_counter() - t0
        for name in names:
            per_round[name].append(1000.0 * spent[name] / examples)
    return {name: float(np.median(v)) for name, v in per_round.items()}
