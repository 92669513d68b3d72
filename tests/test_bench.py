"""`committee bench`: the packed committee equals its members, the FLOP count behind the MFU figure is
right, and `committee bench --quick` runs end to end (timings are printed, never asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.flops import mlm_training_flops
from bench.serving import soft_vote
from bench.timing import alternate_rounds
from workers.model.bert import bert_config, build_classifier, build_mlm
from workers.model.packed import PackedCommittee


def members(layers: int, k: int, vocab: int = 300):
    config = bert_config(vocab, 32, 4, layers, max_position=64, num_labels=5)
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_classifier(config, 5).eval())
    return out


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cls_only", [True, False])
def test_packed_committee_equals_members_one_by_one(layers, cls_only):
    models = members(layers, 3)
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 300, (4, 23), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 15:] = 0  # padded rows, as in a dynamically padded batch
    attention_mask[3, 7:] = 0
    input_ids[attention_mask == 0] = 0
    with torch.no_grad():
        expected = torch.stack([m(input_ids=input_ids, attention_mask=attention_mask).logits for m in models])
    packed = PackedCommittee.from_members(models, cls_only_last_layer=cls_only)
    got = packed(input_ids, attention_mask)
    assert got.shape == (3, 4, 5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(soft_vote(got.numpy()), soft_vote(expected.numpy()))


def test_packed_committee_rejects_mixed_shapes():
    with pytest.raises(ValueError):
        PackedCommittee.from_members([*members(1, 1), *members(2, 1)])


def test_training_flop_count_matches_torch_flop_counter():
    """The model FLOPs behind pretrain.mfu: encoder at every position, decoder at the masked ones."""
    from torch.utils.flop_counter import FlopCounterMode

    from workers.text.masking import IGNORE_INDEX
    from workers.train.pretrain import mlm_loss

    config = bert_config(500, 64, 4, 2, max_position=32)
    torch.manual_seed(0)
    model = build_mlm(config).train()
    input_ids = torch.randint(5, 500, (4, 32))
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, ::5] = input_ids[:, ::5]  # 7 decoded positions per row
    decoded = int((labels != IGNORE_INDEX).sum())
    with FlopCounterMode(display=False) as counter:
        mlm_loss(model, input_ids, labels).backward()
    expected = mlm_training_flops(config, positions=4 * 32, seq_len=32, decoded=decoded)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.02)


def test_alternate_rounds_alternates_and_reports_rates():
    calls = []
    rates = alternate_rounds({"a": lambda: calls.append("a") or 10, "b": lambda: calls.append("b") or 20}, rounds=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then the order flips every round
    assert len(rates["a"]) == len(rates["b"]) == 3 and all(r > 0 for r in rates["a"])


def test_precision_report_resolves_auto_as_members_do():
    """The benchmark's precision is the member's rule on this CPU: auto is bf16 exactly where the real
    probe finds AMX or AVX-512 BF16; an explicit setting is kept, and bf16 where it is emulated says so."""
    from bench.hardware import precision_report
    from workers.model.precision import cpu_bf16_flags

    flags = cpu_bf16_flags()
    native = bool(flags)
    auto = precision_report("cpu", "auto")
    assert auto["setting"] == "auto" and auto["reference"] == "fp32"
    assert auto["member"] == ("bf16" if native else "fp32") and auto["native_bf16"] is native
    assert auto["bf16_flags"] == (None if flags is None else list(flags))
    assert "--precision auto" in auto["why"]
    assert precision_report("cpu", "fp32")["member"] == "fp32"
    forced = precision_report("cpu", "bf16")
    assert forced["member"] == "bf16"
    assert ("emulated here" in forced["why"]) is (not native)


@pytest.mark.slow  # end to end, over a minute here: make test-all
def test_committee_bench_quick_end_to_end(tmp_path, monkeypatch):
    """The whole benchmark on a tiny shape: every section runs, the JSON holds the keys the targets read."""
    import ray
    from typer.testing import CliRunner

    from orchestrator.cli import app

    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--json", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "1. pre-training" in result.output and "targets" in result.output
    data = json.loads(out.read_text())
    for section, key in (("pretrain", "ratio"), ("pretrain", "mfu"), ("finetune", "ratio"),
                         ("latency", "ratio_p50_batch1"), ("latency", "projected_ratio_p50_batch1"),
                         ("scaling", "ratio")):
        assert data[section][key] > 0, f"{section}.{key}"
    assert data["memory"]["member_actor_peak_rss_mib"] > 0
    member, reference = data["pretrain"]["member"], data["pretrain"]["reference"]
    assert abs(member["mask"]["masked_share"] - 0.15) < 0.03 and abs(reference["mask"]["masked_share"] - 0.15) < 0.03
    assert data["pretrain"]["loss_agreement"]["fp32"]["abs_diff"] < 1e-4
    assert data["precision"]["setting"] == "auto" and data["precision"]["reference"] == "fp32"
    assert data["precision"]["member"] == data["options"]["precision"] == data["finetune"]["precision"]
    used, source = data["pretrain"]["peak_flops_used"], data["pretrain"]["peak_source"]
    assert used["bf16"] == max(data["machine"]["peak_flops_bf16"], data["pretrain"]["peak_flops_in_rounds"]["bf16"])
    assert source["bf16"] == ("alone" if used["bf16"] == data["machine"]["peak_flops_bf16"] else "between rounds")
    assert not ray.is_initialized()


def test_bench_rejects_unknown_model(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["bench", "--model", "bert99", "--quick"])
    assert result.exit_code == 2 and "bert99" in result.output
