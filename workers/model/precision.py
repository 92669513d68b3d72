"""Which precision a member trains in: `precision: auto` takes bf16 where the hardware runs it natively.

bf16 autocast pays only where the matmuls run in bf16 natively: a CUDA GPU with bf16 units (Ampere and
later), or a CPU with AMX (`amx_bf16`: tile units, several times the fp32 rate) or AVX-512 BF16
(`avx512_bf16`: bf16 dot products in vector units, about 2x). Elsewhere (a Cascade Lake Xeon, say)
oneDNN emulates bf16 and autocast is slower than fp32, so `auto` takes fp32 there.

The choice is made where the member runs (an actor's node may differ from the driver's): `resolve`
is a pure function of a `Capability` (what `probe` found on this machine), so tests can hand it any
hardware; `resolve_here` probes this process's device and resolves.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

SETTINGS = ("auto", "fp32", "bf16")  # what a config may ask for
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # as /proc/cpuinfo (and `lscpu`) name them, fastest first
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Capability:
    """What one device can do in bf16."""

    device_type: str  # "cpu" | "cuda"
    device_name: str  # the CPU's model name or the GPU's name
    cuda_bf16: bool | None = None  # CUDA: the GPU has bf16 units (None on a CPU)
    cpu_bf16_flags: tuple[str, ...] | None = None  # CPU: which of CPU_BF16_FLAGS it has (None: flags unreadable)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a loop runs in, what the config asked for, and why (one sentence for the report)."""

    setting: str  # "auto" | "fp32" | "bf16"
    precision: str  # "fp32" | "bf16"
    reason: str


def native_bf16(capability: Capability) -> tuple[bool, str]:
    """(bf16 runs natively, a sentence saying why or why not)."""
    name = capability.device_name
    if capability.device_type == "cuda":
        if capability.cuda_bf16:
            return True, f"the GPU {name} has bf16 units"
        return False, f"the GPU {name} has no bf16 units: bf16 would be emulated"
    flags = capability.cpu_bf16_flags
    if flags is None:
        return False, f"the flags of the CPU {name} could not be read: bf16 may be emulated"
    if "amx_bf16" in flags:
        return True, f"the CPU {name} has AMX (amx_bf16)"
    if "avx512_bf16" in flags:
        return True, f"the CPU {name} has AVX-512 BF16 (avx512_bf16) but no AMX"
    return False, f"the CPU {name} has neither AMX nor AVX-512 BF16: bf16 is emulated and slower than fp32"


def resolve(setting: str, capability: Capability) -> PrecisionChoice:
    """`auto` -> bf16 where `capability` runs it natively, else fp32; `fp32`/`bf16` are kept as set."""
    if setting not in SETTINGS:
        raise ValueError(f"precision {setting!r} is not one of {', '.join(SETTINGS)}")
    native, why = native_bf16(capability)
    if setting == "auto":
        return PrecisionChoice(setting, "bf16" if native else "fp32", f"auto: {why}")
    return PrecisionChoice(setting, setting, f"as set in the config; {why}")


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpuinfo_field(name: str) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (None where there is none: not Linux)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_bf16_flags() -> tuple[str, ...] | None:
    """Which of `amx_bf16` / `avx512_bf16` this CPU has; None when its flags cannot be read."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    present = set(flags.split())
    return tuple(flag for flag in CPU_BF16_FLAGS if flag in present)


@functools.lru_cache(maxsize=None)
def probe(device_type: str = "cpu") -> Capability:
    """What this machine's `device_type` ("cpu" or "cuda": the current GPU) can do in bf16 (cached)."""
    if device_type == "cuda":
        import torch

        return Capability("cuda", torch.cuda.get_device_name(),
                          cuda_bf16=bool(torch.cuda.is_bf16_supported(including_emulation=False)))
    return Capability("cpu", cpu_model(), cpu_bf16_flags=cpu_bf16_flags())


def resolve_here(setting: str, device=None) -> PrecisionChoice:
    """Resolve `setting` for `device` (a torch.device or its type; default the CPU) of this process."""
    device_type = getattr(device, "type", device) or "cpu"
    return resolve(setting, probe(str(device_type)))


def choice_stats(choice: PrecisionChoice) -> dict:
    """The fields a loop's stats record about its precision."""
    return {"precision": choice.precision, "precision_setting": choice.setting, "precision_reason": choice.reason}
