"""One committee member from start to finish, as a plain function (the actor only calls it).

pre-train (masked LM, resumable) -> transfer to a classifier -> fine-tune -> logits on val and test.
Pre-trained and scratch members of the same index share the seed, so their classifier heads start
identical and they see the fine-tuning data in the same order: the gap measures pre-training alone.

What crosses the Ray boundary: a `MemberSpec` (small, frozen, typed settings and a role) per member,
and one `SharedArrays` (token arrays only, `ray.put` once) that every member reads. Members with
different settings (a sweep's learning rates, say) read the same arrays.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from workers.committee.voting import accuracy
from workers.model.bert import (
    ModelSettings,
    build_classifier,
    build_mlm,
    count_parameters,
    init_from_streams,
    transfer_encoder,
)
from workers.model.devices import member_device
from workers.storage import checkpoint
from workers.text.corpus import Ragged
from workers.train.finetune import FinetuneSettings, finetune, predict_logits
from workers.train.pretrain import PretrainSettings, SpecialIds, pretrain

log = logging.getLogger(__name__)

RESULT_FILE = "result.npz"


class Role(str, Enum):
    """What a member is in an experiment."""

    PRETRAINED = "pretrained"  # a committee member: pre-trained on the corpus, then fine-tuned
    SCRATCH = "scratch"  # its twin: same seed, fine-tuned from random weights (the control)
    DEEP = "deep"  # the deep baseline: pre-trained like a member, with more layers


@dataclass(frozen=True)
class MemberSpec:
    """What one member does; small and immutable, it crosses the Ray boundary."""

    name: str  # "member-00", "scratch-00", "deep"
    role: Role
    index: int  # member index within the committee (the scratch twin shares it)
    seed: int
    model: ModelSettings
    pretrain: PretrainSettings | None  # None for a scratch member
    finetune: FinetuneSettings
    out_dir: str  # a path or a storage URI: checkpoints, weights and result.npz

    @property
    def pretrains(self) -> bool:
        return self.pretrain is not None

    @property
    def pretrain_steps(self) -> int:
        return self.pretrain.max_steps if self.pretrain else 0


@dataclass(frozen=True)
class SharedArrays:
    """The token arrays every member reads (no settings): `ray.put` once by the driver."""

    blocks: np.ndarray  # [n_blocks, seq_len] int32 pre-training blocks
    train: Ragged
    train_labels: np.ndarray  # [n_train] int64
    val: Ragged
    val_labels: np.ndarray  # [n_val] int64
    test: Ragged
    test_labels: np.ndarray  # [n_test] int64
    num_classes: int
    special: SpecialIds


@dataclass
class MemberResult:
    name: str
    role: str  # a Role value
    index: int
    seed: int
    num_layers: int
    parameters: int
    val_accuracy: float
    test_accuracy: float
    val_logits: np.ndarray  # [n_val, classes] float32
    test_logits: np.ndarray  # [n_test, classes] float32
    pretrain_stats: dict = field(default_factory=dict)
    finetune_stats: dict = field(default_factory=dict)
    classifier_dir: str = ""

    @property
    def pretrained(self) -> bool:
        return self.role != Role.SCRATCH.value


def pretrain_checkpoints(spec: MemberSpec):
    """Where the member's pre-training checkpoints go (a path, or a storage URI: see workers.storage.checkpoint)."""
    return checkpoint.join(spec.out_dir, "checkpoints")


def finished_pretraining(spec: MemberSpec) -> dict | None:
    """The member's pre-training stats when its final masked LM is saved (the stats file is written last), else None."""
    stats_text = checkpoint.read_bytes(checkpoint.join(spec.out_dir, "mlm", "pretrain_stats.json"))
    return None if stats_text is None else json.loads(stats_text)


def initial_mlm(spec: MemberSpec, arrays: SharedArrays):
    """The member's masked LM before pre-training (on the CPU), every weight drawn from its `init/<role>` stream."""
    model = build_mlm(spec.model.bert_config(arrays.special.vocab_size, arrays.num_classes))
    init_from_streams(model, spec.seed, f"init/{spec.role.value}")
    return model


