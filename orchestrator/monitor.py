"""The launch/monitor stage: place member actors, follow their progress, collect results, re-place.

`MemberRun` runs a list of `MemberSpec`s on one `ray.put` of the shared arrays: it skips members
that already finished (their result.npz), places the rest in one placement group, launches one actor
each, and follows them with `ray.wait`, writing every progress record to metrics.jsonl and a
progress line to the terminal. Surviving failures: a member whose process dies is restarted by Ray
(`max_restarts`) and resumes from its last checkpoint; a member whose node dies is moved with its
placement-group bundle, or, when no node has room for it, every unfinished member is placed again
on the nodes left (`MemberPlacement.lost`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator import cluster
from workers.errors import CommitteeError
from workers.member import MemberResult, MemberSpec, load_result

PROGRESS_EVERY_S = 10.0
MEMBER_RESTARTS = 3  # a member whose process dies is restarted this often, resuming from its checkpoint


def _same_member(result: MemberResult, spec: MemberSpec) -> bool:
    steps = result.pretrain_stats.get("steps", 0) if result.pretrained else 0
    return ((result.name, result.seed, result.role, result.num_layers, steps)
            == (spec.name, spec.seed, spec.role.value, spec.model.num_layers, spec.pretrain_steps))


def finished_results(specs: list[MemberSpec]) -> dict[str, MemberResult]:
    """Results of the members that already finished (a resumed or re-placed run skips them)."""
    results = {}
    for spec in specs:
        done = load_result(spec.out_dir)
        if done is None:
            continue
        if not _same_member(done, spec):
            raise CommitteeError(f"{spec.out_dir} holds a different {spec.name} (seed {done.seed}, "
                                 f"{done.num_layers} layers); use a new --run-dir")
        results[spec.name] = done
    return results


def progress_line(latest: dict[str, dict], running) -> str:
    """One line: each running member's phase, step and throughput, then how many wait for resources."""
    parts, waiting = [], 0
    for spec in running:
        rec = latest.get(spec.name)
        if rec is None:
            waiting += 1
        elif rec["phase"] == "start":
            parts.append(f"{spec.name} starting on {rec['node_ip']}")
        elif rec["phase"] == "pretrain":
            parts.append(f"{spec.name} pretrain {rec['step']}/{rec['max_steps']} loss {rec['loss']:.2f} "
                         f"{rec['tokens_per_s'] / 1000:.1f}k tok/s")
        else:
            parts.append(f"{spec.name} finetune epoch {rec['epoch']}/{rec['epochs']}")
    if waiting:
        parts.append(f"{waiting} waiting for resources")
    return " | ".join(parts)


