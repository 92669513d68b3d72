"""The `claims:` section of a `committee claims` suite, and its loader `load_claims_config`.

A suite file is the experiment every block's committee run starts from (its task is the task the block
pre-trains on) plus `claims:`: how many seed blocks, the other tasks the same pre-training is fine-tuned on,
the two sweeps (pre-training data, token overlap), the distillation, the latency measurement and the
equivalence margin. `committee claims NAME` reads `configs/claims_NAME.yaml`; a path reads that file.
Every part is strict: an unknown key names the closest valid one, wherever it sits in the file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from orchestrator.config.distill import DistillConfig
from orchestrator.config.errors import format_validation
from orchestrator.config.experiment import (
    MAX_BASE_SEED,
    ExperimentConfig,
    TaskConfig,
    _Strict,
    validate_dict,
)
from orchestrator.config.loader import apply_overrides, load_raw
from orchestrator.config.sweep import SWEEP_CORPUS_PREFIX, SweepConfig, SweepSection, check_space_key
from workers.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SUITE_PREFIX = "claims_"  # a built-in suite NAME is configs/claims_NAME.yaml
# block b's base seed is seed + b x BLOCK_SEED_STRIDE: its members (seed + i), scratch twins and deep model
# (seed + 10,000) never share a seed with another block's
BLOCK_SEED_STRIDE = 20_000
# the claims the distillation's comparisons rest on (orchestrator/claims/measure.py reads these rows)
DISTILL_METHODS_NEEDED = ("random_single", "random_equal", "random_prior")
# what an entry of claims.other_tasks takes from the suite's task unless it sets it
INHERITED_TASK_KEYS = ("train_per_class", "val_per_class", "test_per_class", "max_length", "sample_seed")


class LatencySection(_Strict):
    batch_sizes: list[int] = Field([1, 32], min_length=1, description="requests of this many test examples each "
                                   "(batch 1: one user's request; larger: a server's batch)")
    requests: int = Field(100, ge=5, le=100_000, description="timed requests per batch size; the contenders "
                          "alternate request by request, and the report gives medians")
    warmup: int = Field(5, ge=0, le=1000, description="untimed requests per contender first")


class ClaimsSection(_Strict):
    seed_blocks: int = Field(3, ge=3, le=50, description="independent replicates of every claim: block b runs "
                             "with base seed seed + 20000 x b (its own members, twins and BERT-6); a sweep's "
                             "blocks are its seeds")
    other_tasks: dict[str, dict[str, Any]] = Field(
        {}, description="tasks the block's pre-training is also fine-tuned on (committee run --pretrained-from): "
        "label -> task section (its keys as under task:; name defaults to the label; the sizes, max_length and "
        "sample_seed it leaves out are task:'s)")
    data: SweepSection = Field(description="claim 2: a sweep: section over pre-training data (one space key, two "
                               "or more grid values); run on the suite's experiment without the deep model")
    overlap: SweepSection = Field(description="claim 3: a sweep: section over token overlap at a fixed corpus size "
                                  "(a sweep.corpus.* key; corpus.source ranked or task_mix)")
    distill: DistillConfig = Field(description="claim 5: the distill: section run on each block's committee "
                                   "(committee distill --from-run); its methods include "
                                   + ", ".join(DISTILL_METHODS_NEEDED))
    latency: LatencySection = LatencySection()
    margin_points: float = Field(2.0, gt=0.0, le=50.0, description="claim 4's equivalence margin in accuracy "
                                 "points: the committee matches BERT-6 when the 95% interval of their difference "
                                 "lies within +-margin (or wholly above 0)")
    budget_note: str = Field("", description="what this suite's budgets can and cannot show, in words (claims.md "
                             "prints it)")


class ClaimsConfig(BaseModel):
    """A suite: the experiment each block's committee run starts from, and the `claims:` section with the other
    tasks and the sweeps already resolved into their configs."""

    model_config = {"frozen": True, "arbitrary_types_allowed": True}

    path: Path
    experiment: ExperimentConfig
    claims: ClaimsSection
    other_tasks: dict[str, TaskConfig]
    data_sweep: SweepConfig
    overlap_sweep: SweepConfig

    @property
    def name(self) -> str:
        return self.experiment.name

    def block_seed(self, block: int) -> int:
        return self.experiment.seed + BLOCK_SEED_STRIDE * block


def suite_path(suite: str | Path) -> Path:
    """A suite file: SUITE itself when it is a file, else the built-in `configs/claims_SUITE.yaml`."""
    path = Path(suite)
    if path.is_file():
        return path
    builtin = REPO / "configs" / f"{SUITE_PREFIX}{suite}.yaml"
    if builtin.is_file():
        return builtin
    names = sorted(p.stem[len(SUITE_PREFIX):] for p in (REPO / "configs").glob(f"{SUITE_PREFIX}*.yaml"))
    hint = difflib.get_close_matches(str(suite), names, n=1)
    raise ConfigError(f"claims suite '{suite}' is neither a file nor a built-in suite"
                      + (f" (did you mean '{hint[0]}'?)" if hint else "") + f"; built-in suites: {', '.join(names)}")


def _section(raw_claims: Any, path: Path) -> ClaimsSection:
    if not isinstance(raw_claims, dict):
        raise ConfigError(f"{path} has no 'claims:' section (a mapping with data, overlap and distill); see "
                          "configs/claims_smoke.yaml")
    try:
        return ClaimsSection.model_validate(raw_claims)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, str(path), ClaimsSection, section="claims")) from None


def _task(label: str, raw: Any, base: TaskConfig, path: Path) -> TaskConfig:
    """One of claims.other_tasks as a task section (strict; an unknown key names the closest one). The sizes and
    the sampling seed it leaves out are the suite's task's (INHERITED_TASK_KEYS); its name defaults to the label."""
    where = f"claims.other_tasks.{label}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where} must be a mapping of task keys (e.g. {{train_per_class: 100}}), got "
                          f"{raw!r}")
    inherited = {key: getattr(base, key) for key in INHERITED_TASK_KEYS}
    try:
        return TaskConfig.model_validate({"name": label, **inherited, **raw})
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, str(path), TaskConfig, section=where)) from None


def with_task(experiment: ExperimentConfig, task: TaskConfig, source: str, **changes) -> ExperimentConfig:
    """`experiment` on `task` (and other top-level `changes`), validated whole: a task's max_length must still fit
    the model's positions."""
    return validate_dict({**experiment.model_dump(mode="json"), "task": task.model_dump(mode="json"), **changes},
                         source=source)


