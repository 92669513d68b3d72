"""The `sweep:` section of a `committee sweep` config, and its loader `load_sweep_config`.

A sweep file is the experiment every point starts from plus `sweep:` (the space of dotted config keys to
vary, the search, scheduler and pre-training budget). Overrides may set a domain with
`sweep.space.<config key>.<kind>=VALUE`; every space key is checked against the experiment config.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from orchestrator.config.errors import format_validation, model_for, unknown_key_message
from orchestrator.config.experiment import MAX_RUN_NAME_LENGTH, ExperimentConfig, _Strict, validate_dict
from orchestrator.config.loader import apply_overrides, load_raw, parse_value
from workers.errors import ConfigError

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
# keys a sweep point cannot change: the committee of a point is its seeds, a sweep trains no deep model,
# and every trial gets the same resources and storage
SWEEP_FIXED_KEYS = ("name", "committee.members", "committee.scratch", "deep.", "resources.", "storage.")
SWEEP_CORPUS_PREFIX = "sweep.corpus."
# the best point of a sweep is written as a config whose run is named <sweep name>-best (orchestrator/sweep/driver.py)
MAX_SWEEP_NAME_LENGTH = MAX_RUN_NAME_LENGTH - len("-best")


class SpaceDomain(_Strict):
    """One dimension of a sweep's space: exactly one of the keys below."""

    grid: list[Any] | None = Field(None, min_length=1, description="every value, in order (search grid or random)")
    choice: list[Any] | None = Field(None, min_length=1, description="one value drawn per point (random, optuna)")
    uniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[lo, hi]")
    loguniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[lo, hi], lo > 0")
    randint: list[int] | None = Field(None, min_length=2, max_length=2, description="[lo, hi): hi excluded")

    @model_validator(mode="after")
    def _one_kind_with_ordered_bounds(self) -> "SpaceDomain":
        given = [kind for kind in SPACE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACE_KINDS)} (got {', '.join(given) or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs [lo, hi] with lo < hi (got {bounds})")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs lo > 0 (got {self.loguniform})")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in SPACE_KINDS if getattr(self, kind) is not None)

    @property
    def bounds(self) -> list:
        return getattr(self, self.kind)


class SweepCorpusConfig(_Strict):
    source: Literal["seeded", "ranked", "task_mix"] = Field(
        "seeded", description="seeded: the first pretrain.articles articles of the seeded order; ranked: a window "
        "of articles ranked by task-word density; task_mix: task training text mixed into seeded articles")
    tokens: int | None = Field(None, ge=1000, description="ranked / task_mix: the corpus size in tokens of the "
                                                          "sweep's tokenizer (the same at every overlap level)")
    rank_quantile: float = Field(0.0, ge=0.0, le=1.0, description="ranked: where the window starts in the ranking "
                                                                  "(0: articles richest in task words, 1: poorest)")
    task_share: float = Field(0.0, ge=0.0, le=1.0, description="task_mix: share of the tokens from the task's "
                                                               "training text (never validation or test text)")
    pool_articles: int | None = Field(None, ge=1, description="ranked / task_mix: articles to draw from (the first "
                                                              "N of the seeded order); null = all")

    @model_validator(mode="after")
    def _size_for_controlled_corpora(self) -> "SweepCorpusConfig":
        if self.source != "seeded" and self.tokens is None:
            raise ValueError(f"source {self.source} needs tokens (the corpus size every overlap level shares)")
        return self


