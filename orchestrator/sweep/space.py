"""A sweep's space as plain data: the points it holds, each point's config, and its data configuration.

A *point* is a mapping {dotted key: value} over the keys of `sweep.space`; a *trial* is a point and a
member index i < sweep.seeds (member seed = base seed + i, as in `committee run`). A point's config is
the sweep's experiment with the point's values set by the same dotted-key code the CLI's overrides use,
validated by the same models. Keys that change the prepared token arrays (task, tokenizer, corpus) are
*data keys*: their values must be discrete so every data configuration is prepared, and its arrays
put into the object store once, before any trial starts. A trial's scratch twin has a *twin key*
(`workers.train.trial.twin_key`): trials with equal keys share one trained twin. Nothing here imports Ray; the
driver (orchestrator.sweep.driver) and the Tune trainable (orchestrator.sweep.tune) both use it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass

from pydantic import ValidationError

from orchestrator.config.experiment import ExperimentConfig, validate_dict
from orchestrator.config.loader import set_dotted
from orchestrator.config.sweep import SWEEP_CORPUS_PREFIX, SpaceDomain, SweepConfig, SweepCorpusConfig
from workers.errors import ConfigError

MEMBER_INDEX = "member_index"  # the trial's member index in its config (grid and random search)
# settings the prepared arrays depend on (see orchestrator.run.prepare's cache keys), and the corpus knobs
DATA_KEY_PREFIXES = ("data.", "task.", "tokenizer.", "pretrain.articles", "pretrain.corpus.", "pretrain.order_seed",
                     "pretrain.mode", "pretrain.seq_len", SWEEP_CORPUS_PREFIX)
MAX_DATA_VALUES = 64  # discrete values a data key may take (each is prepared before the trials)
MAX_CHECKED_POINTS = 4096  # beyond this, points are checked key by key instead of as a full product


@dataclass(frozen=True)
class PointConfig:
    """One point: the experiment config its members train with, and its corpus settings."""

    values: tuple  # ((dotted key, value), ...) sorted by key
    experiment: ExperimentConfig
    corpus: SweepCorpusConfig

    @property
    def point_id(self) -> str:
        return "p-" + _digest(list(self.values))[:10]

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.values)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def plain_value(value):
    """A Tune-sampled value as a plain Python scalar (numpy scalars have `.item()`), so strict models take it."""
    return value.item() if hasattr(value, "item") else value


def is_data_key(dotted: str) -> bool:
    return dotted.startswith(DATA_KEY_PREFIXES)


def point_config(cfg: SweepConfig, values: dict) -> PointConfig:
    """The config of the point `values` ({dotted key: value}); a value the models refuse is a ConfigError."""
    values = {key: plain_value(value) for key, value in values.items()}
    raw = cfg.experiment.model_dump(mode="json")
    corpus_raw = cfg.sweep.corpus.model_dump(mode="json")
    for key, value in values.items():
        if key.startswith(SWEEP_CORPUS_PREFIX):
            corpus_raw[key[len(SWEEP_CORPUS_PREFIX):]] = value
        else:
            set_dotted(raw, key, value)
    label = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
    experiment = validate_dict(raw, source=f"sweep point ({label})")
    try:
        corpus = SweepCorpusConfig.model_validate(corpus_raw)
    except ValidationError as exc:
        raise ConfigError(f"sweep point ({label}): sweep.corpus: {exc.errors()[0]['msg']}") from None
    return PointConfig(tuple(sorted(values.items())), experiment, corpus)


def data_settings(point: PointConfig) -> dict:
    """What a point's token arrays depend on; points with equal settings share one prepared data configuration."""
    e = point.experiment
    return {"data": e.data.model_dump(mode="json"), "task": e.task.model_dump(mode="json"),
            "tokenizer": e.tokenizer.model_dump(mode="json"),
            "pretrain": {"articles": e.pretrain.articles, "order_seed": e.pretrain.order_seed,
                         "mode": e.pretrain.mode, "seq_len": e.pretrain.seq_len,
                         "corpus": e.pretrain.corpus.model_dump(mode="json")},
            "corpus": point.corpus.model_dump(mode="json")}


def data_id(point: PointConfig) -> str:
    return "d-" + _digest(data_settings(point))[:12]


# ----------------------------------------------------------------------------------------------
# checking the space before any trial


def candidate_values(domain: SpaceDomain) -> list:
    """Values that stand for a domain when points are checked: every listed value, or the bounds."""
    if domain.kind in ("grid", "choice"):
        return list(domain.bounds)
    if domain.kind == "randint":
        return [domain.bounds[0], domain.bounds[1] - 1]
    return list(domain.bounds)


def discrete_values(key: str, domain: SpaceDomain) -> list:
    """Every value a data key can take; a continuous or too wide domain is a ConfigError."""
    if domain.kind in ("grid", "choice"):
        values = list(domain.bounds)
    elif domain.kind == "randint" and domain.bounds[1] - domain.bounds[0] <= MAX_DATA_VALUES:
        values = list(range(domain.bounds[0], domain.bounds[1]))
    else:
        raise ConfigError(
            f"sweep.space.{key}: {key} changes the prepared data, so its values must be listed (grid or choice, "
            f"or randint over at most {MAX_DATA_VALUES} values) and each is prepared before the trials; "
            f"got {domain.kind} {domain.bounds}")
    if len(values) > MAX_DATA_VALUES:
        raise ConfigError(f"sweep.space.{key}: {len(values)} values of a data key; at most {MAX_DATA_VALUES}")
    return values


