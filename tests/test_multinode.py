"""Multi-node behaviour on a simulated cluster (ray.cluster_utils.Cluster: a CPU-less head and worker
nodes with custom resources and logical GPUs, all real Ray processes on this machine).

One cluster serves the module; each test adds the worker nodes it needs and removes them after.
Members are tiny (hidden 32, a few dozen steps) so that the module runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from orchestrator.config.experiment import load_config
from orchestrator.run import cluster
from orchestrator.run.driver import run_experiment
from workers.errors import ResourceError

pytestmark = pytest.mark.multinode

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
# members only (no scratch twins, no deep model): what these tests look at is where members run; the
# pre-training is long enough (a checkpoint every 5 of 60 steps) to interrupt it in the middle
SMALL = ["committee.scratch=false", "deep.enabled=false", "finetune.epochs=1", "pretrain.max_steps=60",
         "pretrain.checkpoint_every=5", "resources.placement=spread", "resources.placement_timeout_s=5"]
TWO = SMALL + ["committee.members=2"]
CPU1 = {"num_cpus": 1}  # the worker nodes of the run tests


class SimCluster:
    def __init__(self):
        from ray.cluster_utils import Cluster

        # a dead node is noticed within about 2 s (the default is tens of seconds)
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False,
            "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                               "health_check_failure_threshold": 4}})
        self.address = self.cluster.address
        self.workers = []

    def add(self, count: int, **node_args) -> list:
        nodes = [self.cluster.add_node(**node_args) for _ in range(count)]
        self.cluster.wait_for_nodes()
        self.workers += [(node, node_args) for node in nodes]
        return nodes

    def ensure(self, count: int, **node_args) -> list:
        """Exactly `count` worker nodes started with `node_args` (nodes are reused: each start costs seconds)."""
        for node, args in list(self.workers):
            if args != node_args:
                self.remove(node)
        while len(self.workers) > count:
            self.remove(self.workers[-1][0])
        self.add(count - len(self.workers), **node_args)
        wait_until(lambda: len(cluster.alive_nodes()) == count + 1, 30)
        return [node for node, _ in self.workers]

    def remove(self, node, graceful: bool = True) -> None:
        self.cluster.remove_node(node, allow_graceful=graceful)
        self.workers = [(n, a) for n, a in self.workers if n is not node]


def wait_until(predicate, timeout_s: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s")
        time.sleep(poll_s)


@pytest.fixture(scope="module")
def sim():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    sim = SimCluster()
    ray.init(address=sim.address, log_to_driver=False)
    yield sim
    ray.shutdown()
    sim.cluster.shutdown()


def start_records(run_dir: Path, skip_lines: int = 0) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()[skip_lines:]
    return [r for r in map(json.loads, lines) if r.get("phase") == "start"]


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


# ----------------------------------------------------------------------------------------------
# placement


def _probe_class():
    import ray

    @ray.remote
    class Probe:
        def where(self):
            return ray.get_runtime_context().get_node_id(), ray.get_gpu_ids()

    return Probe


def _place_probes(count: int, cpus: float, gpus: float, placement: str, probes: bool = True):
    """(node of each bundle, (node, GPU ids) seen by an actor launched into each bundle)."""
    import ray

    placed = cluster.place_members(count, cpus, gpus, placement, timeout_s=20)
    try:
        if not probes:
            return placed.bundle_nodes(), []
        probes = [_probe_class().options(**placed.actor_options()).remote() for _ in range(count)]
        where = ray.get([p.where.remote() for p in probes], timeout=120)
        for p in probes:
            ray.kill(p)
        return placed.bundle_nodes(), where
    finally:
        placed.remove()


def test_pack_and_spread_place_members_where_they_say(sim):
    nodes = sim.ensure(3, num_cpus=2, num_gpus=1, resources={"trainer": 1})
    worker_ids = {n.node_id for n in nodes}

    # pack: 4 one-CPU members fill two nodes (2 + 2), the third stays free
    bundle_nodes, where = _place_probes(4, 1.0, 0.0, "pack")
    assert set(bundle_nodes) <= worker_ids and len(set(bundle_nodes)) == 2
    assert sorted(bundle_nodes.count(n) for n in set(bundle_nodes)) == [2, 2]
    assert sorted(node for node, _ in where) == sorted(bundle_nodes)

    # spread: 3 members on 3 distinct nodes; 4 members: every node used, none holds more than 2
    bundle_nodes, where = _place_probes(3, 1.0, 0.0, "spread")
    assert len({node for node, _ in where}) == 3
    bundle_nodes = _place_probes(4, 1.0, 0.0, "spread", probes=False)[0]
    assert len(set(bundle_nodes)) == 3 and max(bundle_nodes.count(n) for n in bundle_nodes) == 2

    # fractional GPUs: pack puts two half-GPU members on one logical GPU
    bundle_nodes, where = _place_probes(4, 0.5, 0.5, "pack")
    assert len({node for node, _ in where}) == 2
    per_node: dict = {}
    for node, gpu_ids in where:
        per_node.setdefault(node, []).append(tuple(gpu_ids))
    for gpus in per_node.values():
        assert len(gpus) == 2 and gpus[0] == gpus[1] and len(gpus[0]) == 1  # the same single GPU, shared


def test_unplaceable_request_fails_fast_with_both_sides(sim, tmp_path):
    sim.ensure(3, num_cpus=2, num_gpus=1, resources={"trainer": 1})
    t0 = time.monotonic()
    with pytest.raises(ResourceError) as err:  # no node has 4 CPUs
        cluster.place_members(2, 4.0, 0.0, "pack", timeout_s=2)
    message = str(err.value)
    assert time.monotonic() - t0 < 15
    assert "4 CPU" in message and "largest node: 2 CPU" in message and "total {CPU: 6, GPU: 3" in message

    t0 = time.monotonic()
    with pytest.raises(ResourceError) as err:  # each fits, but not 7 at once on 6 CPUs
        cluster.place_members(7, 1.0, 0.0, "spread", timeout_s=2, max_parallel=7)
    message = str(err.value)
    assert time.monotonic() - t0 < 15
    assert "7 x {CPU: 1}" in message and "{CPU: 7}" in message and "total {CPU: 6, GPU: 3" in message

    t0 = time.monotonic()
    with pytest.raises(ResourceError, match="3 CPU"):  # the driver path: 3 CPUs per member, 2 per node
        cfg = load_config(SMOKE, SMALL + ["resources.num_cpus_per_member=3", "resources.placement_timeout_s=2"])
        run_experiment(cfg, tmp_path / "run", address=sim.address, echo=lambda _: None)
    assert time.monotonic() - t0 < 60


# ----------------------------------------------------------------------------------------------
# a growing committee on a growing cluster; its 2-member stage is the uninterrupted reference run


@pytest.fixture(scope="module")
def two_members(sim, tmp_path_factory):
    """The uninterrupted 2-member run on one node: (run dir, report without timing, the node)."""
    node = sim.ensure(1, **CPU1)[0]
    run_dir = tmp_path_factory.mktemp("grow") / "run"
    report = run_experiment(load_config(SMOKE, TWO), run_dir, address=sim.address, echo=lambda _: None)
    return run_dir, without_timing(report), node


def test_committee_grows_from_2_to_8_members_across_1_to_3_nodes(sim, two_members):
    run_dir, _, first = two_members
    assert {r["node_id"] for r in start_records(run_dir)} == {first.node_id}
    seen = len((run_dir / "metrics.jsonl").read_text().splitlines())

    nodes = sim.ensure(3, **CPU1)
    lines: list[str] = []
    grown = load_config(SMOKE, SMALL + ["committee.members=8", "resources.placement=pack"])
    # on the way, one member's process dies mid-pre-training: Ray restarts it, it resumes from its checkpoint
    stop = threading.Event()
    killed: list[dict] = []

    def kill_one_member():
        while not stop.is_set() and not killed:
            hit = _member_checkpointed_on(run_dir, {n.node_id for n in nodes})
            if hit is not None and hit[0] != "member-00":
                rec = [r for r in start_records(run_dir, skip_lines=seen) if r["member"] == hit[0]][-1]
                os.kill(rec["pid"], signal.SIGKILL)
                killed.append(rec)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_member)
    watcher.start()
    try:
        out = run_experiment(grown, run_dir, address=sim.address, resume=True, echo=lines.append)
    finally:
        stop.set()
        watcher.join()
    assert any("2 member(s) already finished" in line for line in lines)
    new_starts = start_records(run_dir, skip_lines=seen)
    assert killed, "no member was caught mid-pre-training"
    restarts = [r for r in new_starts if r["restarted"]]
    assert [r["member"] for r in restarts] == [killed[0]["member"]]
    assert any(f"{killed[0]['member']} restarted" in line for line in lines)
    first_starts = [r for r in new_starts if not r["restarted"]]
    assert sorted(r["member"] for r in first_starts) == [f"member-{i:02d}" for i in range(2, 8)]
    assert {r["node_id"] for r in first_starts} == {n.node_id for n in nodes}
    assert [m["name"] for m in out["members"]] == [f"member-{i:02d}" for i in range(8)]
    assert len(out["committee_curve"]) == 8


# ----------------------------------------------------------------------------------------------
# surviving failures: the same 2-member run, interrupted, must give the reference report


def _member_checkpointed_on(run_dir: Path, node_ids: set[str], members: Path | None = None):
    """(member, node id) of a member still pre-training, with a checkpoint, on one of `node_ids`."""
    if not (run_dir / "metrics.jsonl").exists():
        return None
    for rec in start_records(run_dir):
        member_dir = (members or run_dir / "members") / rec["member"]
        ckpts = member_dir / "checkpoints"
        try:
            checkpointed = ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir())
        except FileNotFoundError:  # pruned or finished meanwhile
            continue
        if rec["node_id"] in node_ids and checkpointed and not (member_dir / "mlm").exists():
            return rec["member"], rec["node_id"]
    return None


class BackgroundRun:
    """run_experiment in a thread (the test thread meanwhile breaks the cluster); echo lines kept."""

    def __init__(self, sim, run_dir: Path, overrides: list[str]):
        self.lines: list[str] = []
        self.report: dict | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._drive, args=(sim, run_dir, overrides))
        self.thread.start()

    def _drive(self, sim, run_dir, overrides):
        try:
            self.report = run_experiment(load_config(SMOKE, overrides), run_dir, address=sim.address,
                                         echo=self.lines.append)
        except BaseException:  # handed to the test thread
            self.error = traceback.format_exc()

    def finish(self, timeout_s: float = 300) -> dict:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"the run did not finish: {self.lines}"
        assert self.error is None, self.error
        return self.report


def _catch_mid_pretraining(run: BackgroundRun, run_dir: Path, nodes, also=lambda hit: True):
    """(member, node id) of a member caught mid-pre-training on one of `nodes` (and `also(hit)`)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.thread.is_alive():
        hit = _member_checkpointed_on(run_dir, {n.node_id for n in nodes})
        if hit is not None and also(hit):
            return hit
        time.sleep(0.02)
    raise AssertionError(f"no member was caught mid-pre-training: {run.lines}")


