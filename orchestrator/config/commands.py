"""The config of each command, in one place: `committee run`, `sweep` and `distill` each read one YAML file.

A file is told apart by its sections (`sweep:` -> sweep, `distill:` -> distill, else run: `loader.command_of`).
- `load(kind, path, overrides)`: the file validated as that command's config (strict: unknown keys, wrong
  types and out-of-range values are errors naming the key);
- `as_mapping(cfg)`: the resolved config as the mapping of its file (what a run directory's config.yaml
  holds, and what `--resume` compares key by key);
- `to_yaml(cfg)`: that mapping as YAML, which `load` reads back to an equal config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.loader import PlainDumper

KINDS = ("run", "sweep", "distill")


def load(kind: str, path: str | Path, overrides: list[str] | None = None):
    """The config of `committee KIND` in the YAML file at `path`, with `KEY=VALUE` overrides applied."""
    if kind == "sweep":
        from orchestrator.config.sweep import load_sweep_config

        return load_sweep_config(path, overrides)
    if kind == "distill":
        from orchestrator.config.distill import load_distill_config

        return load_distill_config(path, overrides)
    from orchestrator.config.experiment import load_config

    return load_config(path, overrides)


def as_mapping(cfg) -> dict[str, Any]:
    """The file form of a resolved config: experiment keys at the top level, then a command's own section
    (a sweep's space as `{key: {kind: bounds}}`, as a sweep file writes it)."""
    from orchestrator.config.sweep import SweepConfig

    if isinstance(cfg, SweepConfig):
        raw = cfg.experiment.model_dump(mode="json")
        raw["sweep"] = cfg.sweep.model_dump(mode="json", exclude_none=False)
        raw["sweep"]["space"] = {key: {domain.kind: domain.bounds} for key, domain in cfg.sweep.space.items()}
        return raw
    return cfg.model_dump(mode="json")


def to_yaml(cfg) -> str:
    """The resolved config as the YAML file `load` reads back to an equal config."""
    return yaml.dump(as_mapping(cfg), Dumper=PlainDumper, sort_keys=False)


def show(path: str | Path, overrides: list[str] | None = None) -> str:
    """`committee show-config`: the file's resolved config (its command read from its sections), as YAML."""
    from orchestrator.config.loader import command_of, load_raw

    return to_yaml(load(command_of(load_raw(path)), path, overrides))
