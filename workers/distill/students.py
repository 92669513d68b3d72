"""Students of a CV-DD distillation: a fresh BERT trained on one distilled set (`workers.distill.sets.DistilledSet`)
by the members' fine-tuning loop (soft targets: KL at temperature T; hard labels: cross-entropy), scored once
on the test split after the last step. `train_student` is what a Ray task runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workers.committee.voting import accuracy
from workers.distill.sets import DistilledSet
from workers.model.bert import ModelSettings, build_classifier, init_from_streams, transfer_encoder
from workers.text.corpus import Ragged
from workers.train.finetune import FinetuneSettings, finetune, predict_logits


@dataclass(frozen=True)
class StudentSpec:
    """One student: a fresh model trained on one distilled set (small and frozen: it crosses the Ray boundary)."""

    method: str
    ipc: int | None  # None: the full training set
    seed: int
    model: ModelSettings
    finetune: FinetuneSettings  # max_steps fixed; seed = the student's seed
    init: str  # "pretrained" (encoder of the non-member in base_dir) or "scratch"
    base_dir: str | None  # the non-member's masked LM directory (pretrained init)


def build_student(spec: StudentSpec, vocab_size: int, num_classes: int):
    """The student before training: every weight from the student's streams, then (pretrained init) the
    non-member's embeddings and encoder; the pooler and classifier stay the student's own draw."""
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from workers.storage import checkpoint

    hf_logging.disable_progress_bar()
    model = build_classifier(spec.model.bert_config(vocab_size, num_classes), num_classes)
    init_from_streams(model, spec.seed, "student/init", head_stream="student/head")
    if spec.init == "pretrained":
        transfer_encoder(model, checkpoint.load_pretrained(BertForMaskedLM, spec.base_dir))
    return model


def train_student(spec: StudentSpec, train: DistilledSet, test: Ragged, test_labels: np.ndarray, pad_id: int,
                  vocab_size: int, num_classes: int, num_threads: int | None = None) -> dict:
    """Train one student on `train` for exactly spec.finetune.max_steps steps; test accuracy after the last."""
    from workers.model.devices import member_device

    if num_threads:
        torch.set_num_threads(num_threads)
    model = build_student(spec, vocab_size, num_classes).to(member_device())
    targets = train.labels if train.soft_labels is None else train.soft_labels
    stats = finetune(model, train.examples, targets, pad_id, spec.finetune)
    test_logits = predict_logits(model, test, pad_id, precision=spec.finetune.precision)
    return {"method": spec.method, "ipc": spec.ipc, "seed": spec.seed, "examples": len(train),
            "test_accuracy": accuracy(test_logits, test_labels), "final_loss": stats["final_loss"],
            "steps": stats["steps"], "train_s": round(stats["train_s"], 3)}
