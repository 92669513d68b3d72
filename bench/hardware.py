"""What the machine is, and why the benchmark's precisions and peaks are what they are.

CPUs of one kind of machine differ: some have AMX (bf16 matmuls on tile units, several times the
fp32 rate), some have AVX-512 BF16 only (bf16 dot products in vector units), and some, like
Cascade Lake Xeons, have neither, so bf16 autocast is emulated and runs slower than fp32. The
report says which CPU a measurement ran on and what that means for the member loop's precision.
"""

from __future__ import annotations

import os

from workers.precision import cpu_bf16_flags, cpu_model  # the probe precision: auto uses

def _cpu_bf16_reason(flags: list[str] | None) -> tuple[bool | None, str]:
    if flags is None:
        return None, "the CPU's flags could not be read (no /proc/cpuinfo): whether bf16 is native is unknown"
    if "amx_bf16" in flags:
        return True, "the CPU has AMX: bf16 matmuls run on its tile units, several times the fp32 rate"
    if "avx512_bf16" in flags:
        return True, "the CPU has AVX-512 BF16 but no AMX: bf16 dot products are native, in vector units"
    return False, ("the CPU has neither AMX nor AVX-512 BF16: bf16 autocast is emulated here and slower "
                   "than fp32 (--precision fp32 measures the faster path)")


def precision_report(device: str, precision: str) -> dict:
    """The precisions the loops run in and why.

    {"member", "reference", "native_bf16" (None: unknown), "bf16_flags" (CPU), "hardware", "why"}.
    """
    import torch

    if device == "cuda":
        native = bool(torch.cuda.is_bf16_supported())
        flags = None
        hardware = f"{torch.cuda.get_device_name()} {'runs bf16 natively' if native else 'emulates bf16'}"
    else:
        flags = cpu_bf16_flags()
        native, hardware = _cpu_bf16_reason(flags)
    chosen = ("the member loop runs bf16 as --precision asks (as the shipped configs train; the member-loop "
              "fp32 row shows the config default)") if precision == "bf16" else "the member loop runs fp32 (--precision fp32)"
    return {"member": precision, "reference": "fp32", "native_bf16": native, "bf16_flags": flags,
            "hardware": hardware, "why": f"{chosen}; the reference runs fp32 as the authors' loop does; {hardware}"}


def machine_report(device: str, threads: int, peak: dict) -> dict:
    """The machine section of the results: device, CPU, threads, torch, and the matmul peaks alone."""
    import torch

    return {"device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
            "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "peak_flops_fp32": peak["fp32"], "peak_flops_bf16": peak["bf16"], "matmul_size": peak["matmul_size"]}
