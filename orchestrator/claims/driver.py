"""`committee claims SUITE`: run a suite's steps (runs, sweeps, distillations, latency) over its seed blocks,
then measure every claim and write claims.md, claims.json and the plots into the suite's directory.

The suite directory (default runs/<suite name>) holds `suite.yaml` (the resolved suite, what `--resume`
reads), `configs/<step>.yaml` (each step's config), one directory per step, `steps.json` (each step's
command, wall time and the machine's load while it ran) and the report. Each step is a command the project
already has, run in this process on one Ray (`orchestrator.claims.plan`). A step whose result file exists is
finished; `--resume DIR` keeps those and starts the others again, so a suite stopped after hours loses at
most the step that was running.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

from orchestrator.claims import latency as latency_step
from orchestrator.claims import measure, report
from orchestrator.claims.plan import Step, describe, plan_steps
from orchestrator.config.claims import ClaimsConfig, load_claims_config
from orchestrator.config.loader import PlainDumper
from orchestrator.run.claim import check_target, claim, is_run_dir
from orchestrator.run.rundir import Stopped, was_terminated
from workers.errors import CommitteeError

SUITE_FILE = "suite.yaml"
STEPS_FILE = "steps.json"
RESULT_FILES = {"run": "report.json", "sweep": "sweep.json", "distill": "distill.json", "latency": "latency.json"}


def suite_mapping(suite: ClaimsConfig) -> dict:
    """The resolved suite as the mapping of its file: experiment keys, then `claims:` (each sweep's space as
    `{key: {kind: bounds}}` and its seeds as the blocks, as a suite file writes them)."""
    raw = suite.experiment.model_dump(mode="json")
    claims = suite.claims.model_dump(mode="json")
    for which in ("data", "overlap"):
        section = getattr(suite.claims, which)
        claims[which]["space"] = {k: {d.kind: d.bounds} for k, d in section.space.items()}
        claims[which]["seeds"] = suite.claims.seed_blocks
    raw["claims"] = claims
    return raw


def write_yaml(path: Path, mapping: dict, first_line: str) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {first_line}\n" + yaml.dump(mapping, Dumper=PlainDumper, sort_keys=False))


def step_mapping(step: Step) -> dict:
    from orchestrator.config.commands import as_mapping

    return as_mapping(step.config)


def finished(step: Step, suite_dir: Path) -> bool:
    return (suite_dir / step.id / RESULT_FILES[step.kind]).is_file()


def run_step(step: Step, suite: ClaimsConfig, suite_dir: Path, address: str | None, echo) -> None:
    """One step, in this process: a started but unfinished step directory is started again (--overwrite)."""
    from orchestrator.distill.driver import distill_experiment
    from orchestrator.run.driver import run_experiment
    from orchestrator.sweep.driver import run_sweep

    out = suite_dir / step.id
    overwrite = out.exists()
    command = step.command().replace("$SUITE", str(suite_dir))
    source = None if step.source is None else suite_dir / step.source
    if step.kind == "run":
        run_experiment(step.config, out, address=address, overwrite=overwrite, command=command, echo=echo,
                       pretrained_from=source)
    elif step.kind == "sweep":
        run_sweep(step.config, out, address=address, overwrite=overwrite, command=command, echo=echo)
    elif step.kind == "distill":
        distill_experiment(step.config, out, from_run=source, address=address, overwrite=overwrite,
                           command=command, echo=echo)
    else:
        lat = suite.claims.latency
        result = latency_step.measure(source, lat.batch_sizes, lat.requests, lat.warmup, suite.block_seed(step.block))
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULT_FILES["latency"]).write_text(json.dumps(result, indent=2) + "\n")
        echo("latency: " + ", ".join(f"batch {b}: committee / BERT-6 = {r['ratio_p50']:.2f}"
                                     for b, r in result["batches"].items()))


def _record(suite_dir: Path, entry: dict) -> None:
    path = suite_dir / STEPS_FILE
    steps = json.loads(path.read_text()) if path.is_file() else {}
    steps[entry["id"]] = entry
    path.write_text(json.dumps(steps, indent=2) + "\n")


def prefixed(echo, step_id: str):
    """`echo` for a step's own output: each line starts with the step's id (typer's keyword arguments pass)."""
    return lambda message="", **kwargs: echo(f"  {step_id}: {message}", **kwargs)


def run_steps(suite: ClaimsConfig, steps: list[Step], suite_dir: Path, address: str | None, echo) -> None:
    """Every unfinished step in order, each recorded in steps.json with its wall time and the machine's load."""
    for number, step in enumerate(steps, 1):
        if finished(step, suite_dir):
            echo(f"[{number}/{len(steps)}] {step.id}: finished before, kept")
            continue
        echo(f"[{number}/{len(steps)}] {step.id}: {step.command()}")
        load_before, t0 = os.getloadavg(), time.perf_counter()
        try:
            run_step(step, suite, suite_dir, address, prefixed(echo, step.id))
        except CommitteeError as exc:
            raise CommitteeError(f"step {step.id} failed: {exc}\n(the finished steps are kept; after fixing what "
                                 f"this names, continue with: committee claims --resume "
                                 f"{shlex.quote(str(suite_dir))})") from None
        _record(suite_dir, {"id": step.id, "kind": step.kind, "block": step.block, "claims": list(step.claims),
                            "command": step.command(), "wall_s": round(time.perf_counter() - t0, 1),
                            "load_average_before": [round(x, 2) for x in load_before],
                            "load_average_after": [round(x, 2) for x in os.getloadavg()],
                            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def open_suite(suite: str | Path | None, overrides: list[str] | None, run_dir: Path | None, resume: Path | None,
               overwrite: bool) -> tuple[ClaimsConfig, Path, bool]:
    """The suite and its directory: `SUITE [KEY=VALUE ...] [--run-dir DIR] [--overwrite]`, or `--resume DIR`
    (the suite.yaml saved there; nothing may change)."""
    if resume is None:
        if suite is None:
            raise CommitteeError("give a claims suite (committee claims SUITE: a file, or a built-in name such as "
                                 "laptop), or --resume DIR")
        cfg = load_claims_config(suite, overrides)
        return cfg, Path(run_dir) if run_dir is not None else Path("runs") / cfg.name, False
    if suite is not None or overrides or run_dir is not None or overwrite:
        raise CommitteeError("--resume DIR continues the suite saved in DIR as it was; give no SUITE, overrides, "
                             "--run-dir or --overwrite with it")
    resume = Path(resume)
    if not (resume / SUITE_FILE).is_file() or not is_run_dir(resume):
        raise CommitteeError(f"cannot resume {resume}: it holds no {SUITE_FILE} of a `committee claims` suite; give "
                             f"--resume the directory a suite was started in (default runs/<suite name>)")
    return load_claims_config(resume / SUITE_FILE), resume, True


def claims_command(suite, overrides, run_dir, resume, overwrite, plan_only: bool, address, command: str,
                   echo) -> dict | None:
    """`committee claims SUITE [KEY=VALUE ...]`, `--plan`, or `--resume DIR`."""
    from orchestrator.run.driver import data_root_or_none

    cfg, suite_dir, resuming = open_suite(suite, overrides, run_dir, resume, overwrite)
    steps = plan_steps(cfg)
    if plan_only:
        echo(describe(cfg, steps))
        return None
    check_target(suite_dir, data_root_or_none(cfg.experiment), overwrite=overwrite, resume=resuming)
    held = claim(suite_dir, overwrite=overwrite, resume=resuming)
    try:
        if not resuming:
            write_yaml(suite_dir / SUITE_FILE, suite_mapping(cfg), f"committee claims --resume {suite_dir}")
            for step in steps:
                if step.config is not None:
                    write_yaml(suite_dir / "configs" / f"{step.id}.yaml", step_mapping(step),
                               f"{step.command()}   (the claims suite {cfg.name}, step {step.id})")
            (suite_dir / "command.txt").write_text((command or f"committee claims {cfg.path}") + "\n")
        held.commit()
    except BaseException:
        held.rollback()
        raise
    try:
        echo(f"claims suite {cfg.name}: {len(steps)} steps into {suite_dir}")
        try:
            run_steps(cfg, steps, suite_dir, address, echo)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: say how to continue the suite, not the step
            raise Stopped(was_terminated(exc), f"committee claims --resume {shlex.quote(str(suite_dir))}") from exc
        claims = measure.measure_all(cfg, steps, suite_dir)
        out = report.build(cfg, steps, suite_dir, claims)
        report.write(suite_dir, out)
        echo(f"claims: {suite_dir / report.MARKDOWN}")
        for c in claims:
            echo(f"  claim {c['claim']}: {c['verdict']} ({c['statement']})")
        return out
    finally:
        held.release()
