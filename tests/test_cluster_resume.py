"""`committee run --resume RUN_DIR`: what it refuses, before any work starts (no Ray needed).

The resume itself (finished members kept, the rest resumed from checkpoints, the same report) is
tested on a simulated cluster in test_multinode.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config.commands import to_yaml
from orchestrator.config.experiment import load_config
from orchestrator.run.rundir import MARKER, RunDir
from workers.errors import CommitteeError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text("{}\n")
    (out / "config.yaml").write_text(to_yaml(load_config(SMOKE)))
    return out


def check_resume(cfg, run_dir: Path) -> None:
    RunDir(run_dir, "run").check_resume(cfg)


def test_resume_may_change_resources_and_committee_size(run_dir):
    check_resume(load_config(run_dir / "config.yaml", ["committee.members=8", "resources.placement=spread",
                                                       "resources.max_parallel_members=4"]), run_dir)


def test_resume_refuses_changes_that_would_mix_two_experiments(run_dir):
    with pytest.raises(CommitteeError, match=r"pretrain.max_steps \(saved: 30, now: 40\)"):
        check_resume(load_config(run_dir / "config.yaml", ["pretrain.max_steps=40"]), run_dir)
    with pytest.raises(CommitteeError, match="storage.uri"):
        check_resume(load_config(run_dir / "config.yaml", ["storage.uri=s3://bucket/prefix"]), run_dir)
    with pytest.raises(CommitteeError, match="deep model's token budget"):
        check_resume(load_config(run_dir / "config.yaml", ["committee.members=3", "deep.token_budget=committee"]),
                     run_dir)


def test_cli_resume_errors_are_one_clear_line(run_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--resume", str(tmp_path / "nothing-here")])
    assert result.exit_code == 2 and "nothing-here: it does not exist; give --resume the run directory" in \
        " ".join(result.output.split())
    result = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory made by committee" in result.output
    started = tmp_path / "started"
    started.mkdir()
    (started / MARKER).write_text("{}\n")
    result = runner.invoke(app, ["run", "--resume", str(started)])
    assert result.exit_code == 2 and "holds no config.yaml" in result.output
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "pretrain.max_steps=40"])
    assert result.exit_code == 2 and "cannot change pretrain.max_steps" in result.output
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--overwrite"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2 and "--resume RUN_DIR" in result.output
