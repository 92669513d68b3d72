"""The `distill:` section of a `committee distill` config, and its loader `load_distill_config`.

A distill file is an experiment config (the committee that trains, or trained, the members) plus `distill:`;
`committee run` refuses that key, so only `load_distill_config` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from orchestrator.config.experiment import MAX_SEED, ExperimentConfig, _Strict, validate_dict
from orchestrator.config.loader import apply_overrides, load_raw

DISTILL_METHODS = ("random_hard", "random_single", "random_soft", "random_equal", "random_prior", "selected_prior",
                   "recover", "recover_single", "attention", "full", "kd_full")
# the methods whose labels or guidance come from two or more members
COMMITTEE_METHODS = ("random_soft", "random_equal", "random_prior", "selected_prior", "recover")
# the methods that need the students' pre-trained base (their sets live in its input-embedding space)
BASE_METHODS = ("attention",)


class StudentConfig(_Strict):
    init: Literal["pretrained", "scratch"] = Field(
        "pretrained", description="pretrained: the encoder of a non-member, pre-trained like a member with seed "
        "seed + committee.members (outside the committee), head drawn per student seed; scratch: random weights"
    )
    num_layers: int | None = Field(None, ge=1, le=48, description="student layers; null = model.num_layers (the "
                                   "committee's shape)")
    seeds: int = Field(5, ge=3, le=100, description="students per distilled set (seeds distill.seed + 0..n-1): "
                       "the report gives mean and std over them, and pairs methods over these seeds")
    steps: int = Field(300, ge=1, description="optimizer steps of every student, whatever the size of its set; "
                       "test accuracy is measured once, after the last step")
    batch_size: int = Field(32, ge=1, description="examples per student step (the whole set when smaller)")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW peak learning rate of the students")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay of the students")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description="share of student steps in linear warm-up")
    temperature: float = Field(20.0, gt=0.0, description="T of the soft-label loss: KL divergence of the "
                               "student's log_softmax(logits / T) from the teacher's softmax(logits / T), batchmean "
                               "(hard labels: cross-entropy)")
    augment: Literal["crop", "none"] = Field(
        "crop", description="crop: every step of a student on a distilled set trains on a random span crop of its "
        "batch (the full split's row trains on its examples as they are)")
    crop_min_share: float = Field(0.5, gt=0.0, le=1.0, description="a span crop keeps a share of an example's "
                                  "content drawn uniformly from [crop_min_share, 1]")
    relabel: Literal["per_view", "fixed"] = Field(
        "per_view", description="per_view: a soft-label set's members relabel every augmented view a student "
        "trains on, by the set's rule (CV-DD's relabel); fixed: one label per example, computed once")


class RecoverConfig(_Strict):
    iterations: int = Field(1000, ge=1, le=10000, description="Adam steps (betas 0.5, 0.9; cosine schedule) of "
                            "CV-DD's recover (its scripts: 1,000-4,000)")
    lr: float = Field(0.25, gt=0.0, le=10.0, description="recover learning rate on the per-position token logits")
    stats_weight: float = Field(0.01, ge=0.0, description="weight of the hidden-state mean/variance match "
                                "against the CE term (CV-DD's r_bn)")
    temperature: float = Field(5.0, gt=0.0, description="T of the guiding pair's weights softmax(alpha% / T)")
    init_probability: float = Field(0.9, gt=0.0, lt=1.0, description="probability a position gives its real "
                                    "token at the start (the rest spread over the vocabulary)")
    keep_top: int = Field(32, ge=1, description="vocabulary entries kept per position when the set is saved "
                          "(renormalised); relabelling and students see exactly the saved set")
    indices_per_task: int = Field(10, ge=1, description="IPC indices recovered per Ray task (tasks run in parallel)")
    augment: Literal["crop", "none"] = Field("crop", description="crop: every iteration shows the guiding members "
                                             "a random span crop of each example (CV-DD augments every iteration)")
    crop_min_share: float = Field(0.5, gt=0.0, le=1.0, description="a recover crop keeps a share of an example's "
                                  "content drawn uniformly from [crop_min_share, 1]")


class PriorConfig(_Strict):
    source: Literal["student", "validation"] = Field(
        "student", description="alpha, each member's prior: student = validation accuracy of a student taught by "
        "that member alone (CV-DD's prior); validation = the member's own validation accuracy")
    ipc: int = Field(10, ge=1, description="examples per class of the random real set a prior student learns from")
    seeds: int = Field(1, ge=1, le=20, description="prior students per member (alpha is their mean)")


class AttentionConfig(_Strict):
    steps: int = Field(300, ge=1, description="outer Adam steps learning an attention set (Maekawa et al. 2023)")
    lr: float = Field(1e-2, gt=0.0, le=10.0, description="Adam learning rate of the synthetic embeddings and labels")
    inner_steps: int = Field(1, ge=1, le=10, description="gradient steps a student takes on the set (1 beat 3 "
                             "in the paper)")
    inner_lr: float = Field(1e-2, gt=0.0, le=10.0, description="the student's step size at the start (learned)")
    attention_weight: float = Field(1.0, ge=0.0, description="weight of the attention-label KL in the student's loss")
    real_batch: int = Field(64, ge=1, description="real training examples scoring the updated student per step")


class KdConfig(_Strict):
    steps: int = Field(1500, ge=1, description="optimizer steps of a kd_full student")
    rule: Literal["mean_probability", "prior_weighted", "equal_logit"] = Field(
        "mean_probability", description="the committee's soft labels the student learns: mean_probability = the "
        "soft committee (the paper's), prior_weighted = CV-DD's relabel, equal_logit = the mean logit")
    unlabelled_texts: int = Field(0, ge=0, description="texts of the task's training file outside the run's "
                                  "splits added to the transfer set, their labels dropped (the committee labels them)")
    latency_examples: int = Field(200, ge=1, description="test examples timed one at a time for the latency "
                                  "comparison (committee, best member, student)")


class DistillConfig(_Strict):
    ipc: list[int] = Field([1, 10, 50], min_length=1, description="examples per class of each distilled set "
                           "(sets are nested: the first n of a larger set)")
    methods: list[Literal[DISTILL_METHODS]] = Field(  # type: ignore[valid-type]
        list(DISTILL_METHODS), min_length=1, description="report rows: " + ", ".join(DISTILL_METHODS)
        + " (chance is always reported)")
    selection: Literal["herding", "confidence"] = Field(
        "herding", description="selected_prior's choice of real examples: herding in the members' pooled [CLS] "
        "space, or the highest committee probability of the true class")
    relabel_temperature: float = Field(10.0, gt=0.0, description="T of the relabel weights softmax(alpha% / T)")
    seed: int = Field(0, ge=0, le=MAX_SEED - 1000, description="seed of the random examples, guiding pairs and "
                      "student seeds")
    prior: PriorConfig = PriorConfig()
    student: StudentConfig = StudentConfig()
    recover: RecoverConfig = RecoverConfig()
    attention: AttentionConfig = AttentionConfig()
    kd: KdConfig = KdConfig()

    @model_validator(mode="after")
    def _distinct(self) -> "DistillConfig":
        for key, values in (("ipc", self.ipc), ("methods", self.methods)):
            if len(set(values)) != len(values):
                raise ValueError(f"distill.{key} lists a value twice: {values}")
        if any(n < 1 for n in self.ipc):
            raise ValueError(f"distill.ipc values must be at least 1 (got {self.ipc})")
        return self


class DistillExperimentConfig(ExperimentConfig):
    """A `committee distill` file: the experiment that trains (or trained) the committee, plus `distill:`."""

    distill: DistillConfig = DistillConfig()


def load_distill_config(path: str | Path, overrides: list[str] | None = None) -> DistillExperimentConfig:
    """A `committee distill` config: the experiment sections plus `distill:` (`committee run` refuses that key)."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return validate_dict(raw, source=str(path), model=DistillExperimentConfig)
