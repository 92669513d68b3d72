"""Connecting to Ray and placing members: in-process for a laptop run, or an existing cluster by address.

Placement: the members of a run share one placement group of `slots` bundles (one member's CPUs and
GPUs each), strategy PACK (`placement: pack`: as few nodes as possible, fractional GPUs shared) or
SPREAD (`placement: spread`: distinct nodes where possible; STRICT_SPREAD when there are enough nodes). Members are launched into "any bundle"
(index -1), so when more members than slots are queued, each starts as soon as a bundle frees up.
A placement group that cannot be created within `placement_timeout_s` fails with what it asked for
and what the cluster has. When a node dies, Ray moves its bundles to other nodes if there is room;
if there is none (the group stays RESCHEDULING), `MemberPlacement.lost()` tells the driver to place
the unfinished members again on the nodes that are left (they resume from their checkpoints).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from workers.errors import CommitteeError, ResourceError

log = logging.getLogger(__name__)

STRATEGIES = {"pack": "PACK", "spread": "SPREAD"}


def connect(address: str | None, num_cpus: int | None = None):
    """Start Ray in-process (address None) or join the cluster at `address` (auto, ray://host:10001, host:6379).

    `ray.init` installs SIGTERM handlers of its own; a handler the command installed before (the CLI's:
    stop the members, say how to resume) is put back, so SIGTERM is handled like Ctrl-C.
    """
    import ray

    if ray.is_initialized():
        return ray
    previous = signal.getsignal(signal.SIGTERM)
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    if callable(previous) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
    return ray


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def member_bundle(num_cpus: float, num_gpus: float) -> dict[str, float]:
    """One member's resources as a placement-group bundle (zero GPUs left out: Ray rejects zero amounts)."""
    bundle = {"CPU": float(num_cpus)}
    if num_gpus > 0:
        bundle["GPU"] = float(num_gpus)
    return bundle


def node_slots(resources: dict[str, float], bundle: dict[str, float]) -> int:
    """How many bundles fit on a node with these total resources (1e-9 forgives 0.1 + 0.2 rounding)."""
    return min(math.floor(resources.get(key, 0.0) / amount + 1e-9) for key, amount in bundle.items())


def _fmt(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items()
             if k in ("CPU", "GPU") or not (k.startswith("node:") or k in ("memory", "object_store_memory"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def describe_cluster(nodes: list[dict] | None = None) -> str:
    """`2 alive node(s), total {CPU: 4, GPU: 2}: 10.0.0.5 {CPU: 2, GPU: 1}; ...` for error messages."""
    nodes = alive_nodes() if nodes is None else nodes
    total: dict[str, float] = {}
    for n in nodes:
        for k, v in n["Resources"].items():
            total[k] = total.get(k, 0.0) + v
    per_node = "; ".join(f"{n.get('NodeManagerAddress', '?')} {_fmt(n['Resources'])}" for n in nodes)
    return f"{len(nodes)} alive node(s), total {_fmt(total)}: {per_node or 'none'}"


def _largest_node(nodes: list[dict]) -> dict:
    return max((n["Resources"] for n in nodes), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})


def no_node_fits(num_cpus: float, num_gpus: float, waited_s: float) -> ResourceError:
    nodes = alive_nodes()
    big = _largest_node(nodes)
    waited = f" (and none joined within {waited_s:g} s)" if waited_s > 0 else ""
    return ResourceError(
        f"each member asks for {num_cpus:g} CPU and {num_gpus:g} GPU, but no node has that much{waited}: "
        f"largest node: {big.get('CPU', 0):g} CPU, {big.get('GPU', 0):g} GPU; the cluster has "
        f"{describe_cluster(nodes)}; lower resources.num_cpus_per_member / resources.gpus_per_member or add nodes"
    )


@dataclass
class MemberPlacement:
    """The placement group the members of a run are launched into."""

    pg: object
    slots: int
    bundle: dict[str, float]
    placement: str
    timeout_s: float
    _rescheduling_since: float | None = None

    def actor_options(self) -> dict:
        """`.options(...)` for a member actor: its resources, inside any free bundle of the group."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"num_cpus": self.bundle["CPU"], "num_gpus": self.bundle.get("GPU", 0.0),
                "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=-1)}

    def state(self) -> str:
        from ray.util.placement_group import placement_group_table

        return placement_group_table(self.pg).get("state", "UNKNOWN")

    def bundle_nodes(self) -> list[str]:
        """The node id of each bundle (while the group is placed)."""
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(self.pg).get("bundles_to_node_id", {})
        return [table[i] for i in sorted(table)]

    def lost(self) -> bool:
        """True once a lost node's bundles could not be moved for `timeout_s` (no room left for them)."""
        if self.state() != "RESCHEDULING":
            self._rescheduling_since = None
            return False
        now = time.monotonic()
        if self._rescheduling_since is None:
            self._rescheduling_since = now
        return now - self._rescheduling_since >= self.timeout_s

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(self.pg)
        except Exception as exc:  # already gone with its job: nothing to free
            log.debug("placement group removal: %s", exc)


def check_fits_here(num_cpus: float, num_gpus: float) -> None:
    """In-process Ray: fail at once (before anything is created) when one member fits no node."""
    bundle = member_bundle(num_cpus, num_gpus)
    if not any(node_slots(n["Resources"], bundle) >= 1 for n in alive_nodes()):
        raise no_node_fits(num_cpus, num_gpus, 0)


def place_members(count: int, num_cpus: float, num_gpus: float, placement: str, timeout_s: float,
                  max_parallel: int | None = None, in_process: bool = False) -> MemberPlacement:
    """Create (bounded wait) the placement group for `count` members; raise ResourceError if it cannot be.

    Slots = min(count, max_parallel or the bundles the alive nodes hold, at least 1). The pending group
    is itself the request an autoscaler acts on: a cluster that starts without GPU workers grows to fit
    it (set max_parallel to ask for more than one member's node). In-process, nothing can join: a member
    that fits no node fails at once.
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = member_bundle(num_cpus, num_gpus)
    nodes = alive_nodes()
    fitting = [n for n in nodes if node_slots(n["Resources"], bundle) >= 1]
    if not fitting and in_process:
        raise no_node_fits(num_cpus, num_gpus, 0)
    capacity = sum(node_slots(n["Resources"], bundle) for n in nodes)
    slots = max(1, min(count, max_parallel or capacity))
    strategy = STRATEGIES[placement]
    if placement == "spread" and slots <= len(fitting):
        strategy = "STRICT_SPREAD"  # one member per node is possible: insist on it (SPREAD is best effort)
    pg = placement_group([dict(bundle)] * slots, strategy=strategy)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        if not any(node_slots(n["Resources"], bundle) >= 1 for n in alive_nodes()):
            raise no_node_fits(num_cpus, num_gpus, timeout_s)
        asked = {k: v * slots for k, v in bundle.items()}
        raise ResourceError(
            f"could not place {slots} member(s) at once ({placement}: {slots} x {_fmt(bundle)} = {_fmt(asked)}) "
            f"within {timeout_s:g} s; the cluster has {describe_cluster()}; lower resources.max_parallel_members "
            f"or the per-member resources, or add nodes"
        )
    log.info("placed %d member slot(s) of %s (%s)", slots, bundle, strategy)
    return MemberPlacement(pg, slots, bundle, placement, timeout_s)


def on_this_node() -> dict:
    """`.options(...)` that keep a helper actor (progress board, voter) on the driver's node, off worker nodes
    that may go away (hard affinity: a soft one let Ray put it on a worker node that was then lost)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        node_id = ray.get_runtime_context().get_node_id()
    except Exception as exc:  # e.g. a Ray Client driver, which is on no node: let Ray choose
        log.debug("driver node unknown (%s); helper actors go where Ray puts them", exc)
        return {}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def _sees(path: str) -> bool:
    return os.path.exists(path)


def check_shared_dir(path: Path, timeout_s: float = 120.0) -> None:
    """On a multi-node cluster, check that every alive node sees `path` (member checkpoints live there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    if len(nodes) <= 1:
        return
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".probe-{uuid.uuid4().hex[:8]}"
    probe.write_text("")
    sees = ray.remote(num_cpus=0)(_sees)
    try:
        refs = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe))
            for n in nodes}
        blind = [name for name, ok in zip(refs, ray.get(list(refs.values()), timeout=timeout_s)) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise CommitteeError(
            f"{path} is not visible on node(s) {', '.join(blind)}: on a multi-node cluster member checkpoints "
            f"must go to shared storage; use a --run-dir every node sees (NFS, EFS, ...) or set storage.uri "
            f"(e.g. s3://bucket/prefix)"
        )
