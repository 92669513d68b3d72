"""`precision: auto` takes bf16 where the hardware runs it natively and fp32 elsewhere; fp32 and bf16 keep
their meaning; the loops record the precision they chose, and why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config.experiment import load_config
from workers.model import precision
from workers.model.bert import bert_config, build_mlm
from workers.model.precision import Capability, resolve, resolve_here
from workers.train.pretrain import PretrainSettings, SpecialIds, pretrain

REPO = Path(__file__).resolve().parents[1]
CASCADE_LAKE = Capability("cpu", "Intel Xeon (Cascade Lake)", cpu_bf16_flags=())
ZEN4 = Capability("cpu", "AMD EPYC", cpu_bf16_flags=("avx512_bf16",))
SAPPHIRE_RAPIDS = Capability("cpu", "Intel Xeon (Sapphire Rapids)", cpu_bf16_flags=("amx_bf16", "avx512_bf16"))
H200 = Capability("cuda", "NVIDIA H200", cuda_bf16=True)
V100 = Capability("cuda", "Tesla V100", cuda_bf16=False)


def test_auto_takes_bf16_only_where_it_is_native():
    assert resolve("auto", CASCADE_LAKE).precision == "fp32"
    assert "emulated" in resolve("auto", CASCADE_LAKE).reason
    assert resolve("auto", ZEN4).precision == "bf16"
    assert "avx512_bf16" in resolve("auto", ZEN4).reason
    assert resolve("auto", SAPPHIRE_RAPIDS).precision == "bf16"
    assert "AMX" in resolve("auto", SAPPHIRE_RAPIDS).reason
    assert resolve("auto", H200).precision == "bf16" and "H200" in resolve("auto", H200).reason
    assert resolve("auto", V100).precision == "fp32"
    unreadable = Capability("cpu", "unknown", cpu_bf16_flags=None)
    assert resolve("auto", unreadable).precision == "fp32"


def test_fp32_and_bf16_keep_their_meaning_on_any_hardware():
    for capability in (CASCADE_LAKE, ZEN4, SAPPHIRE_RAPIDS, H200, V100):
        assert resolve("fp32", capability).precision == "fp32"
        assert resolve("bf16", capability).precision == "bf16"
    assert "emulated" in resolve("bf16", CASCADE_LAKE).reason  # the report says the choice is slow there
    with pytest.raises(ValueError, match="fp16"):
        resolve("fp16", ZEN4)


def test_the_real_probe_reads_this_cpu_as_lscpu_does():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    flags_line = next(line for line in lscpu.splitlines() if line.startswith("Flags:"))
    expected = tuple(f for f in ("amx_bf16", "avx512_bf16") if f in flags_line.split())
    capability = precision.probe("cpu")
    assert capability.device_type == "cpu" and capability.cpu_bf16_flags == expected
    model_line = next(line for line in lscpu.splitlines() if line.startswith("Model name:"))
    assert capability.device_name == model_line.split(":", 1)[1].strip()
    chosen = resolve_here("auto", torch.device("cpu"))
    assert chosen.precision == ("bf16" if expected else "fp32")
    assert chosen.setting == "auto" and chosen.reason.startswith(f"auto: the CPU {capability.device_name} has")


def _pretrain_for_two_steps(settings_precision: str) -> dict:
    """Two steps of the member loop on a tiny model; the token ids are arbitrary (only the precision matters)."""
    special = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=200)
    blocks = np.random.default_rng(0).integers(5, 200, size=(16, 16)).astype(np.int32)
    torch.manual_seed(0)
    model = build_mlm(bert_config(200, 16, 2, 1, max_position=16))
    settings = PretrainSettings(seed=0, max_steps=2, batch_size=4, lr=1e-3, weight_decay=0.0, warmup_steps=0,
                                mask_prob=0.15, precision=settings_precision, checkpoint_every=100, log_every=100)
    return pretrain(model, blocks, special, settings)


def test_the_loop_resolves_auto_where_it_runs_and_records_why(monkeypatch):
    """With the probe mocked as a CPU without bf16 the loop trains fp32; as one with AMX, bf16."""
    monkeypatch.setattr(precision, "probe", lambda device_type="cpu": CASCADE_LAKE)
    stats = _pretrain_for_two_steps("auto")
    assert (stats["precision"], stats["precision_setting"]) == ("fp32", "auto")
    assert "neither AMX nor AVX-512 BF16" in stats["precision_reason"]
    monkeypatch.setattr(precision, "probe", lambda device_type="cpu": SAPPHIRE_RAPIDS)
    stats = _pretrain_for_two_steps("auto")
    assert stats["precision"] == "bf16" and "AMX" in stats["precision_reason"]
    assert _pretrain_for_two_steps("fp32")["precision"] == "fp32"


def test_auto_is_the_default_and_shipped_configs_keep_their_precision():
    default = load_config(REPO / "configs" / "smoke.yaml")
    assert (default.pretrain.precision, default.finetune.precision) == ("auto", "auto")
    assert load_config(REPO / "configs" / "quickstart.yaml").pretrain.precision == "auto"
    paper = load_config(REPO / "configs" / "paper_agnews.yaml")
    assert (paper.pretrain.precision, paper.finetune.precision) == ("bf16", "bf16")
