"""The committee driver: prepare data, launch member actors, follow their progress, vote, report."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from orchestrator import cluster, report
from orchestrator.config import ExperimentConfig, to_yaml
from orchestrator.plan import member_specs
from orchestrator.prepare import build_inputs, check_data
from workers.errors import CommitteeError
from workers.member import MemberResult, load_result

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
MEMBER_RESTARTS = 3  # a member whose process dies is restarted this often, resuming from its checkpoint


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise CommitteeError(f"run directory {run_dir} already exists; pass --overwrite to replace it "
                                 f"or --run-dir to choose another")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, address: str | None = None,
                   overwrite: bool = False, command: str = "", echo=print) -> dict:
    """Run the whole experiment into `run_dir`; returns the report dict (also written as report.json)."""
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    root = check_data(cfg)
    prepare_run_dir(run_dir, overwrite)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))  # the resolved config comes first
    echo(f"run directory: {run_dir}")

    inputs, corpus = build_inputs(cfg, root, run_dir, echo=echo)
    echo(f"corpus: {corpus['articles']} articles, {corpus['corpus_tokens']:,} tokens in {corpus['blocks']:,} "
         f"blocks of {cfg.pretrain.seq_len}; task {cfg.task.name}: {corpus['train_examples']} train / "
         f"{corpus['val_examples']} val / {corpus['test_examples']} test")

    ray = cluster.connect(address)
    res = cfg.resources
    cluster.wait_for_fit(res.num_cpus_per_member, res.gpus_per_member,
                         timeout_s=0.0 if address is None else res.placement_timeout_s)
    specs = member_specs(cfg, run_dir)
    results = run_members(ray, specs, inputs, cfg, run_dir, echo)

    members_done = time.perf_counter()
    from workers.actors import VoterActor

    voter = VoterActor.remote()
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
    return out


def run_members(ray, specs, inputs, cfg: ExperimentConfig, run_dir: Path, echo) -> dict[str, MemberResult]:
    """Launch one actor per unfinished member, follow progress with ray.wait, collect results as they finish."""
    from workers.actors import MemberActor, ProgressBoard

    results: dict[str, MemberResult] = {}
    for spec in specs:
        done = load_result(spec.out_dir)
        if done is not None:
            results[spec.name] = done
    todo = [s for s in specs if s.name not in results]
    if len(todo) < len(specs):
        echo(f"{len(specs) - len(todo)} member(s) already finished in {run_dir}; running {len(todo)}")

    board = ProgressBoard.remote()
    inputs_ref = ray.put(inputs)
    res = cfg.resources
    pending = {}
    for spec in todo:
        actor = MemberActor.options(
            num_cpus=res.num_cpus_per_member, num_gpus=res.gpus_per_member,
            max_restarts=MEMBER_RESTARTS, max_task_retries=MEMBER_RESTARTS,
        ).remote(max(1, int(res.num_cpus_per_member)))
        pending[actor.run.remote(spec, inputs_ref, board)] = (spec, actor)

    metrics_path = run_dir / "metrics.jsonl"
    t0 = last_print = time.perf_counter()
    total = len(specs)
    with open(metrics_path, "a") as metrics:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            new, latest = ray.get(board.drain.remote())
            for record in new:
                metrics.write(json.dumps({"time_s": round(time.perf_counter() - t0, 3), **record}) + "\n")
            metrics.flush()
            for ref in ready:
                spec, actor = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # a member failed for good: say which one, keep what finished
                    for other_spec, other in pending.values():
                        ray.kill(other)
                    raise CommitteeError(f"{spec.name} failed: {exc}") from exc
                ray.kill(actor)
                results[spec.name] = result
                metrics.write(json.dumps({"time_s": round(time.perf_counter() - t0, 3), "member": spec.name,
                                          "phase": "done", "val_accuracy": result.val_accuracy,
                                          "test_accuracy": result.test_accuracy}) + "\n")
                echo(f"[{time.perf_counter() - t0:6.0f}s] {spec.name} done: val {result.val_accuracy:.3f} "
                     f"test {result.test_accuracy:.3f} ({len(results)}/{total})")
            if time.perf_counter() - last_print >= PROGRESS_EVERY_S and pending:
                last_print = time.perf_counter()
                echo(f"[{last_print - t0:6.0f}s] " + progress_line(latest, [s for s, _ in pending.values()]))
    ray.kill(board)
    return results


def progress_line(latest: dict[str, dict], running) -> str:
    """One line: each running member's phase, step and throughput, then how many wait for resources."""
    parts, waiting = [], 0
    for spec in running:
        rec = latest.get(spec.name)
        if rec is None:
            waiting += 1
        elif rec["phase"] == "pretrain":
            parts.append(f"{spec.name} pretrain {rec['step']}/{rec['max_steps']} loss {rec['loss']:.2f} "
                         f"{rec['tokens_per_s'] / 1000:.1f}k tok/s")
        else:
            parts.append(f"{spec.name} finetune epoch {rec['epoch']}/{rec['epochs']}")
    if waiting:
        parts.append(f"{waiting} waiting for resources")
    return " | ".join(parts)
