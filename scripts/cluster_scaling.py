"""Members per second of wall time on a simulated cluster of 1, 2, 3 worker nodes with 1 CPU each.

    .venv/bin/python scripts/cluster_scaling.py                 # 6 members, 100 pre-training steps each
    .venv/bin/python scripts/cluster_scaling.py --members 6 --steps 100 --nodes 1 2 3 --json out.json

Each node count gets a fresh ray.cluster_utils.Cluster (a CPU-less head and N one-CPU workers, real
Ray processes on this machine) and the same committee (configs/smoke.yaml, members only). The
members phase is timed from the driver's first placement to the last member's result; members per
second = members / that time. All simulated nodes share this machine's cores: past its core count the
nodes only time-share, so the numbers measure the orchestration, not extra hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_TMPDIR", "/tmp/ray-scale")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def measure(nodes: int, members: int, steps: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.config.experiment import load_config
    from orchestrator.run import driver

    sim = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        sim.add_node(num_cpus=1)
    sim.wait_for_nodes()
    ray.init(address=sim.address, log_to_driver=False)
    try:
        cfg = load_config(REPO / "configs" / "smoke.yaml", [
            f"committee.members={members}", "committee.scratch=false", "deep.enabled=false",
            f"pretrain.max_steps={steps}", "finetune.epochs=1", "resources.placement=spread"])
        with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
            t0 = time.perf_counter()
            report = driver.run_experiment(cfg, Path(tmp) / "run", address=sim.address, echo=lambda _: None)
            wall = time.perf_counter() - t0
        # the members phase: from the end of data preparation to the last member's result
        members_s = report["timing"]["members_wall_s"] - report["timing"]["prepare_s"]
    finally:
        ray.shutdown()
        sim.shutdown()
    return {"nodes": nodes, "members": members, "pretrain_steps": steps, "members_s": round(members_s, 1),
            "run_wall_s": round(wall, 1), "members_per_s": round(members / members_s, 4),
            "pretrain_tokens_per_s_per_member": round(report["timing"]["pretrain_tokens_per_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for n in args.nodes:
        row = measure(n, args.members, args.steps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["members_per_s"]
    print(f"\n| nodes (1 CPU each) | members phase (s) | members/s | speed-up | per-member tokens/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nodes']} | {r['members_s']} | {r['members_per_s']:.3f} | {r['members_per_s'] / base:.2f}x | "
              f"{r['pretrain_tokens_per_s_per_member']:,} |")
    print(f"\nmachine: {os.cpu_count()} cores; load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