class MemberRun:
    """One launch of members: `run()` returns {name: MemberResult} for every spec, finished or not before."""

    def __init__(self, ray, specs: list[MemberSpec], arrays_ref, resources, metrics_path: Path, echo=print,
                 in_process: bool = False, on_started=None):
        self.ray, self.specs, self.arrays_ref, self.res = ray, specs, arrays_ref, resources
        self.metrics_path, self.echo, self.in_process = Path(metrics_path), echo, in_process
        self.on_started = on_started  # called once the members are placed and launched
        self.results: dict[str, MemberResult] = {}
        self.pending: dict = {}  # object ref -> (spec, actor)
        self.placement: cluster.MemberPlacement | None = None
        self.board = None
        self.t0 = time.perf_counter()

    def _elapsed(self) -> str:
        return f"[{time.perf_counter() - self.t0:6.0f}s]"

    def _place(self, count: int) -> cluster.MemberPlacement:
        res = self.res
        placed = cluster.place_members(count, res.num_cpus_per_member, res.gpus_per_member, res.placement,
                                       res.placement_timeout_s, res.max_parallel_members, in_process=self.in_process)
        self.echo(f"placement ({res.placement}): {placed.slots} member(s) at once on "
                  f"{len(set(placed.bundle_nodes()))} node(s)")
        return placed

    def _launch(self, spec: MemberSpec) -> None:
        from workers.actors import MemberActor

        threads = max(1, int(self.res.num_cpus_per_member))
        actor = MemberActor.options(**self.placement.actor_options(), max_restarts=MEMBER_RESTARTS,
                                    max_task_retries=MEMBER_RESTARTS).remote(threads)
        self.pending[actor.run.remote(spec, self.arrays_ref, self.board)] = (spec, actor)

    def run(self) -> dict[str, MemberResult]:
        from workers.actors import ProgressBoard

        self.results = finished_results(self.specs)
        todo = [s for s in self.specs if s.name not in self.results]
        if len(todo) < len(self.specs):
            self.echo(f"{len(self.specs) - len(todo)} member(s) already finished; running {len(todo)}")
        if not todo:
            if self.on_started:
                self.on_started()
            return self.results
        self.board = ProgressBoard.options(**cluster.on_this_node()).remote()
        try:
            self.placement = self._place(len(todo))
            for spec in todo:
                self._launch(spec)
            if self.on_started:
                self.on_started()
            with open(self.metrics_path, "a") as metrics:
                self._follow(metrics)
        finally:
            for _, actor in self.pending.values():
                self.ray.kill(actor, no_restart=True)
            if self.placement is not None:
                self.placement.remove()
            self.ray.kill(self.board)
        return self.results

    def _write(self, metrics, record: dict) -> None:
        metrics.write(json.dumps({"time_s": round(time.perf_counter() - self.t0, 3), **record}) + "\n")

    def _follow(self, metrics) -> None:
        """Until every member is done: drain progress, collect finished members, re-place after a lost node."""
        last_print = time.perf_counter()
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            new, latest = self.ray.get(self.board.drain.remote())
            for record in new:
                self._write(metrics, record)
                if record.get("phase") == "start" and record.get("restarted"):
                    self.echo(f"{self._elapsed()} {record['member']} restarted on {record['node_ip']}; "
                              f"it resumes from its last checkpoint")
            for ref in ready:
                self._collect(ref, metrics)
            metrics.flush()
            if self.pending and self.placement.lost():
                self._place_again()
            if time.perf_counter() - last_print >= PROGRESS_EVERY_S and self.pending:
                last_print = time.perf_counter()
                self.echo(f"{self._elapsed()} " + progress_line(latest, [s for s, _ in self.pending.values()]))

    def _collect(self, ref, metrics) -> None:
        spec, actor = self.pending.pop(ref)
        try:
            result = self.ray.get(ref)
        except Exception as exc:  # a member failed for good: say which one, keep what finished
            cause = getattr(exc, "cause", None)
            if isinstance(cause, CommitteeError):  # a user-fixable fault inside the member (disk full, ...)
                raise CommitteeError(f"{spec.name} failed: {cause}") from None
            raise CommitteeError(f"{spec.name} failed: {exc}") from exc
        self.ray.kill(actor)
        self.results[spec.name] = result
        self._write(metrics, {"member": spec.name, "phase": "done", "val_accuracy": result.val_accuracy,
                              "test_accuracy": result.test_accuracy})
        self.echo(f"{self._elapsed()} {spec.name} done: val {result.val_accuracy:.3f} "
                  f"test {result.test_accuracy:.3f} ({len(self.results)}/{len(self.specs)})")

    def _place_again(self) -> None:
        """A node was lost and its bundles found no room: place the unfinished members again on the nodes left.

        Every unfinished member's actor is stopped (members on healthy nodes too: the new placement group
        decides where each goes) and relaunched; each resumes from its last checkpoint on shared storage.
        """
        unfinished = [spec for spec, _ in self.pending.values()]
        self.echo(f"{self._elapsed()} a node was lost and no node has room for its members; placing the "
                  f"{len(unfinished)} unfinished member(s) again (they resume from their last checkpoints)")
        for _, actor in self.pending.values():
            self.ray.kill(actor, no_restart=True)
        self.pending.clear()
        self.placement.remove()
        self.placement = self._place(len(unfinished))
        for spec in unfinished:
            done = load_result(spec.out_dir)
            if done is not None:  # it finished just before its actor was stopped
                self.results[spec.name] = done
            else:
                self._launch(spec)
