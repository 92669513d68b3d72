"""The committee driver: prepare data, place and launch member actors, follow their progress, vote, report.

Surviving failures: a member whose process dies is restarted by Ray (`max_restarts`) and resumes from
its last checkpoint; a member whose node dies is moved with its placement-group bundle, or, when no
node has room for the bundle, the driver places the unfinished members again on the nodes left
(`MemberPlacement.lost`). A killed driver is continued with `run_experiment(..., resume=True)`
(`committee run --resume RUN_DIR`): finished members (their `result.npz`) are loaded, not redone.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from orchestrator import cluster, report
from orchestrator.config import ExperimentConfig, load_raw, to_yaml, validate_dict
from orchestrator.plan import member_specs
from orchestrator.prepare import build_inputs, check_data
from workers import checkpoint
from workers.errors import CommitteeError
from workers.member import MemberResult, MemberSpec, load_result

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
MEMBER_RESTARTS = 3  # a member whose process dies is restarted this often, resuming from its checkpoint
# what `--resume` may change: where and how wide members run, and the committee size (members are
# pure functions of their index, so a grown committee reuses the finished ones)
RESUMABLE_KEYS = ("resources.", "committee.members")
MIRRORED_FILES = ("config.yaml", "report.json", "report.md", "committee_curve.png", "metrics.jsonl")


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise CommitteeError(f"run directory {run_dir} already exists; pass --overwrite to replace it, "
                                 f"--resume {run_dir} to continue it, or --run-dir to choose another")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _flatten(raw: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume(cfg: ExperimentConfig, run_dir: Path) -> None:
    """A resumed run may change only RESUMABLE_KEYS; anything else would mix members of two experiments."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise CommitteeError(f"cannot resume {run_dir}: it holds no config.yaml (not a run directory, "
                             f"or the run was killed before it started)")
    saved = _flatten(validate_dict(load_raw(saved_path), source=str(saved_path)).model_dump(mode="json"))
    now = _flatten(cfg.model_dump(mode="json"))
    changed = [k for k in now if now[k] != saved.get(k) and not k.startswith(RESUMABLE_KEYS)]
    if (now["committee.members"] != saved["committee.members"] and cfg.deep.enabled
            and cfg.deep.token_budget == "committee"):
        changed.append("committee.members (the deep model's token budget follows it)")
    if changed:
        diffs = "; ".join(f"{k} (run: {saved.get(k.split(' ')[0])!r}, now: {now[k.split(' ')[0]]!r})" for k in changed)
        raise CommitteeError(f"--resume {run_dir} cannot change {diffs}: finished members were trained with the "
                             f"run's values; resume without these overrides or start a new --run-dir")


def storage_root(cfg: ExperimentConfig, run_dir: Path):
    """Where a run's outputs that every node writes go: the run dir, or storage.uri/<run dir name>.

    Member checkpoints go to `<storage_root>/members`; a Tune-based command passes
    `<storage_root>/tune` as Tune's storage_path (Ray syncs nothing to the head node by itself).
    """
    return run_dir if cfg.storage.uri is None else checkpoint.join(cfg.storage.uri, run_dir.name)


def members_root(cfg: ExperimentConfig, run_dir: Path):
    """Where member checkpoints, weights and results go."""
    return checkpoint.join(storage_root(cfg, run_dir), "members")