def test_lost_node_with_room_elsewhere_moves_its_member(sim, two_members, tmp_path):
    """Three nodes for two members: Ray moves the lost node's bundle to the free node and restarts the
    member there, from its last checkpoint; the report equals the uninterrupted run's."""
    reference = two_members[1]
    run_dir = tmp_path / "run"
    nodes = sim.ensure(3, **CPU1)
    # a slow machine may take seconds to move the bundle: give it time before the driver steps in
    run = BackgroundRun(sim, run_dir, TWO + ["resources.placement_timeout_s=30"])
    try:
        member, node_id = _catch_mid_pretraining(run, run_dir, nodes)
        victim = next(n for n in nodes if n.node_id == node_id)
        sim.remove(victim, graceful=False)  # the node dies: raylet and its workers are killed
        report = run.finish()
    finally:
        run.thread.join(60)
    assert any(f"{member} restarted on" in line for line in run.lines), run.lines
    assert not any("a node was lost" in line for line in run.lines), run.lines
    again = [r for r in start_records(run_dir) if r["member"] == member][1:]
    assert again and all(r["restarted"] and r["node_id"] != node_id for r in again), again
    assert without_timing(report) == reference
    assert all((run_dir / "members" / m / "result.npz").is_file() for m in ("member-00", "member-01"))


