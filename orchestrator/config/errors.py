"""Validation errors of a config as lines that name the dotted key at fault.

`format_validation(exc, source, root)` turns a pydantic `ValidationError` of the config model `root` (an
`ExperimentConfig`, or a command's own model with an extra section) into one line per error; an unknown key
gets the valid keys of its section and the closest match. The loaders of `orchestrator.config.experiment`,
`orchestrator.config.distill` and `orchestrator.config.sweep` raise the text as a `ConfigError`.
"""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError


def model_for(path: list[str], root: type[BaseModel]) -> type[BaseModel] | None:
    """The section model at dotted `path` under `root` (`root` itself for []), or None when `path` is no section."""
    model: type[BaseModel] = root
    for key in path:
        field = model.model_fields.get(key)
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def unknown_key_message(dotted: str, root: type[BaseModel], section: str = "") -> str:
    """Why `dotted` is refused under `root`: its section's valid keys, the closest one, and which command reads
    a distill:/sweep: section when this one does not. `section`: where `root` sits in the file ("" for the
    top level, "sweep" when `root` is the sweep section's model), prefixed to every key the message names."""
    parts = dotted.split(".")
    shown = [section] if section else []
    parent = model_for(parts[:-1], root)
    valid = sorted(parent.model_fields) if parent else []
    hint = difflib.get_close_matches(parts[-1], valid, n=1)
    msg = f"unknown config key '{'.'.join(shown + parts)}'"
    if hint:
        msg += f" (did you mean '{'.'.join(shown + parts[:-1] + hint)}'?)"
    if valid:
        where = ".".join(shown + parts[:-1]) or "the top level"
        msg += f"; valid keys in {where}: {', '.join(valid)}"
    if not section and parts[0] == "distill" and "distill" not in root.model_fields:
        msg += "; a distill: section is read by `committee distill CONFIG`, not by this command"
    if not section and parts[0] == "sweep" and "sweep" not in root.model_fields:
        msg += "; a sweep: section is read by `committee sweep CONFIG`, not by this command"
    if not section and parts[0] == "claims" and "claims" not in root.model_fields:
        msg += "; a claims: section is read by `committee claims SUITE`, not by this command"
    return msg


def format_validation(exc: ValidationError, source: str, root: type[BaseModel], section: str = "") -> str:
    """One line per error, each naming the dotted key; our own validators' messages already quote the value.
    `section`: where `root` sits in the file, as for `unknown_key_message`."""
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        dotted = ".".join(path)
        where = ".".join(([section] if section else []) + path) or "config"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {unknown_key_message(dotted, root, section)}")
        elif err["type"] == "value_error":
            lines.append(f"  - {where}: {err['ctx']['error']}")
        else:
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  - {where}: {err['msg']}{got_text}")
    return "\n".join(lines)
