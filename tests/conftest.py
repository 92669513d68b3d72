"""Shared test fixtures: the real data root, a real local Ray, and short Ray temp paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray's socket paths must fit 107 bytes: keep its temp dir short (pytest's tmp_path is too long).
os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-ct")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    from workers.data import resolve_data_root

    return resolve_data_root(None)


@pytest.fixture
def ray_local():
    """A real in-process Ray with 2 CPUs (address="local": never joins a stray cluster); shut down after."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
