"""A user's files are never lost, nothing is unpickled from a run, and faults exit with plain words.

Each test runs `committee` as a user would (a fresh process) and checks the exit code, the message,
that nothing was lost (the user's files, earlier runs, the data root) and that no Ray process is left.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SMOKE, run_cli

from orchestrator.config.commands import to_yaml
from orchestrator.config.experiment import load_config
from orchestrator.run.rundir import MARKER

FAST = ["pretrain.max_steps=10", "finetune.epochs=1", "deep.enabled=false"]  # a shorter smoke run


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: compared before and after a refused command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in out if int(line.split()[1]) == sid]


def refused(proc, *words):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


# ----------------------------------------------------------------------------------------------
# 1. --overwrite and run directories


def test_overwrite_refuses_a_directory_it_did_not_create(tmp_path):
    users = tmp_path / "d"
    users.mkdir()
    (users / "important.txt").write_text("x")
    before = snapshot(tmp_path)
    proc = run_cli("run", SMOKE, "task.train_per_class=100000", "--run-dir", users, "--overwrite")
    refused(proc, "refusing to --overwrite", "important.txt", MARKER)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("run_dir", ["", ".", ".."])
def test_run_dir_that_is_the_working_directory_or_above_is_refused(tmp_path, run_dir):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    (work / "runs" / "earlier").mkdir(parents=True)
    (work / "runs" / "earlier" / MARKER).write_text("{}")
    before = snapshot(tmp_path)
    proc = run_cli("run", SMOKE, "--run-dir", run_dir, "--overwrite", cwd=work)
    refused(proc, "refusing" if run_dir == ".." else "run directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_run_names_are_plain_names(tmp_path, name):
    (tmp_path / "keep.txt").write_text("x")
    before = snapshot(tmp_path)
    proc = run_cli("run", SMOKE, f"name={name}", "--overwrite", cwd=tmp_path)
    refused(proc, "name")
    assert snapshot(tmp_path) == before


def test_data_root_and_its_parents_are_never_run_directories(data_root, tmp_path):
    for target in (data_root, data_root.parent, data_root / "runs"):
        proc = run_cli("run", SMOKE, "--run-dir", target, "--overwrite")
        refused(proc, "refusing")
    assert not (data_root / "runs").exists()


def test_a_run_that_fails_before_its_members_start_leaves_the_disk_as_it_was(tmp_path):
    new = tmp_path / "new" / "run"
    proc = run_cli("run", SMOKE, "task.train_per_class=100000", "--run-dir", new)
    refused(proc, "fewer than")
    assert not (tmp_path / "new").exists()

    earlier = tmp_path / "earlier"  # a run directory of this tool's, with its report
    earlier.mkdir()
    (earlier / MARKER).write_text("{}")
    (earlier / "report.json").write_text('{"old": true}')
    before = snapshot(tmp_path)
    proc = run_cli("run", SMOKE, "task.train_per_class=100000", "--run-dir", earlier, "--overwrite")
    refused(proc, "fewer than")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]  # no set-aside copy left behind


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    refused(run_cli("run", SMOKE, "--run-dir", target), "is a file")
    assert target.read_text() == "x"


def test_read_only_place_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mount.stderr.decode().strip()}")
    try:
        refused(run_cli("run", SMOKE, "--run-dir", ro / "run"), "not writable", str(ro))
    finally:
        subprocess.run(["umount", "-l", str(ro)])


def test_bad_data_file_exits_2_naming_it_before_anything_is_created(data_root, tmp_path):
    root = tmp_path / "data"
    for child in data_root.iterdir():
        (root / child.name).mkdir(parents=True) if child.name == "ag_news" else None
        if child.name != "ag_news":
            root.mkdir(exist_ok=True)
            (root / child.name).symlink_to(child)
    (root / "ag_news" / "test.parquet").symlink_to(data_root / "ag_news" / "test.parquet")
    whole = (data_root / "ag_news" / "train.parquet").read_bytes()
    (root / "ag_news" / "train.parquet").write_bytes(whole[: len(whole) // 2])  # truncated
    proc = run_cli("run", SMOKE, f"data.root={root}", "--run-dir", tmp_path / "run")
    refused(proc, str(root / "ag_news" / "train.parquet"))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# 2. nothing is unpickled from a run directory


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_planted_pickle_and_runs_nothing(tmp_path):
    run_dir = tmp_path / "run"
    step = run_dir / "members" / "member-00" / "checkpoints" / "step-0000010"
    step.mkdir(parents=True)
    (run_dir / MARKER).write_text("{}")
    (run_dir / "config.yaml").write_text(to_yaml(load_config(SMOKE)))
    marker = tmp_path / "pwned"
    (step / "state.pt").write_bytes(pickle.dumps(_Payload(marker)))
    proc = run_cli("run", "--resume", run_dir)
    refused(proc, "state.pt", "nothing was loaded")
    assert not marker.exists()
    assert not (run_dir / "metrics.jsonl").exists(), "no member ran"


def test_resume_of_another_commands_directory_names_the_command_that_continues_it(tmp_path):
    """`run`, `sweep` and `distill --resume` on a directory another command made: exit 2 before anything is
    read or started, naming the command that continues it; that command's own checks accept the directory."""
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.config.commands import to_yaml
    from orchestrator.config.distill import load_distill_config
    from orchestrator.config.sweep import load_sweep_config
    from orchestrator.run.rundir import RunDir
    from orchestrator.sweep.driver import STATE_FILE, check_sweep_state

    configs = {"run": to_yaml(load_config(SMOKE)),
               "sweep": to_yaml(load_sweep_config(REPO / "configs" / "sweep_smoke.yaml")),
               "distill": to_yaml(load_distill_config(REPO / "configs" / "distill_smoke.yaml"))}
    dirs = {}
    for kind, text in configs.items():
        dirs[kind] = tmp_path / kind
        dirs[kind].mkdir()
        (dirs[kind] / MARKER).write_text("{}\n")
        (dirs[kind] / "config.yaml").write_text(text)
    (dirs["sweep"] / STATE_FILE).write_text("{}\n")
    continues = {"run": f"committee run --resume {dirs['run']}", "distill": f"committee distill --resume {dirs['distill']}",
                 "sweep": f"committee sweep --resume {dirs['sweep']}"}
    before = snapshot(tmp_path)
    for command in configs:
        for kind, run_dir in dirs.items():
            if kind == command:
                continue
            forms = [[command, "--resume", str(run_dir)],  # and with a config file given for the resumed directory
                     [command, str(REPO / "configs" / f"{command}_smoke.yaml" if command != "run" else SMOKE),
                      "--resume", str(run_dir)]]
            for args in forms:
                result = CliRunner().invoke(app, args)
                assert result.exit_code == 2 and "Traceback" not in result.output, result.output
                assert f"cannot resume {run_dir} as a" in result.output, result.output
                assert f"continue it with: {continues[kind]}" in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, ["sweep", str(dirs["sweep"])])  # a sweep directory without --resume
    assert result.exit_code == 2 and "is a directory" in result.output, result.output
    assert f"committee sweep --resume {dirs['sweep']}" in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, ["sweep", "--resume", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output, result.output
    assert snapshot(tmp_path) == before
    for kind, run_dir in dirs.items():  # the suggested command passes its own checks
        RunDir(run_dir, kind).check_resumable()
        RunDir(run_dir, kind).check_resume(load_config(run_dir / "config.yaml") if kind == "run" else
                                           load_sweep_config(run_dir / "config.yaml") if kind == "sweep" else
                                           load_distill_config(run_dir / "config.yaml"))
    check_sweep_state(dirs["sweep"])  # and the sweep's saved state


def test_a_report_reproduces_its_run_from_the_starting_command_or_the_resolved_config(tmp_path):
    """A resumed directory's command only continues it: the report shows it as a comment, and every report gives
    the resolved config run into a new directory (the config reproduces the run; `committee validate` takes it)."""
    from orchestrator.run.rundir import RunDir

    run_dir = tmp_path / "my run"

    def reproduce_lines(kind, path, command):
        return RunDir(path, kind).reproduce_lines(command)

    assert reproduce_lines("run", run_dir, "committee run configs/smoke.yaml --overwrite") == [
        "committee run configs/smoke.yaml --overwrite",
        f"committee run '{run_dir}/config.yaml' --run-dir '{run_dir}-again'   # the resolved config of this run"]
    resumed = reproduce_lines("sweep", run_dir, f"committee sweep --resume '{run_dir}'")
    assert resumed[0] == f"# continued with: committee sweep --resume '{run_dir}'"
    assert resumed[1].startswith(f"committee sweep '{run_dir}/config.yaml' --run-dir '{run_dir}-again'")
    assert reproduce_lines("run", run_dir, "")[0].startswith("committee run ")


# ----------------------------------------------------------------------------------------------
# 5 and 6. one driver per run directory; SIGTERM stops the members and says how to resume


def _start_run(run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(SMOKE), *FAST, *overrides,
                             "--run-dir", str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_second_driver_is_refused_and_sigterm_stops_the_first_which_then_resumes(tmp_path):
    run_dir = tmp_path / "run"
    first = _start_run(run_dir, "pretrain.checkpoint_every=2", "pretrain.max_steps=400")
    try:
        _wait_for(run_dir / "metrics.jsonl", first)  # members are running
        second = run_cli("run", "--resume", run_dir)
        refused(second, "in use by another committee driver", f"PID {first.pid}")

        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, out[-2000:] + err[-2000:]
    assert "terminated (SIGTERM)" in err and f"committee run --resume {run_dir}" in err
    assert "Traceback" not in err
    deadline = time.monotonic() + 30
    while session_processes(first.pid) and time.monotonic() < deadline:  # Ray's processes share its session
        time.sleep(0.5)
    assert session_processes(first.pid) == []
    assert (run_dir / "config.yaml").is_file() and (run_dir / MARKER).is_file()

    resumed = run_cli("run", "--resume", run_dir, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert [m["name"] for m in report["members"]] == ["member-00", "member-01", "scratch-00", "scratch-01"]
