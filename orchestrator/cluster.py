"""Connecting to Ray: in-process for a laptop run, or an existing cluster by address."""

from __future__ import annotations

import logging
import os
import time

from workers.errors import ResourceError

log = logging.getLogger(__name__)


def connect(address: str | None, num_cpus: int | None = None):
    """Start Ray in-process (address None) or join the cluster at `address` (auto, ray://host:10001, host:6379)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray

    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    return ray


def started_in_process() -> bool:
    import ray

    return len(ray.nodes()) == 1 and ray.get_runtime_context().get_node_id() == ray.nodes()[0]["NodeID"]


def _largest_node(nodes: list[dict]) -> dict:
    return max((n["Resources"] for n in nodes), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})


def wait_for_fit(num_cpus: float, num_gpus: float, timeout_s: float, poll_s: float = 1.0) -> None:
    """Wait (bounded) until some alive node can hold one member; raise ResourceError naming both sides."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if any(n["Resources"].get("CPU", 0) >= num_cpus and n["Resources"].get("GPU", 0) >= num_gpus for n in nodes):
            return
        if time.monotonic() >= deadline:
            total = ray.cluster_resources()
            big = _largest_node(nodes)
            raise ResourceError(
                f"each member asks for {num_cpus:g} CPU and {num_gpus:g} GPU, but no node has that much "
                f"(largest node: {big.get('CPU', 0):g} CPU, {big.get('GPU', 0):g} GPU; cluster total: "
                f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU, {len(nodes)} node(s)); "
                f"lower resources.num_cpus_per_member / resources.gpus_per_member or add nodes"
            )
        time.sleep(poll_s)