def check_search(cfg: SweepConfig) -> None:
    """Combinations of search, space and budget that cannot work."""
    s = cfg.sweep
    kinds = {key: domain.kind for key, domain in s.space.items()}
    if s.search == "grid":
        other = {k: v for k, v in kinds.items() if v != "grid"}
        if other:
            raise ConfigError(f"search: grid takes grid entries only, but sweep.space has {_pairs(other)}; use "
                              "search: random (or optuna) for choice/uniform/loguniform/randint, or list the values "
                              "with grid")
        if s.num_samples != 1:
            raise ConfigError("search: grid runs every combination once (seeds repeat it); set num_samples: 1 or "
                              "use search: random")
    if s.search == "optuna":
        grids = {k: v for k, v in kinds.items() if v == "grid"}
        if grids:
            raise ConfigError(f"search: optuna samples every key and cannot take grid entries ({_pairs(grids)}); "
                              "use choice instead")
    if s.budget != "steps" and "pretrain.max_steps" in s.space:
        raise ConfigError(f"sweep.space.pretrain.max_steps has no effect with budget: {s.budget} (steps follow from "
                          f"the budget at each point); use budget: steps to vary it")


def _pairs(kinds: dict) -> str:
    return ", ".join(f"{key} ({kind})" for key, kind in kinds.items())


def data_points(cfg: SweepConfig) -> list[PointConfig]:
    """One point per data configuration the space can reach (data keys at every value, others at the base)."""
    data_keys = [key for key in cfg.sweep.space if is_data_key(key)]
    value_lists = [discrete_values(key, cfg.sweep.space[key]) for key in data_keys]
    points, seen = [], set()
    for combo in itertools.product(*value_lists):
        point = point_config(cfg, dict(zip(data_keys, combo)))
        if data_id(point) not in seen:
            seen.add(data_id(point))
            points.append(point)
    return points


def check_points(cfg: SweepConfig) -> int:
    """Validate the points the space holds (all combinations of candidate values, or each key alone when
    there are too many); returns how many were checked. Raises ConfigError naming the point."""
    keys = list(cfg.sweep.space)
    value_lists = [candidate_values(cfg.sweep.space[key]) for key in keys]
    total = math.prod(len(values) for values in value_lists)
    if total <= MAX_CHECKED_POINTS:
        for combo in itertools.product(*value_lists):
            point_config(cfg, dict(zip(keys, combo)))
        return total
    for key, values in zip(keys, value_lists):
        for value in values:
            point_config(cfg, {key: value})
    return sum(len(values) for values in value_lists)


def grid_points(cfg: SweepConfig) -> list[PointConfig]:
    """Every point of a grid search, in Tune's order (the last key varies fastest)."""
    keys = list(cfg.sweep.space)
    value_lists = [cfg.sweep.space[key].grid for key in keys]
    return [point_config(cfg, dict(zip(keys, combo))) for combo in itertools.product(*value_lists)]


def with_reference_tokenizer(cfg: SweepConfig) -> SweepConfig:
    """Fix the tokenizer's corpus for the whole sweep (a reference corpus every point shares): without
    tokenizer.train_articles, the largest pretrain.articles the space reaches; otherwise (a given tokenizer or a
    fixed vocabulary) as given."""
    e = cfg.experiment
    if e.tokenizer.path or e.tokenizer.vocab or e.tokenizer.train_articles is not None:
        return cfg
    articles = [e.pretrain.articles]
    if "pretrain.articles" in cfg.sweep.space:
        articles += discrete_values("pretrain.articles", cfg.sweep.space["pretrain.articles"])
    tokenizer = e.tokenizer.model_copy(update={"train_articles": max(articles)})
    return cfg.model_copy(update={"experiment": e.model_copy(update={"tokenizer": tokenizer})})


# ----------------------------------------------------------------------------------------------
# a trial's members


def pretrain_steps(cfg: SweepConfig, point: PointConfig, blocks: int) -> int:
    """Pre-training steps at a point: pretrain.max_steps (budget steps), the sweep's token budget in steps of
    its batch and sequence length (budget tokens), or pretrain_epochs passes over its `blocks` (budget epochs)."""
    p, s = point.experiment.pretrain, cfg.sweep
    if s.budget == "steps":
        return p.max_steps
    if s.budget == "tokens":
        return max(1, math.ceil(token_budget(cfg) / (p.batch_size * p.seq_len)))
    return max(1, math.ceil(s.pretrain_epochs * blocks / p.batch_size))


def token_budget(cfg: SweepConfig) -> int:
    """Token positions each member pre-trains on under budget tokens."""
    base = cfg.experiment.pretrain
    return cfg.sweep.pretrain_tokens or base.max_steps * base.batch_size * base.seq_len

