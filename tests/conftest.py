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
    from workers.data.loading import resolve_data_root

    return resolve_data_root(None)


@pytest.fixture(scope="session")
def small_corpus(data_root) -> dict:
    """40 real articles, a 600-token tokenizer and their 64-token blocks (packed and padded), for loop tests."""
    from workers.data.loading import pretraining_articles
    from workers.text.corpus import encode, pack_blocks, truncate_articles
    from workers.text.tokenizer import train_wordpiece
    from workers.train.pretrain import SpecialIds

    articles = pretraining_articles(data_root, 40, order_seed=0)
    tokenizer = train_wordpiece(articles, 600)
    special = SpecialIds.of(tokenizer)
    raw = encode(tokenizer, articles, special=False)
    return {
        "articles": articles, "special": special, "tokenizer": tokenizer, "raw": raw,
        "packed": pack_blocks(raw, 64, special.cls, special.sep, special.pad),
        "padded": truncate_articles(encode(tokenizer, articles, max_length=64), 64, special.pad),
    }


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


# ----------------------------------------------------------------------------------------------
# the README's own-data worked example, run once per session (test_own_data, test_predict, test_events)

_RUN: dict = {}
README_SECTION = "## Your own data"


def readme_commands() -> list[str]:
    """The `committee ...` lines of the first bash block of the README's "Your own data" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def own_data_run(tmp_path_factory) -> dict:
    """Run the README's own-data commands once per session, in a working directory of their own (with
    configs/ and docs/ linked in), as a user would: {"cwd", "run_dir", "procs"}."""
    if "run_dir" not in _RUN:
        cwd = tmp_path_factory.mktemp("own_data")
        for name in ("configs", "docs"):
            (cwd / name).symlink_to(REPO / name)
        procs = []
        for line in readme_commands():
            if not line.startswith("committee "):
                continue
            proc = run_cli(*line.split()[1:], cwd=cwd, timeout=600)
            assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            procs.append((line, proc))
        _RUN.update(cwd=cwd, run_dir=cwd / "runs" / "own_data", procs=procs)
    return _RUN
