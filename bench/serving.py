"""Committee serving pieces shared by the latency sections and the bench actor: requests, the vote,
timed forwards, and a committee of seeded members."""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.loops import seeded_classifier
from bench.timing import sync
from workers.text.corpus import Ragged
from workers.train.finetune import pad_batch
from workers.train.seeds import numpy_rng


def latency_requests(examples: Ragged, batch_size: int, count: int, pad_id: int, seed: int,
                     tag: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` requests of `batch_size` real examples each, padded to the longest in the request.

    The examples are drawn from stream `bench/requests` (`tag` names the section and batch size).
    """
    rng = numpy_rng(seed, "bench/requests", tag)
    requests = []
    for _ in range(count):
        rows = rng.choice(len(examples), size=min(batch_size, len(examples)), replace=False)
        ids, mask = pad_batch(examples, rows, pad_id)
        requests.append((ids.numpy(), mask.numpy()))  # [b, longest] int64 each
    return requests


def soft_vote(logits: np.ndarray) -> np.ndarray:
    """The committee's decision for logits [K, b, classes]: argmax of the mean class probabilities."""
    from workers.committee.voting import aggregate

    return aggregate(logits, "soft").argmax(axis=-1)


def committee_members(config, num_labels: int, seeds, device: str) -> list:
    """Classifiers with the initial weights of members of these seeds, in eval mode (random weights: the
    arithmetic, not the accuracy, sets the latency)."""
    return [seeded_classifier(config, num_labels, seed, device).eval() for seed in seeds]


def timed_packed_forward(packs: list, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         device) -> tuple[np.ndarray, list[float]]:
    """`PackedCommittee` models one after another: logits [sum of their K, b, classes] and each one's seconds."""
    out, seconds = [], []
    with torch.no_grad():
        for pack in packs:
            t0 = time.perf_counter()
            logits = pack(input_ids, attention_mask)
            sync(device)
            seconds.append(time.perf_counter() - t0)
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out), seconds
