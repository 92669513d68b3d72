"""One committee member from start to finish, as a plain function (the actor only calls it).

pre-train (masked LM, resumable) -> transfer to a classifier -> fine-tune -> logits on val and test.
Pre-trained and scratch members of the same index share the seed, so their classifier heads start
identical and they see the fine-tuning data in the same order: the gap measures pre-training alone.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from workers import checkpoint
from workers.corpus import Ragged
from workers.finetune import FinetuneSettings, finetune, predict_logits
from workers.models import bert_config, build_classifier, build_mlm, count_parameters
from workers.pretrain import PretrainSettings, SpecialIds, pretrain
from workers.voting import accuracy

log = logging.getLogger(__name__)

RESULT_FILE = "result.npz"


@dataclass(frozen=True)
class MemberSpec:
    """What one member does; small and immutable, it crosses the Ray boundary."""

    name: str  # "member-00", "scratch-00", "deep"
    index: int
    seed: int
    pretrained: bool
    num_layers: int
    pretrain_steps: int
    out_dir: str


@dataclass(frozen=True)
class SharedInputs:
    """Tokenized data and settings every member reads; `ray.put` once by the driver."""

    blocks: np.ndarray  # [n_blocks, seq_len] int32 pre-training blocks
    train: Ragged
    train_labels: np.ndarray  # [n_train] int64
    val: Ragged
    val_labels: np.ndarray  # [n_val] int64
    test: Ragged
    test_labels: np.ndarray  # [n_test] int64
    num_classes: int
    special: SpecialIds
    model: dict  # ModelConfig fields
    pretrain: dict  # PretrainConfig fields
    finetune: dict  # FinetuneConfig fields


@dataclass
class MemberResult:
    name: str
    index: int
    seed: int
    pretrained: bool
    num_layers: int
    parameters: int
    val_accuracy: float
    test_accuracy: float
    val_logits: np.ndarray  # [n_val, classes] float32
    test_logits: np.ndarray  # [n_test, classes] float32
    pretrain_stats: dict = field(default_factory=dict)
    finetune_stats: dict = field(default_factory=dict)
    classifier_dir: str = ""


def _config(spec: MemberSpec, inputs: SharedInputs):
    m = inputs.model
    return bert_config(inputs.special.vocab_size, m["hidden_size"], m["num_heads"], spec.num_layers,
                       max_position=m["max_position"], intermediate_size=m["intermediate_size"],
                       dropout=m["dropout"], num_labels=inputs.num_classes)


def _pretrain_settings(spec: MemberSpec, inputs: SharedInputs) -> PretrainSettings:
    p = inputs.pretrain
    return PretrainSettings(seed=spec.seed, max_steps=spec.pretrain_steps, batch_size=p["batch_size"],
                            lr=p["lr"], weight_decay=p["weight_decay"], warmup_steps=p["warmup_steps"],
                            mask_prob=p["mask_prob"], precision=p["precision"],
                            checkpoint_every=p["checkpoint_every"], log_every=p["log_every"])


def _finetune_settings(spec: MemberSpec, inputs: SharedInputs) -> FinetuneSettings:
    f = inputs.finetune
    return FinetuneSettings(seed=spec.seed, epochs=f["epochs"], batch_size=f["batch_size"], lr=f["lr"],
                            weight_decay=f["weight_decay"], warmup_ratio=f["warmup_ratio"],
                            precision=f["precision"])


def member_device() -> torch.device:
    """CUDA when the actor was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pretrained_mlm(spec: MemberSpec, inputs: SharedInputs, on_log: Callable[[dict], None] | None):
    """The member's masked LM after pre-training (loaded if already finished, resumed if interrupted)."""
    from transformers import BertForMaskedLM

    out = spec.out_dir  # a path, or a storage URI (see workers.checkpoint)
    final = checkpoint.join(out, "mlm")
    stats_text = checkpoint.read_bytes(checkpoint.join(final, "pretrain_stats.json"))  # written last: the marker
    if stats_text is not None:
        model = BertForMaskedLM.from_pretrained(checkpoint.local_dir(final))
        checkpoint.clear_local_cache()  # the weights are in memory now
        return model, json.loads(stats_text)
    torch.manual_seed(spec.seed)
    model = build_mlm(_config(spec, inputs)).to(member_device())
    stats = pretrain(model, inputs.blocks, inputs.special, _pretrain_settings(spec, inputs),
                     checkpoint_dir=checkpoint.join(out, "checkpoints"), on_log=on_log)
    checkpoint.clear_local_cache()  # a checkpoint downloaded to resume from
    stats["parameters"] = count_parameters(model)
    checkpoint.save_final(final, model, {"pretrain_stats.json": json.dumps(stats)})
    checkpoint.remove(checkpoint.join(out, "checkpoints"))
    return model, stats


def run_member(spec: MemberSpec, inputs: SharedInputs, on_log: Callable[[dict], None] | None = None) -> MemberResult:
    t0 = time.perf_counter()
    pretrain_stats: dict = {}
    mlm = None
    if spec.pretrained:
        mlm, pretrain_stats = pretrained_mlm(spec, inputs, on_log)
    torch.manual_seed(spec.seed + 1)  # the classifier head's init: the same for pre-trained and scratch
    model = build_classifier(_config(spec, inputs), inputs.num_classes, mlm=mlm).to(member_device())
    del mlm
    settings = _finetune_settings(spec, inputs)
    pad = inputs.special.pad
    ft_stats = finetune(model, inputs.train, inputs.train_labels, pad, settings, on_log=on_log)
    val_logits = predict_logits(model, inputs.val, pad, precision=settings.precision)
    test_logits = predict_logits(model, inputs.test, pad, precision=settings.precision)
    classifier_dir = checkpoint.save_final(checkpoint.join(spec.out_dir, "classifier"), model)
    ft_stats["wall_s"] = time.perf_counter() - t0
    result = MemberResult(
        name=spec.name, index=spec.index, seed=spec.seed, pretrained=spec.pretrained,
        num_layers=spec.num_layers, parameters=count_parameters(model),
        val_accuracy=accuracy(val_logits, inputs.val_labels), test_accuracy=accuracy(test_logits, inputs.test_labels),
        val_logits=val_logits, test_logits=test_logits, pretrain_stats=pretrain_stats, finetune_stats=ft_stats,
        classifier_dir=str(classifier_dir),
    )
    save_result(result, spec.out_dir)
    return result


def save_result(result: MemberResult, out_dir: str | Path) -> None:
    """Write the result next to the member's weights (atomically), so a resumed run can skip the member."""
    meta = {k: v for k, v in asdict(result).items() if k not in ("val_logits", "test_logits")}
    buffer = io.BytesIO()
    np.savez(buffer, val_logits=result.val_logits, test_logits=result.test_logits, meta=json.dumps(meta))
    checkpoint.write_bytes(checkpoint.join(out_dir, RESULT_FILE), buffer.getvalue())


def load_result(out_dir: str | Path) -> MemberResult | None:
    raw = checkpoint.read_bytes(checkpoint.join(out_dir, RESULT_FILE))
    if raw is None:
        return None
    with np.load(io.BytesIO(raw)) as data:
        meta = json.loads(str(data["meta"]))
        return MemberResult(val_logits=data["val_logits"], test_logits=data["test_logits"], **meta)