def _sweep(experiment: ExperimentConfig, section: SweepSection, which: str, blocks: int, seeds_given: bool,
           path: Path) -> SweepConfig:
    """A claim's sweep: the suite's experiment without the deep model, its blocks as the sweep's seeds."""
    where = f"claims.{which}"
    if seeds_given and section.seeds != blocks:
        raise ConfigError(f"{path}: {where}.seeds is {section.seeds}, but a claim's sweep has one seed per block "
                          f"(claims.seed_blocks = {blocks}); leave {where}.seeds out")
    if len(section.space) != 1:
        raise ConfigError(f"{path}: {where}.space varies {len(section.space)} keys; a claim's sweep varies exactly one "
                          f"(claim 2: the pre-training data, e.g. pretrain.articles; claim 3: the overlap, e.g. "
                          f"sweep.corpus.rank_quantile)")
    key, domain = next(iter(section.space.items()))
    if domain.kind != "grid" or len(set(map(repr, domain.bounds))) < 2:
        raise ConfigError(f"{path}: {where}.space.{key} must be a grid of at least two distinct values (the "
                          f"claim compares its lowest and highest level), got {domain.kind}: {domain.bounds}")
    for space_key in section.space:
        try:
            check_space_key(space_key)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where}: {exc}") from None
    if section.search != "grid" or section.scheduler != "none":
        raise ConfigError(f"{path}: {where} must run every point to the end (search: grid, scheduler: none); "
                          f"got search {section.search}, scheduler {section.scheduler}")
    name = f"{experiment.name}-{which}"
    sweep_experiment = experiment.model_copy(update={"name": name,
                                                     "deep": experiment.deep.model_copy(update={"enabled": False})})
    return SweepConfig(experiment=validate_dict(sweep_experiment.model_dump(mode="json"), source=f"{path} ({where})"),
                       sweep=section.model_copy(update={"seeds": blocks}))


