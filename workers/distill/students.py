"""Students of a CV-DD distillation: a fresh BERT trained on one distilled set (`workers.distill.sets.DistilledSet`)
by the members' fine-tuning loop (soft targets: KL at temperature T; hard labels: cross-entropy), scored once
on an evaluation split after the last step. `train_student` is what a Ray task runs.

Each step a student may see an augmented view of its batch (`StudentSpec.augment`: a random span crop,
`workers.distill.augment`) and, with a `ViewTeacher`, the view's soft label computed then and there by the
labelling members and rule: CV-DD's relabel of every augmented view in every epoch (FKD-style), instead of one
fixed label per example. The teacher members run in eval mode. CV-DD's teachers relabel in train mode so that
BatchNorm normalises with the statistics of the synthetic batch (its batch-specific soft labelling, BSSL); a
BERT's LayerNorm normalises each token by its own statistics and has no batch or running statistics, so a
member's label of an example is the same in any batch (tests/test_distill_teaches.py checks it) and train
mode would only add dropout noise. BSSL therefore has no counterpart here: what it corrects cannot happen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workers.committee.voting import accuracy, soft_labels
from workers.distill.augment import crop_batch
from workers.distill.sets import DistilledSet, teacher_logits
from workers.model.bert import ModelSettings, build_classifier, init_from_streams, transfer_encoder
from workers.text.corpus import Ragged
from workers.train.finetune import FinetuneSettings, TokenDistributions, classifier_logits, finetune, predict_logits
from workers.train.seeds import numpy_rng


@dataclass(frozen=True)
class ViewTeacher:
    """Who labels each augmented view a student trains on, and by which rule (small: it crosses Ray)."""

    classifier_dirs: tuple[str, ...]  # the labelling members' weight directories
    rule: str  # a soft-label rule of workers.committee.voting.soft_labels
    prior: tuple[float, ...]  # alpha of each labelling member, in [0, 1] (prior_weighted)
    temperature: float  # T of the weights softmax(alpha% / T)


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
    augment: str = "none"  # "crop": every step trains on a random span crop of its batch (stream student/crop)
    crop_min_share: float = 0.5  # a crop keeps at least this share of an example's content
    teacher: ViewTeacher | None = None  # relabel every view with these members; None: the set's fixed labels


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


class ViewLabeller:
    """The labelling members of a `ViewTeacher`, loaded once: teacher logits [b, classes] of a padded batch."""

    def __init__(self, teacher: ViewTeacher, device):
        from workers.committee.committee import load_members
        from workers.model.packed import PackedCommittee

        self.teacher, self.device = teacher, device
        self.members = [m.to(device) for m in load_members(teacher.classifier_dirs)]
        self.packed = PackedCommittee.from_members(self.members).to(device)  # one shape: they came from one run

    @torch.no_grad()
    def member_logits(self, tokens, attention_mask: torch.Tensor) -> np.ndarray:
        """Every labelling member's logits [K, b, classes] on the batch (token ids or token distributions)."""
        if isinstance(tokens, TokenDistributions):
            return torch.stack([classifier_logits(m, tokens, attention_mask) for m in self.members]).float().cpu().numpy()
        return self.packed(tokens, attention_mask).float().cpu().numpy()

    def __call__(self, tokens, attention_mask: torch.Tensor) -> torch.Tensor:
        t = self.teacher
        scores = soft_labels(self.member_logits(tokens, attention_mask), t.rule, np.asarray(t.prior), t.temperature)
        return torch.from_numpy(teacher_logits(scores, t.rule)).to(attention_mask.device)


def student_view(spec: StudentSpec, labels: np.ndarray, pad_id: int, labeller: ViewLabeller | None = None):
    """The `view` hook of `workers.train.finetune.finetune` for this student: crop the batch (spec.augment)
    with the step's stream, then label the view (labeller) or keep the rows' fixed labels; None when the
    student trains on its batches as they are."""
    if spec.augment == "none" and labeller is None:
        return None

    def view(tokens, attention_mask, rows, step):
        if spec.augment == "crop":
            rng = numpy_rng(spec.seed, "student/crop", step)
            tokens, attention_mask = crop_batch(tokens, attention_mask, rng, spec.crop_min_share, pad_id)
        if labeller is not None:
            return tokens, attention_mask, labeller(tokens, attention_mask)
        return tokens, attention_mask, torch.from_numpy(labels[rows]).to(attention_mask.device)

    return view


def train_student(spec: StudentSpec, train: DistilledSet, test: Ragged, test_labels: np.ndarray, pad_id: int,
                  vocab_size: int, num_classes: int, num_threads: int | None = None) -> dict:
    """Train one student on `train` for exactly spec.finetune.max_steps steps; accuracy on `test` (the split it
    is scored on: test for report rows, validation for the students behind CV-DD's prior) after the last."""
    from workers.model.devices import member_device

    if num_threads:
        torch.set_num_threads(num_threads)
    device = member_device()
    model = build_student(spec, vocab_size, num_classes).to(device)
    targets = train.labels if train.soft_labels is None else train.soft_labels
    labeller = None if spec.teacher is None else ViewLabeller(spec.teacher, device)
    stats = finetune(model, train.examples, targets, pad_id, spec.finetune,
                     view=student_view(spec, targets, pad_id, labeller))
    test_logits = predict_logits(model, test, pad_id, precision=spec.finetune.precision)
    return {"method": spec.method, "ipc": spec.ipc, "seed": spec.seed, "examples": len(train),
            "test_accuracy": accuracy(test_logits, test_labels), "final_loss": stats["final_loss"],
            "steps": stats["steps"], "train_s": round(stats["train_s"], 3)}
