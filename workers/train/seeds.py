"""Named random streams: every random draw of a member comes from a stream of its own seed.

A stream is named by a purpose and indices, e.g. `("pretrain/mask", step)` or `("init/head",
"classifier.weight")`, and its seed is a hash of (member seed, name): streams never overlap, and what
one stream draws does not depend on how much another drew before it (nor on the order in which
transformers constructs a model's modules). Members of a committee differ by their seed; a
pre-trained member and its scratch twin share the seed and the streams that must be equal for the
gap to measure pre-training alone (classifier head init, fine-tuning order and dropout), and differ
in the encoder's initial weights (`init/pretrained` against `init/scratch`).

Streams in use: init/<role> and init/head (per parameter name), pretrain/order (per epoch),
pretrain/mask and pretrain/dropout (per step), finetune/order (per epoch), finetune/dropout (per step).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def stream_seed(seed: int, purpose: str, *index) -> int:
    """A 63-bit seed for stream `purpose` (with `index`, e.g. a step) of member seed `seed`."""
    name = "/".join([str(int(seed)), purpose, *(str(i) for i in index)])
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def torch_generator(seed: int, purpose: str, *index, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, purpose, *index))


def numpy_rng(seed: int, purpose: str, *index) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, purpose, *index))


def seed_global_torch(seed: int, purpose: str, *index) -> None:
    """Seed torch's global generator (what dropout draws from) for one step of stream `purpose`."""
    torch.manual_seed(stream_seed(seed, purpose, *index))