@pytest.mark.slow  # about 30 s idle; the lost-node-with-room test covers re-placement in the default run
def test_lost_node_without_room_places_the_members_again(sim, two_members, tmp_path):
    """Two nodes, two members, both busy: the lost node's bundle has nowhere to go, so the driver places
    the unfinished members again on the node left; they resume from their checkpoints and the report
    equals the uninterrupted run's. The other member is paused (SIGSTOP) while the node dies so that it
    still holds its bundle whatever the machine's speed."""
    reference = two_members[1]
    run_dir = tmp_path / "run"
    nodes = sim.ensure(2, **CPU1)
    run = BackgroundRun(sim, run_dir, TWO)
    paused: list[int] = []
    try:
        def other_still_running(hit):
            # the other member still pre-training (its masked LM not saved yet): it cannot finish before it
            # is paused, however slow or loaded the machine (a member caught while fine-tuning could)
            others = [r for r in start_records(run_dir) if r["member"] != hit[0]]
            pretrained = [(run_dir / "members" / r["member"] / "mlm").exists() for r in others]
            return bool(others) and not any(pretrained)

        member, node_id = _catch_mid_pretraining(run, run_dir, nodes, also=other_still_running)
        other = next(r for r in start_records(run_dir) if r["member"] != member)
        os.kill(other["pid"], signal.SIGSTOP)
        paused.append(other["pid"])
        victim = next(n for n in nodes if n.node_id == node_id)
        sim.remove(victim, graceful=False)
        report = run.finish()
    finally:
        for pid in paused:  # the driver kills the paused actor when it places members again
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        run.thread.join(60)
    assert any("a node was lost" in line for line in run.lines), run.lines
    survivor = next(n for n in nodes if n.node_id != node_id).node_id
    for name in ("member-00", "member-01"):
        starts = [r for r in start_records(run_dir) if r["member"] == name]
        assert len(starts) >= 2 and starts[-1]["node_id"] == survivor and not starts[-1]["restarted"], starts
    assert without_timing(report) == reference
    assert all((run_dir / "members" / m / "result.npz").is_file() for m in ("member-00", "member-01"))


