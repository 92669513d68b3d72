"""The cluster path end to end on one machine: `ray start --head` on loopback, then
`ray job submit --working-dir . -- committee run configs/smoke.yaml --address auto` to completion.

The head gets its own temp dir, its own free ports and its own process session; the test stops
exactly the processes of that session (never `ray stop`, which would stop every Ray on the machine).
Token auth is on, with the same RAY_AUTH_MODE and token on both sides (the CLI fails with 401 otherwise).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.multinode

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:  # gone meanwhile
                pass
    return pids


@pytest.fixture
def local_head(data_root):
    tmp = Path(f"/tmp/rj-{os.getpid()}")  # short: Ray's socket paths must fit 107 bytes
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics = (_free_port() for _ in range(7))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           # keep every Ray address on loopback (on Linux Ray otherwise swaps 127.0.0.1 for the host's IP)
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}", "--num-cpus=2",
         f"--temp-dir={tmp}", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT)
    sid = head.pid  # start_new_session: the head's session id is its pid; Ray's processes stay in it
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # it answers (401 without the token): it is up
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, (tmp / "head.log").read_text()[-3000:]
                time.sleep(0.5)
        yield url, env, tmp
    finally:
        head.terminate()  # `ray start --block` shuts its node down on SIGTERM
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            pass
        for pid in _session_pids(sid):  # whatever outlived it, by pid, in this session only
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def test_job_submit_runs_the_smoke_config_to_completion(local_head, data_root):
    url, env, tmp = local_head
    run_dir = tmp / "run"
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", ".", "--",
         "committee", "run", "configs/smoke.yaml", "deep.enabled=false", "committee.scratch=false",
         f"data.root={data_root}", "--run-dir", str(run_dir), "--address", "auto"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-5000:]
    assert "succeeded" in out and "placement (pack): 2 member(s) at once on 1 node(s)" in out
    report = json.loads((run_dir / "report.json").read_text())
    assert [m["name"] for m in report["members"]] == ["member-00", "member-01"]
    assert (run_dir / "report.md").is_file()
