"""The two halves of a model-FLOP-utilisation figure: the FLOPs a loop needs, and the matmul peak.

Model FLOPs count what a step has to compute (a multiply-add counts 2; training = 3 x forward), not
what a loop happens to compute; `tests/test_bench.py` checks them against torch's FLOP counter.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from bench.timing import median, sync
from workers.train.seeds import torch_generator

PEAK_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def encoder_flops_per_token(config, attended: int) -> float:
    """Forward FLOPs of the encoder for one token that attends over `attended` positions."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (8 * h * h + 4 * h * i + 4 * attended * h)


def decoder_flops_per_position(config) -> float:
    """Forward FLOPs of the masked-LM head at one position: transform + vocabulary decoder."""
    return 2 * config.hidden_size ** 2 + 2 * config.hidden_size * config.vocab_size


def mlm_training_flops(config, positions: int, seq_len: int, decoded: int) -> float:
    """FLOPs of one training step with `positions` encoded tokens and the head at `decoded` positions."""
    return 3 * (positions * encoder_flops_per_token(config, seq_len) + decoded * decoder_flops_per_position(config))


def matmul_size(device: str, quick: bool) -> int:
    """Big enough to reach the device's peak, small enough to time in a fraction of a second."""
    return 512 if quick else 8192 if device == "cuda" else 2048


def _operands(device: str, dtype: torch.dtype, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch_generator(0, "bench/matmul", size)  # the values do not matter; the draw stays off torch's global RNG
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)  # [size, size]
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    return a, b


def matmul_work(device: str, dtype: torch.dtype, size: int, inner: int = 4) -> Callable[[], float]:
    """A contender for `alternate_rounds`: `inner` size x size products; returns their FLOPs."""
    a, b = _operands(device, dtype, size)

    def work() -> float:
        for _ in range(inner):
            a @ b
        sync(device)
        return 2.0 * size ** 3 * inner

    return work


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 5, inner: int = 4) -> float:
    """Matmul FLOP/s of a size x size product on `device` (median over repeats after one warm-up)."""
    work = matmul_work(device, dtype, size, inner)
    work()  # warm-up
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        flops = work()
        rates.append(flops / (time.perf_counter() - t0))
    return median(rates)


def measure_peak(device: str, quick: bool) -> dict:
    """The matmul peak of each precision alone on the machine: {"fp32", "bf16" (FLOP/s), "matmul_size"}.

    fp32 and bf16 alternate twice and the best median counts (a peak is the best the machine does).
    """
    size = matmul_size(device, quick)
    peaks: dict[str, list[float]] = {prec: [] for prec in PEAK_PRECISIONS}
    for _ in range(2):
        for prec, dtype in PEAK_PRECISIONS.items():
            peaks[prec].append(matmul_peak(device, dtype, size, repeats=3))
    return {prec: max(rates) for prec, rates in peaks.items()} | {"matmul_size": size}