def mirror_run_dir(run_dir: Path, dest) -> None:
    """Copy the run's config, report and metrics next to its members on shared storage (path or URI)."""
    for name in MIRRORED_FILES:
        data = checkpoint.read_bytes(run_dir / name)
        if data is not None:
            checkpoint.write_bytes(checkpoint.join(dest, name), data)


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, address: str | None = None,
                   overwrite: bool = False, command: str = "", echo=print, resume: bool = False) -> dict:
    """Run the whole experiment into `run_dir`; returns the report dict (also written as report.json).

    resume=True continues the run in `run_dir` (same config but RESUMABLE_KEYS), skipping finished members.
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    root = check_data(cfg)
    if resume:
        check_resume(cfg, run_dir)
        echo(f"resuming the run in {run_dir}")
    else:
        prepare_run_dir(run_dir, overwrite)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))  # the resolved config comes first
    echo(f"run directory: {run_dir}")

    inputs, corpus = build_inputs(cfg, root, run_dir, echo=echo, reuse_tokenizer=resume)
    echo(f"corpus: {corpus['articles']} articles, {corpus['corpus_tokens']:,} tokens in {corpus['blocks']:,} "
         f"blocks of {cfg.pretrain.seq_len}; task {cfg.task.name}: {corpus['train_examples']} train / "
         f"{corpus['val_examples']} val / {corpus['test_examples']} test")

    ray = cluster.connect(address)
    outputs = members_root(cfg, run_dir)
    if not checkpoint.is_uri(outputs):
        cluster.check_shared_dir(Path(outputs))
    specs = member_specs(cfg, run_dir, members_root=outputs)
    results = run_members(ray, specs, inputs, cfg, run_dir, echo, in_process=address is None)

    members_done = time.perf_counter()
    from workers.actors import VoterActor

    voter = VoterActor.options(**cluster.on_this_node()).remote()
    pre = [results[s.name] for s in specs if s.pretrained and s.name != "deep"]
    scratch = [results[s.name] for s in specs if not s.pretrained]
    votes = {}
    for label, group in (("pretrained", pre), ("scratch", scratch)):
        if group:
            votes[label] = ray.get(voter.vote.remote(
                np.stack([r.val_logits for r in group]), np.stack([r.test_logits for r in group]),
                inputs.val_labels, inputs.test_labels, cfg.committee.weight_temperature))
    ray.kill(voter)
    timing = {"wall_s": time.perf_counter() - t_start, "prepare_s": corpus.pop("prepare_s"),
              "members_wall_s": members_done - t_start}
    out = report.build(cfg, corpus, results, specs, votes, timing)
    report.write(run_dir, out, command=command)
    echo(f"report: {run_dir / 'report.md'}")
    if cfg.storage.uri is not None:
        dest = storage_root(cfg, run_dir)
        mirror_run_dir(run_dir, dest)
        echo(f"report copied to {dest}")
    return out


def _same_member(result: MemberResult, spec: MemberSpec) -> bool:
    steps = result.pretrain_stats.get("steps", 0) if result.pretrained else 0
    return ((result.name, result.seed, result.pretrained, result.num_layers, steps)
            == (spec.name, spec.seed, spec.pretrained, spec.num_layers, spec.pretrain_steps))


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


def run_members(ray, specs, inputs, cfg: ExperimentConfig, run_dir: Path, echo,
                in_process: bool = False) -> dict[str, MemberResult]:
    """Place and launch one actor per unfinished member, follow progress with ray.wait, collect results."""
    from workers.actors import MemberActor, ProgressBoard

    results = finished_results(specs)
    todo = [s for s in specs if s.name not in results]
    if len(todo) < len(specs):
        echo(f"{len(specs) - len(todo)} member(s) already finished in {run_dir}; running {len(todo)}")
    if not todo:
        return results

    res = cfg.resources
    threads = max(1, int(res.num_cpus_per_member))

    def place(count: int) -> cluster.MemberPlacement:
        placed = cluster.place_members(count, res.num_cpus_per_member, res.gpus_per_member, res.placement,
                                       res.placement_timeout_s, res.max_parallel_members, in_process=in_process)
        echo(f"placement ({res.placement}): {placed.slots} member(s) at once on "
             f"{len(set(placed.bundle_nodes()))} node(s)")
        return placed

    board = ProgressBoard.options(**cluster.on_this_node()).remote()
    inputs_ref = ray.put(inputs)
    placement = place(len(todo))
    pending: dict = {}

    def launch(spec: MemberSpec, placed: cluster.MemberPlacement) -> None:
        actor = MemberActor.options(**placed.actor_options(), max_restarts=MEMBER_RESTARTS,
                                    max_task_retries=MEMBER_RESTARTS).remote(threads)
        pending[actor.run.remote(spec, inputs_ref, board)] = (spec, actor)

    for spec in todo:
        launch(spec, placement)

    metrics_path = run_dir / "metrics.jsonl"
    t0 = last_print = time.perf_counter()
    total = len(specs)
    try:
        with open(metrics_path, "a") as metrics:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                new, latest = ray.get(board.drain.remote())
                for record in new:
                    metrics.write(json.dumps({"time_s": round(time.perf_counter() - t0, 3), **record}) + "\n")
                    if record.get("phase") == "start" and record.get("restarted"):
                        echo(f"[{time.perf_counter() - t0:6.0f}s] {record['member']} restarted on "
                             f"{record['node_ip']}; it resumes from its last checkpoint")
                metrics.flush()
                for ref in ready:
                    spec, actor = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # a member failed for good: say which one, keep what finished
                        raise CommitteeError(f"{spec.name} failed: {exc}") from exc
                    ray.kill(actor)
                    results[spec.name] = result
                    metrics.write(json.dumps({"time_s": round(time.perf_counter() - t0, 3), "member": spec.name,
                                              "phase": "done", "val_accuracy": result.val_accuracy,
                                              "test_accuracy": result.test_accuracy}) + "\n")
                    echo(f"[{time.perf_counter() - t0:6.0f}s] {spec.name} done: val {result.val_accuracy:.3f} "
                         f"test {result.test_accuracy:.3f} ({len(results)}/{total})")
                if pending and placement.lost():
                    placement = replace_members(ray, placement, pending, results, place, launch, echo, t0)
                if time.perf_counter() - last_print >= PROGRESS_EVERY_S and pending:
                    last_print = time.perf_counter()
                    echo(f"[{last_print - t0:6.0f}s] " + progress_line(latest, [s for s, _ in pending.values()]))
    finally:
        for _, actor in pending.values():
            ray.kill(actor, no_restart=True)
        placement.remove()
        ray.kill(board)
    return results


def replace_members(ray, placement, pending: dict, results: dict, place, launch, echo, t0: float):
    """A node was lost and its bundles found no room: place the unfinished members again on the nodes left.

    Every unfinished member's actor is stopped (members on healthy nodes too: the new placement group
    decides where each goes) and relaunched; each resumes from its last checkpoint on shared storage.
    """
    unfinished = [spec for spec, _ in pending.values()]
    echo(f"[{time.perf_counter() - t0:6.0f}s] a node was lost and no node has room for its members; "
         f"placing the {len(unfinished)} unfinished member(s) again (they resume from their last checkpoints)")
    for _, actor in pending.values():
        ray.kill(actor, no_restart=True)
    pending.clear()
    placement.remove()
    placement = place(len(unfinished))
    for spec in unfinished:
        done = load_result(spec.out_dir)
        if done is not None:  # it finished just before its actor was stopped
            results[spec.name] = done
        else:
            launch(spec, placement)
    return placement


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
