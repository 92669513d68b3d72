"""The config reference: every key of every config section with its default and meaning.

docs/config.md holds `reference_table()` between its marker comments (tests/test_readme.py checks they are
equal); `python -m orchestrator.config.reference` prints it.
"""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator.config.claims import ClaimsSection, LatencySection
from orchestrator.config.distill import DistillConfig
from orchestrator.config.experiment import ExperimentConfig
from orchestrator.config.sweep import SweepSection


def describe_fields(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf: the README's config reference is made from it."""
    rows = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, dotted + "."))
        else:
            rows.append((dotted, repr(field.default), field.description or ""))
    return rows


def reference_table() -> str:
    """The README's config reference, as a markdown table (`python -m orchestrator.config.reference`)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{key}` | `{default}` | {text} |" for key, default, text in describe_fields()]
    rows += [f"| `{key}` | `{default}` | (`committee distill`) {text} |"
             for key, default, text in describe_fields(DistillConfig, "distill.")]
    rows += [f"| `{key}` | `{default}` | (`committee sweep`) {text} |"
             for key, default, text in describe_fields(SweepSection, "sweep.")]
    rows += [f"| `{key}` | `{default}` | (`committee claims`) {text} |" for key, default, text in claims_fields()]
    return "\n".join(rows)


def claims_fields() -> list[tuple[str, str, str]]:
    """The claims: section's keys; its sweeps and distillation are whole sections of their own kind (sweep.*,
    distill.* above), listed as one row each."""
    rows = []
    for name, field in ClaimsSection.model_fields.items():
        if field.annotation is LatencySection:
            rows += describe_fields(LatencySection, f"claims.{name}.")
        else:
            rows.append((f"claims.{name}", "required" if field.is_required() else repr(field.default),
                         field.description or ""))
    return rows


if __name__ == "__main__":
    print(reference_table())