class SweepSection(_Strict):
    space: dict[str, SpaceDomain] = Field(
        {}, description="dotted config keys (or sweep.corpus.*) -> grid/choice/uniform/"
        "loguniform/randint")
    seeds: int = Field(3, ge=1, le=1024, description="paired members per point: member i (seed = base seed + i) "
                                                      "and its scratch twin, i < seeds")
    search: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: every combination of grid values; random: num_samples draws; optuna: Tune's "
        "OptunaSearch (pip install optuna)")
    num_samples: int = Field(1, ge=1, description="random / optuna: points drawn (random: per grid combination)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="trials at once; null = as many as fit")
    scheduler: Literal["none", "asha"] = Field("none", description="asha: stop poor trials at fine-tuning epochs")
    metric: Literal["val_gap", "val_accuracy", "scratch_val_accuracy"] = Field(
        "val_gap", description="what ASHA and the search optimise (validation only): pre-trained minus scratch "
        "accuracy, or either arm's accuracy")
    mode: Literal["max", "min"] = Field("max", description="maximise or minimise the metric")
    grace_epochs: int = Field(1, ge=1, description="asha: fine-tuning epochs every trial gets")
    reduction_factor: int = Field(2, ge=2, description="asha: 1 in reduction_factor trials goes on at a rung")
    budget: Literal["steps", "tokens", "epochs"] = Field(
        "steps", description="pre-training per member: steps: pretrain.max_steps of the point; tokens: "
        "pretrain_tokens at every point whatever its batch, sequence length or corpus (same compute, more data "
        "repeats less); epochs: pretrain_epochs passes over its own corpus (more data, more tokens)")
    pretrain_tokens: int | None = Field(
        None, ge=1, description="budget tokens: token positions per member (steps = tokens / (batch_size x "
        "seq_len)); null = the base config's max_steps x batch_size x seq_len")
    pretrain_epochs: float = Field(1.0, gt=0.0, description="budget epochs: passes over the pre-training blocks")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (it resumes from its checkpoints)")
    corpus: SweepCorpusConfig = SweepCorpusConfig()


class SweepConfig(_Strict):
    """A sweep file: the experiment every point starts from, and how points are made."""

    experiment: ExperimentConfig
    sweep: SweepSection


def _sweep_space_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `sweep.space.<dotted key>.<kind>=VALUE` (the key has dots of its own); return the other overrides."""
    rest = []
    for item in overrides:
        dotted, _, text = item.partition("=")
        if not dotted.strip().startswith("sweep.space.") or "=" not in item:
            rest.append(item)
            continue
        key, _, kind = dotted.strip()[len("sweep.space."):].rpartition(".")
        if not key or kind not in SPACE_KINDS:
            raise ConfigError(f"override '{item}': write sweep.space.<config key>.<{'|'.join(SPACE_KINDS)}>=VALUE, "
                              "e.g. sweep.space.pretrain.articles.grid=[100,400]")
        space = raw.setdefault("sweep", {}).setdefault("space", {})
        if not isinstance(space, dict):
            raise ConfigError("sweep.space must be a mapping of config keys to domains")
        space[key] = {kind: parse_value(item, text)}
    return rest


def check_space_key(dotted: str) -> None:
    """A space key must be a leaf of the experiment config (or of sweep.corpus) that a point may change."""
    if dotted.startswith(SWEEP_CORPUS_PREFIX):
        leaf = dotted[len(SWEEP_CORPUS_PREFIX):]
        if leaf not in SweepCorpusConfig.model_fields:
            hint = difflib.get_close_matches(leaf, list(SweepCorpusConfig.model_fields), n=1)
            raise ConfigError(f"sweep.space: unknown key '{dotted}'" + (f" (did you mean '{SWEEP_CORPUS_PREFIX}"
                              f"{hint[0]}'?)" if hint else "") + f"; sweep.corpus keys: "
                              f"{', '.join(SweepCorpusConfig.model_fields)}")
        return
    parts = dotted.split(".")
    parent = model_for(parts[:-1], ExperimentConfig)
    if parent is None or parts[-1] not in parent.model_fields:
        raise ConfigError(f"sweep.space: {unknown_key_message(dotted, ExperimentConfig)}")
    section = model_for(parts, ExperimentConfig)
    if section is not None:
        raise ConfigError(f"sweep.space: '{dotted}' is a section, not a value; vary one of its keys: "
                          f"{', '.join(f'{dotted}.{k}' for k in section.model_fields)}")
    if dotted.startswith(SWEEP_FIXED_KEYS):
        raise ConfigError(f"sweep.space: '{dotted}' cannot vary in a sweep (a point's committee is its seeds, a "
                          "sweep trains no deep model, and every trial gets the same resources and storage); "
                          "set it outside sweep.space")


def load_sweep_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """A sweep file: the experiment part validated as `committee run` validates it, the `sweep:` section
    with `SweepSection`, every space key checked against the experiment config."""
    raw = load_raw(path)
    rest = _sweep_space_overrides(raw, list(overrides or []))
    raw = apply_overrides(raw, rest)
    sweep_raw = raw.pop("sweep", None)
    if not isinstance(sweep_raw, dict):
        raise ConfigError(f"{path} has no 'sweep:' section (a mapping with at least 'space'); see "
                          "configs/sweep_smoke.yaml, or run an experiment with `committee run`")
    experiment = validate_dict(raw, source=str(path))
    if len(experiment.name) > MAX_SWEEP_NAME_LENGTH:
        raise ConfigError(f"{path}: the sweep's name is {len(experiment.name)} characters long; a sweep's name has at "
                          f"most {MAX_SWEEP_NAME_LENGTH}, since its best point is written as a run named <name>-best "
                          f"(a run name has at most {MAX_RUN_NAME_LENGTH})")
    try:
        section = SweepSection.model_validate(sweep_raw)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, f"{path}", SweepSection, section="sweep")) from None
    if not section.space:
        raise ConfigError(f"{path}: sweep.space is empty; give at least one key to vary, e.g. "
                          "sweep.space.pretrain.articles.grid=[100,400]")
    for key in section.space:
        check_space_key(key)
    return SweepConfig(experiment=experiment, sweep=section)

