"""What the machine is, and why the benchmark's precisions and peaks are what they are.

CPUs of one kind of machine differ: some have AMX (bf16 matmuls on tile units, several times the
fp32 rate), some have AVX-512 BF16 only (bf16 dot products in vector units), and some, like
Cascade Lake Xeons, have neither, so bf16 autocast is emulated and runs slower than fp32. The
report says which CPU a measurement ran on and what that means for the member loop's precision.
"""

from __future__ import annotations

import os

from workers.model.precision import cpu_model, native_bf16, probe, resolve  # what precision: auto uses


def precision_report(device: str, setting: str) -> dict:
    """The precisions the loops run in and why, resolved as a member resolves `precision:`.

    `setting` is `--precision` (auto, bf16 or fp32); `auto` takes bf16 where the hardware runs it
    natively and fp32 elsewhere (`workers.model.precision`, the probe and rule every member uses).
    {"setting", "member", "reference", "native_bf16", "bf16_flags" (CPU), "hardware", "why"}.
    """
    capability = probe(device)
    choice = resolve(setting, capability)
    native, hardware = native_bf16(capability)
    asked = "--precision auto" if setting == "auto" else f"--precision {setting}"
    why = (f"the member loop, fine-tuning and prediction run {choice.precision} ({asked}: {hardware}); "
           "the reference runs fp32 as the authors' loop does")
    if setting == "bf16" and not native:
        why += "; bf16 is emulated here and slower than fp32 (--precision auto or fp32 measures the faster path)"
    return {"setting": setting, "member": choice.precision, "reference": "fp32", "native_bf16": native,
            "bf16_flags": list(capability.cpu_bf16_flags) if capability.cpu_bf16_flags is not None else None,
            "hardware": hardware, "why": why}


def machine_report(device: str, threads: int, peak: dict) -> dict:
    """The machine section of the results: device, CPU, threads, torch, and the matmul peaks alone."""
    import torch

    return {"device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
            "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "peak_flops_fp32": peak["fp32"], "peak_flops_bf16": peak["bf16"], "matmul_size": peak["matmul_size"]}
