"""Which device a member runs on, and host-to-device copies that do not wait for the device.

Inside a Ray worker the device follows what Ray granted: Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for a
worker that asked for no GPU (unless RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO is set), so `torch.cuda.is_available()`
is true there on a GPU node and every CPU member would land on cuda:0, unaccounted by Ray. A worker runs on
CUDA only when `ray.get_gpu_ids()` names a GPU (Ray then sets CUDA_VISIBLE_DEVICES to it, so it is cuda:0).
Outside Ray (tests, a notebook, the driver) the hardware decides. `device_for` is the pure decision.

`to_device` copies a CPU tensor to the device: on CUDA through pinned memory with `non_blocking=True`, so
the host queues the copy and goes on (a copy from pageable memory waits for the device's queued work).
"""

from __future__ import annotations

import sys

import torch


def device_for(granted_gpu_ids: list | None, cuda_available: bool) -> torch.device:
    """The device of a process: `granted_gpu_ids` is what Ray granted a worker (None: not a Ray worker)."""
    if granted_gpu_ids is None:
        return torch.device("cuda" if cuda_available else "cpu")
    return torch.device("cuda" if granted_gpu_ids and cuda_available else "cpu")


def ray_granted_gpus() -> list | None:
    """The GPU ids Ray granted this worker ([] for none), or None outside a Ray worker (the driver included).
    Ray is not imported here: a process that never imported it is no Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    if ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return list(ray.get_gpu_ids())


def member_device() -> torch.device:
    """Where this process trains and predicts: see the module docstring."""
    return device_for(ray_granted_gpus(), torch.cuda.is_available())


def describe(device: torch.device | str) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)': what a report says a member ran on."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` (on the CPU) on `device`; to CUDA through pinned memory without waiting for the device."""
    device = torch.device(device)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
