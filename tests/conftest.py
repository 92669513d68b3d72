"""Shared test fixtures: the real data root, a real local Ray, and short Ray temp paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Ray's socket paths must fit 107 bytes: keep its temp dir short (pytest's tmp_path is too long).
os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-ct")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def run_cli(*args, timeout: float = 300, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`committee ARGS...` in a fresh process (as a user runs it): exit code, stdout and stderr."""
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


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


_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with pytest's own status once every result is reported.

    Ray's and torch's native background threads now and then crash the interpreter while it finalizes
    (seen once here: SIGSEGV after "89 passed"), which would turn a green run red; nothing is left to
    report at this point, so the process ends here instead of finalizing.
    """
    if _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])
