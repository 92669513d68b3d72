"""Atomic checkpoints on disk: Hugging Face weights (safetensors) plus the loop state for exact resume.

A checkpoint is a directory `step-NNNNNNN/` holding `save_pretrained` output and `state.pt`
(optimizer, scheduler, step, counters). It is written under a temporary name and renamed, so a
directory with a final name is always complete; older checkpoints are pruned after the rename.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch

STATE_FILE = "state.pt"


def _step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest(root: str | Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    dirs = _step_dirs(Path(root))
    return dirs[-1] if dirs else None


def save(root: str | Path, step: int, model, state: dict, keep: int = 1) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in _step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: str | Path) -> dict:
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)


def save_final(path: str | Path, model, extra_files: dict[str, str] | None = None) -> Path:
    """Write finished weights to `path` atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(tmp, safe_serialization=True)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