def _check_experiment(e: ExperimentConfig, claims: ClaimsSection, path: Path) -> None:
    """What claims 1 and 4 need of every block's committee run."""
    needs = [("committee.scratch", e.committee.scratch, True, "claim 1 compares pre-trained and scratch committees"),
             ("deep.enabled", e.deep.enabled, True, "claim 4 compares the committee with BERT-6"),
             ("deep.token_budget", e.deep.token_budget, "committee",
              "claim 4 compares at matched pre-training tokens: BERT-6 sees the whole committee's tokens")]
    for key, value, wanted, why in needs:
        if value != wanted:
            raise ConfigError(f"{path}: {key} is {value!r}; a claims suite needs {wanted!r} ({why})")
    if e.committee.members < 2:
        raise ConfigError(f"{path}: committee.members is {e.committee.members}; a committee needs at least 2 members")
    if e.seed + BLOCK_SEED_STRIDE * (claims.seed_blocks - 1) > MAX_BASE_SEED:
        raise ConfigError(f"{path}: seed {e.seed} leaves no room for {claims.seed_blocks} seed blocks (block b uses "
                          f"seed + {BLOCK_SEED_STRIDE} x b, at most {MAX_BASE_SEED}); lower seed")
    missing = [m for m in DISTILL_METHODS_NEEDED if m not in claims.distill.methods]
    if missing:
        raise ConfigError(f"{path}: claims.distill.methods lacks {', '.join(missing)}: claim 5 compares committee "
                          f"labels with the best member's (random_prior - random_single) and prior weights with "
                          f"equal weights (random_prior - random_equal)")
    if claims.distill.ipc and max(claims.distill.ipc) > e.task.train_per_class:
        raise ConfigError(f"{path}: claims.distill.ipc {claims.distill.ipc} asks for more examples per class than "
                          f"task.train_per_class ({e.task.train_per_class})")
    overlap = claims.overlap
    key = next(iter(overlap.space), "")
    if not key.startswith(SWEEP_CORPUS_PREFIX) or overlap.corpus.source == "seeded":
        raise ConfigError(f"{path}: claims.overlap must vary the overlap at a fixed corpus size: a "
                          f"{SWEEP_CORPUS_PREFIX}* space key (e.g. rank_quantile) with claims.overlap.corpus.source "
                          f"ranked or task_mix (got space key '{key}', source {overlap.corpus.source})")
    if key == f"{SWEEP_CORPUS_PREFIX}tokens":
        raise ConfigError(f"{path}: claims.overlap varies {key}, the corpus size; claim 3 holds the size fixed "
                          f"(claims.data varies the data)")


def load_claims_config(suite: str | Path, overrides: list[str] | None = None) -> ClaimsConfig:
    """The suite at `suite` (a file, or a built-in name) with `KEY=VALUE` overrides (claims.* included),
    validated: the experiment as `committee run` validates it, `claims:` strictly, each other task as a task
    section, each sweep as `committee sweep` checks its section."""
    path = suite_path(suite)
    raw = apply_overrides(load_raw(path), list(overrides or []))
    raw_claims = raw.pop("claims", None)
    experiment = validate_dict(raw, source=str(path))
    claims = _section(raw_claims, path)
    _check_experiment(experiment, claims, path)
    tasks = {label: _task(label, entry, experiment.task, path) for label, entry in claims.other_tasks.items()}
    for label, task in tasks.items():
        with_task(experiment, task, f"{path} (claims.other_tasks.{label})")
    if experiment.task.name in tasks:
        raise ConfigError(f"{path}: claims.other_tasks.{experiment.task.name} repeats the task the blocks pre-train "
                          f"on (task.name); list only the other tasks")
    sweeps = {which: _sweep(experiment, getattr(claims, which), which, claims.seed_blocks,
                            "seeds" in (raw_claims.get(which) or {}), path) for which in ("data", "overlap")}
    return ClaimsConfig(path=path, experiment=experiment, claims=claims, other_tasks=tasks,
                        data_sweep=sweeps["data"], overlap_sweep=sweeps["overlap"])
