"""The launch/monitor stage: place member actors, follow their progress, collect results, re-place.

`MemberRun` runs a list of `MemberSpec`s on one `ray.put` of the shared arrays: it skips members
that already finished (their result.npz), places the rest in one placement group, launches one actor
per member, or per group of `resources.members_per_actor` members (workers/train/groups.py: one stacked model;
the actor asks for the sum of its members' resources; results, progress and checkpoints stay per
member), and follows them with `ray.wait`, writing every progress record to metrics.jsonl and a
progress line to the terminal. Surviving failures: a member whose process dies is restarted by Ray
(`max_restarts`) and resumes from its last checkpoint; a member whose node dies is moved with its
placement-group bundle, or, when no node has room for it, every unfinished member is placed again
on the nodes left (`MemberPlacement.lost`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from orchestrator.run import cluster, follow
from orchestrator.run.plan import auto_gpu_share, auto_members_per_actor, group_specs
from workers.errors import CommitteeError, ResourceError
from workers.train.member import MemberResult, MemberSpec, load_result

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
                 in_process: bool = False, on_started=None, on_record=None):
        self.ray, self.specs, self.arrays_ref, self.res = ray, specs, arrays_ref, resources
        self.on_record = on_record  # called with every record written to metrics.jsonl (TensorBoard events)
        self.metrics_path, self.echo, self.in_process = Path(metrics_path), echo, in_process
        self.on_started = on_started  # called once the members are placed and launched
        self.results: dict[str, MemberResult] = {}
        self.pending: dict = {}  # object ref -> (group: the specs one actor runs, actor)
        self.members_per_actor = 1  # resolved in run()
        self.bundle_members = 1  # members whose resources one bundle holds: the largest group (_place_groups)
        self.gpus_per_member = resources.gpus_per_member  # raised by `auto` where memory is short (run())
        self.placement: cluster.MemberPlacement | None = None
        self.board = None
        self.t0 = time.perf_counter()

    def _elapsed(self) -> str:
        return f"[{time.perf_counter() - self.t0:6.0f}s]"

    def _place_groups(self, groups: list[list[MemberSpec]]) -> cluster.MemberPlacement:
        """Bundles that each hold the resources of the largest group, as many as hold every member once: an
        actor asks only for its own members' resources, so smaller ones (a last short group, scratch twins,
        which run alone) share a bundle instead of taking a large one each."""
        self.bundle_members = max(len(group) for group in groups)
        self._check_group_fits()
        return self._place(math.ceil(sum(len(group) for group in groups) / self.bundle_members))

    def _place(self, count: int) -> cluster.MemberPlacement:
        """`count` bundles, each the resources of `bundle_members` members together."""
        res, per_bundle = self.res, self.bundle_members
        placed = cluster.place_members(count, res.num_cpus_per_member * per_bundle, self.gpus_per_member * per_bundle,
                                       res.placement, res.placement_timeout_s, res.max_parallel_members,
                                       in_process=self.in_process)
        unit = "member(s)" if per_bundle == 1 else f"slot(s) of {per_bundle} members' resources (a stacked group, or members alone sharing it)"
        self.echo(f"placement ({res.placement}): {placed.slots} {unit} at once on "
                  f"{len(set(placed.bundle_nodes()))} node(s)")
        return placed

    def _launch(self, group: list[MemberSpec]) -> None:
        """One actor for `group`, asking for the sum of its members' resources (a last, smaller group asks less)."""
        from workers.train.actors import MemberActor

        res = self.res
        options = {**self.placement.actor_options(), "num_cpus": res.num_cpus_per_member * len(group)}
        if self.gpus_per_member > 0:
            options["num_gpus"] = self.gpus_per_member * len(group)
        threads = max(1, int(res.num_cpus_per_member * len(group)))
        actor = MemberActor.options(**options, max_restarts=MEMBER_RESTARTS,
                                    max_task_retries=MEMBER_RESTARTS).remote(threads)
        self.pending[actor.run_group.remote(group, self.arrays_ref, self.board)] = (group, actor)

    def _resolve_members_per_actor(self, todo: list[MemberSpec]) -> int:
        """`resources.members_per_actor`, with `auto` resolved (orchestrator.run.plan.auto_members_per_actor): 1 on
        CPU; on GPU from the model shape and the memory of a GPU, which a small task on one reads."""
        res = self.res
        setting = getattr(res, "members_per_actor", 1)
        if setting != "auto":
            return setting
        if res.gpus_per_member <= 0:
            return 1
        from workers.train.actors import gpu_memory_bytes
        from workers.train.groups import member_training_bytes

        try:
            memory = self.ray.get(gpu_memory_bytes.options(num_gpus=res.gpus_per_member).remote(),
                                  timeout=res.placement_timeout_s)
        except Exception as exc:  # no GPU free yet (an autoscaler adds it later): size by the GPU share alone
            self.echo(f"members per actor: the GPU's memory could not be read ({type(exc).__name__}); "
                      f"sizing groups by resources.gpus_per_member alone")
            memory = None
        vocab_size = self.ray.get(self.arrays_ref).special.vocab_size
        member_bytes = max((member_training_bytes(s.model, s.pretrain, vocab_size) for s in todo if s.pretrains),
                           default=1)
        chosen = auto_members_per_actor(res.gpus_per_member, member_bytes, memory, len(todo))
        self.gpus_per_member = auto_gpu_share(res.gpus_per_member, member_bytes, memory)
        memory_text = "unknown" if memory is None else f"{memory / 2**30:.0f} GiB"
        raised = ("" if self.gpus_per_member == res.gpus_per_member else
                  f"; each member asks for a GPU share of {self.gpus_per_member:.4g}, its share of the memory, not "
                  f"resources.gpus_per_member={res.gpus_per_member:g}, so groups on one GPU fit its memory together")
        self.echo(f"members per actor: auto -> {chosen} (GPU share {res.gpus_per_member:g} per member, GPU memory "
                  f"{memory_text}, about {member_bytes / 2**30:.2f} GiB per member{raised})")
        return chosen

    def _check_group_fits(self) -> None:
        """In-process, the largest group's actor must fit this machine: fail at once, naming the key."""
        res, per_actor = self.res, self.bundle_members
        if per_actor == 1 or not self.in_process:
            return
        bundle = cluster.member_bundle(res.num_cpus_per_member * per_actor, self.gpus_per_member * per_actor)
        if not any(cluster.node_slots(node["Resources"], bundle) >= 1 for node in cluster.alive_nodes()):
            raise ResourceError(
                f"resources.members_per_actor={per_actor}: one actor asks for the resources of its members together "
                f"({bundle['CPU']:g} CPU, {bundle.get('GPU', 0.0):g} GPU), but no node has that much; the cluster has "
                f"{cluster.describe_cluster()}; lower resources.members_per_actor or resources.num_cpus_per_member")

    def run(self) -> dict[str, MemberResult]:
        from workers.train.actors import ProgressBoard

        self.results = finished_results(self.specs)
        todo = [s for s in self.specs if s.name not in self.results]
        if len(todo) < len(self.specs):
            self.echo(f"{len(self.specs) - len(todo)} member(s) already finished; running {len(todo)}")
        if not todo:
            if self.on_started:
                self.on_started()
            return self.results
        self.members_per_actor = self._resolve_members_per_actor(todo)
        groups = group_specs(todo, self.members_per_actor)
        self.board = ProgressBoard.options(**cluster.on_this_node()).remote()
        try:
            self.placement = self._place_groups(groups)
            for group in groups:
                self._launch(group)
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
        if self.on_record is not None:
            self.on_record(record)

    def _follow(self, metrics) -> None:
        """Until every member is done: drain progress, collect finished members, re-place after a lost node."""
        progress = follow.Every()
        for ready in follow.batches(self.ray, self.pending):
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
            if self.pending and progress.due():
                self.echo(f"{self._elapsed()} " + progress_line(latest, [s for group, _ in self.pending.values() for s in group]))

    def _collect(self, ref, metrics) -> None:
        group, actor = self.pending.pop(ref)
        # a member (or a group's actor) that failed for good is named; what finished stays on disk
        results = follow.result_of(self.ray, ref, ", ".join(spec.name for spec in group))
        self.ray.kill(actor)
        for spec in group:
            result = results[spec.name]
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
        unfinished = [spec for group, _ in self.pending.values() for spec in group]
        self.echo(f"{self._elapsed()} a node was lost and no node has room for its members; placing the "
                  f"{len(unfinished)} unfinished member(s) again (they resume from their last checkpoints)")
        for _, actor in self.pending.values():
            self.ray.kill(actor, no_restart=True)
        self.pending.clear()
        self.placement.remove()
        self.placement = None
        todo = []
        for spec in unfinished:
            done = load_result(spec.out_dir)
            if done is not None:  # it finished just before its actor was stopped
                self.results[spec.name] = done
            else:
                todo.append(spec)
        groups = group_specs(todo, self.members_per_actor)
        if groups:
            self.placement = self._place_groups(groups)
        for group in groups:
            self._launch(group)