@pytest.mark.slow  # about 30 s idle; resume after a killed driver is in the default run through test_safety
def test_killed_driver_resumes_without_redoing_finished_members(sim, two_members, tmp_path):
    """Members on a storage URI (file:// stands in for s3://): the resumed run finds them there."""
    reference = two_members[1]
    run_dir = tmp_path / "run"
    store = tmp_path / "store"
    members = store / "run" / "members"
    sim.ensure(1, **CPU1)
    committee = [str(Path(sys.executable).parent / "committee")]
    # one node: the members run one after the other; kill the driver once member-00 has finished and
    # member-01 has not (starting, pre-training or fine-tuning: its whole run is the window, seconds even
    # on a loaded machine; waiting for a checkpoint of its sub-second pre-training missed it under load)
    driver = subprocess.Popen(committee + ["run", str(SMOKE), *TWO, f"storage.uri=file://{store}",
                                           "--run-dir", str(run_dir), "--address", sim.address],
                              cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def member_01_unfinished() -> bool:  # on disk only: the driver's metrics may lag behind
            return (members / "member-00" / "result.npz").is_file() and \
                not (members / "member-01" / "result.npz").is_file()

        hit = False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None and not hit:
            hit = member_01_unfinished()
            time.sleep(0.02)
        assert driver.poll() is None and hit, "could not interrupt mid-run"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        assert not (run_dir / "report.json").exists()
        assert not (run_dir / "members").exists()  # nothing on the driver's disk
        finished = members / "member-00" / "result.npz"
        mtime = finished.stat().st_mtime_ns
        seen = len((run_dir / "metrics.jsonl").read_text().splitlines())

        sim.ensure(2, **CPU1)  # the resumed run gets a second node
        resumed = subprocess.run(committee + ["run", "--resume", str(run_dir), "resources.placement_timeout_s=30",
                                              "--address", sim.address], cwd=REPO, capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "1 member(s) already finished" in resumed.stdout
        assert finished.stat().st_mtime_ns == mtime
        assert [r["member"] for r in start_records(run_dir, skip_lines=seen)] == ["member-01"]
        report = json.loads((run_dir / "report.json").read_text())
        assert without_timing(report) == reference
        assert json.loads((store / "run" / "report.json").read_text()) == report  # copied next to the members
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