def save_pretrained_mlm(spec: MemberSpec, model, stats: dict) -> None:
    """Save the pre-trained masked LM with its stats (the marker of finished pre-training); drop the checkpoints."""
    checkpoint.clear_local_cache()  # a checkpoint downloaded to resume from
    stats["parameters"] = count_parameters(model)
    checkpoint.save_final(checkpoint.join(spec.out_dir, "mlm"), model, {"pretrain_stats.json": json.dumps(stats)})
    checkpoint.remove(pretrain_checkpoints(spec))


def pretrained_mlm(spec: MemberSpec, arrays: SharedArrays, on_log: Callable[[dict], None] | None):
    """The member's masked LM after pre-training (loaded if already finished, resumed if interrupted)."""
    from transformers import BertForMaskedLM

    stats = finished_pretraining(spec)
    if stats is not None:  # finished alone or in a group (workers.train.groups saves the same files)
        model = checkpoint.load_pretrained(BertForMaskedLM, checkpoint.join(spec.out_dir, "mlm"))
        checkpoint.clear_local_cache()  # the weights are in memory now
        return model, stats
    model = initial_mlm(spec, arrays).to(member_device())
    stats = pretrain(model, arrays.blocks, arrays.special, spec.pretrain,
                     checkpoint_dir=pretrain_checkpoints(spec), on_log=on_log)
    save_pretrained_mlm(spec, model, stats)
    return model, stats


def classifier_for(spec: MemberSpec, arrays: SharedArrays, mlm=None):
    """The member's classifier before fine-tuning: head (pooler + classifier) from the stream `init/head`,
    which a pre-trained member and its scratch twin share; encoder from `mlm` when pre-trained, else
    from the member's own `init/<role>` stream."""
    config = spec.model.bert_config(arrays.special.vocab_size, arrays.num_classes)
    model = build_classifier(config, arrays.num_classes)
    init_from_streams(model, spec.seed, f"init/{spec.role.value}", head_stream="init/head")
    if mlm is not None:
        transfer_encoder(model, mlm)
    return model


def run_member(spec: MemberSpec, arrays: SharedArrays, on_log: Callable[[dict], None] | None = None,
               on_epoch: Callable[[int, torch.nn.Module], None] | None = None) -> MemberResult:
    """Pre-train (if the role does), fine-tune, predict; `on_epoch` is passed to `finetune`."""
    t0 = time.perf_counter()
    pretrain_stats: dict = {}
    mlm = None
    if spec.pretrains:
        mlm, pretrain_stats = pretrained_mlm(spec, arrays, on_log)
    model = classifier_for(spec, arrays, mlm).to(member_device())
    del mlm
    settings = spec.finetune
    pad = arrays.special.pad
    ft_stats = finetune(model, arrays.train, arrays.train_labels, pad, settings, on_log=on_log, on_epoch=on_epoch)
    precision = ft_stats["precision"]  # as fine-tuning resolved it on this device
    val_logits = predict_logits(model, arrays.val, pad, precision=precision)
    test_logits = predict_logits(model, arrays.test, pad, precision=precision)
    classifier_dir = checkpoint.save_final(checkpoint.join(spec.out_dir, "classifier"), model)
    ft_stats["wall_s"] = time.perf_counter() - t0
    result = MemberResult(
        name=spec.name, role=spec.role.value, index=spec.index, seed=spec.seed,
        num_layers=spec.model.num_layers, parameters=count_parameters(model),
        val_accuracy=accuracy(val_logits, arrays.val_labels), test_accuracy=accuracy(test_logits, arrays.test_labels),
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
    """The member's saved result, or None; read without pickle (numeric arrays and a JSON string)."""
    raw = checkpoint.read_bytes(checkpoint.join(out_dir, RESULT_FILE))
    if raw is None:
        return None
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return MemberResult(val_logits=data["val_logits"], test_logits=data["test_logits"], **meta)
