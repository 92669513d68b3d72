"""`committee distill`: a committee -> distilled training sets -> fresh students -> report.

The committee is trained here exactly as `committee run` trains it (the shared stages of
`orchestrator.run.driver`: open_run, train_members, write_run_report), or taken from a finished run
(`--from-run RUN_DIR`: its members, tokenizer and task split; no member is trained). Then, at every
IPC of `distill.ipc`, after the members' prior alpha (CV-DD's: the validation accuracy of a student taught by
each member alone; `orchestrator.distill.teaching`):
1. random_hard      random real examples + hard labels;
2. random_single    the same examples + soft labels of the best member (by alpha);
3. random_soft      the same examples + committee soft labels: the mean probability (the soft committee);
4. random_equal     the same examples + committee soft labels: logits summed with equal weights (CV-DD's
                    equal voter);
5. random_prior     the same examples + prior-weighted committee logits (CV-DD relabel, softmax(alpha / 10));
6. selected_prior   committee-selected real examples (herding or confidence) + prior-weighted labels;
7. recover          CV-DD recover from the examples of 1-5 (a random span crop every iteration), guided by a
                    pair of members drawn per IPC index (weights softmax(alpha / 5)), relabelled as in 5;
                    recover_single: one expert (the best member) guides and labels;
8. attention        synthetic input embeddings with learned soft labels and [CLS] attention labels, trained
                    through the student's update (Maekawa et al. 2023), the committee supplying the labels;
9. full             the whole training split with hard labels (the reference); chance is reported too;
10. kd_full         the committee distilled into one student: the training split (and unlabelled texts of
                    the task) with the committee's soft labels; its accuracy and latency against the committee.
Fixed labels come from the voting actor (`workers.train.actors.VoterActor.soft_labels`), the same actor and
rules that vote the committee's classification; per-view labels (`distill.student.relabel: per_view`) from
the same rules inside each student's task. Recover chunks, attention sets and students run as Ray tasks
(the stages: `orchestrator.distill.stages`, `orchestrator.distill.teaching`).

A stopped distillation (Ctrl-C, SIGTERM, a crash) is continued with `distill_experiment(...,
resume=True)` (`committee distill --resume RUN_DIR`): finished members, distilled sets, recover tasks
and students are read back from disk (`orchestrator.distill.store`), the rest runs; only resources.*
may change. With `storage.uri` the distillation's outputs are copied there at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from orchestrator.config.distill import BASE_METHODS, COMMITTEE_METHODS, DistillExperimentConfig
from orchestrator.distill.stages import Distillation
from orchestrator.distill.store import MIRRORED, DistillStore, Origin
from orchestrator.run import driver, rundir
from orchestrator.run.plan import STUDENT_BASE, member_specs, student_base_spec
from orchestrator.run.rundir import FinishedRun, read_finished
from workers.errors import CommitteeError
from workers.storage import checkpoint
from workers.train.member import MemberSpec, load_result

log = logging.getLogger(__name__)

# sections that define the committee: with --from-run they come from the run, not from the config
COMMITTEE_SECTIONS = ("seed", "task", "tokenizer", "model", "pretrain", "finetune", "committee", "deep")


# ----------------------------------------------------------------------------------------------
# checks (before anything is created)


def check_request(cfg: DistillExperimentConfig) -> None:
    """Refuse what cannot be distilled: an IPC above the smallest class, one member for a committee method, an
    attention set without the students' pre-trained base, more unlabelled texts than the task has."""
    from orchestrator.distill.teaching import check_unlabelled

    d = cfg.distill
    per_class = cfg.task.train_per_class  # every class of the training split has exactly this many
    too_big = [n for n in d.ipc if n > per_class]
    if too_big:
        raise CommitteeError(f"distill.ipc {too_big} is larger than the smallest class of the training split "
                             f"({per_class} examples per class, task.train_per_class); lower distill.ipc or raise "
                             f"task.train_per_class")
    if d.prior.source == "student" and d.prior.ipc > per_class:
        raise CommitteeError(f"distill.prior.ipc {d.prior.ipc} is larger than the smallest class of the training "
                             f"split ({per_class} examples per class); lower distill.prior.ipc")
    on_base = [m for m in d.methods if m in BASE_METHODS]
    if on_base and d.student.init != "pretrained":
        raise CommitteeError(f"distill.methods {on_base} learn sets in the input-embedding space of the students' "
                             f"pre-trained base, but distill.student.init is {d.student.init!r}; set "
                             f"distill.student.init=pretrained or leave them out of distill.methods")
    needs_two = [m for m in d.methods if m in COMMITTEE_METHODS]
    if needs_two and cfg.committee.members < 2:
        raise CommitteeError(f"distill.methods {needs_two} need a committee of at least two members, but it has "
                             f"{cfg.committee.members} (committee.members); train a larger committee or leave "
                             f"them out of distill.methods")
    check_unlabelled(cfg)


def with_source_run(cfg: DistillExperimentConfig, from_run: Path,
                    echo=print) -> tuple[DistillExperimentConfig, FinishedRun]:
    """The config of a distillation from a finished run: the committee's sections from the run, `distill`,
    name, data, resources and storage from `cfg`; refused when the run's task differs from the config's."""
    source = read_finished(from_run, hint="point --from-run at the directory of a `committee run` that finished "
                                          "(it holds report.json)")
    run_cfg = source.config.model_dump(mode="json")
    mine = cfg.model_dump(mode="json")
    task_diffs = [f"task.{k} (run: {run_cfg['task'][k]!r}, config: {v!r})" for k, v in mine["task"].items()
                  if run_cfg["task"][k] != v]
    if task_diffs:
        raise CommitteeError(f"--from-run {from_run} was trained on another task split: {'; '.join(task_diffs)}; "
                             f"set the config's task section to the run's (e.g. as overrides) or train a new "
                             f"committee without --from-run")
    ignored = sorted(f"{section}.{key}" for section in COMMITTEE_SECTIONS if isinstance(mine[section], dict)
                     for key in mine[section] if mine[section][key] != run_cfg[section][key])
    ignored += [s for s in COMMITTEE_SECTIONS if not isinstance(mine[s], dict) and mine[s] != run_cfg[s]]
    if ignored:
        echo(f"the committee's settings come from {from_run}; the config's {', '.join(ignored)} are not used")
    merged = {**run_cfg, **{k: mine[k] for k in mine if k not in COMMITTEE_SECTIONS}}
    return DistillExperimentConfig.model_validate(merged), source


# ----------------------------------------------------------------------------------------------
# the students' base: taken from the source run when it finished there


def _finished_base(spec: MemberSpec, member_dir) -> bool:
    done = load_result(member_dir)
    return (done is not None and (done.seed, done.num_layers, done.pretrain_stats.get("steps"))
            == (spec.seed, spec.model.num_layers, spec.pretrain_steps))


def _reused_base(cfg, base: MemberSpec, source: FinishedRun | None):
    """The --from-run directory's finished students' base when it matches (seed, shape, pre-training); None:
    the base is pre-trained here."""
    if source is not None:
        candidate = rundir.RunLayout.of(source.config, source.run_dir).member_dir(STUDENT_BASE)
        if _finished_base(base, candidate):
            return candidate
    return None


# ----------------------------------------------------------------------------------------------
# resume: a distillation's own run directory, with its own config (resources may change)




def resume_source(run_dir: Path, from_run: str | Path | None, origin: Origin | None) -> Path | None:
    """Where a resumed distillation's committee comes from: the --from-run it recorded when it started (a
    different --from-run is refused); a directory that recorded none (an older version) takes `from_run`."""
    if origin is None:
        return None if from_run is None else Path(from_run)
    if from_run is not None and Path(from_run).resolve() != origin.from_run:
        where = ("trained its own committee" if origin.from_run is None
                 else f"took its committee from --from-run {origin.from_run}")
        raise CommitteeError(f"--resume {run_dir} {where}; resume it without --from-run")
    return origin.from_run




# ----------------------------------------------------------------------------------------------
# the command


def distill_command(config, overrides, from_run, run_dir, resume, address, overwrite, command: str, echo) -> dict:
    """`committee distill CONFIG [KEY=VALUE ...]` or `committee distill --resume DIR [KEY=VALUE ...]`."""
    cfg, target, resuming = rundir.open_command("distill", config, overrides, run_dir, resume, overwrite)
    with rundir.continuable(target):
        return distill_experiment(cfg, target.path, from_run=from_run, address=address, overwrite=overwrite,
                                  resume=resuming, command=command, echo=echo)


def distill_experiment(cfg: DistillExperimentConfig, run_dir: str | Path, from_run: str | Path | None = None,
                       address: str | None = None, overwrite: bool = False, resume: bool = False, command: str = "",
                       echo=print) -> dict:
    """Distill into `run_dir` (training the committee first unless `from_run`); returns distill.json's dict.

    resume=True continues the distillation in `run_dir` (same config but resources.*; its --from-run is
    the one it recorded): finished stages are read back from disk, the others run.
    """
    t_start = time.perf_counter()
    origin = None
    if resume:
        origin, from_run, command = _continued(Path(run_dir), from_run, command)
    source = None
    if from_run is not None:
        rundir.check_apart(Path(run_dir), Path(from_run), "--from-run")
        cfg, source = with_source_run(cfg, Path(from_run), echo)
    check_request(cfg)
    layout = rundir.RunLayout.of(cfg, run_dir)
    committee_specs = [] if source else member_specs(cfg, layout)
    specs, base_dir = list(committee_specs), None
    if cfg.distill.student.init == "pretrained":
        base = student_base_spec(cfg, str(layout.member_dir(STUDENT_BASE)))
        found = _reused_base(cfg, base, source)
        if found is not None:
            base_dir = checkpoint.join(found, "mlm")
        else:
            specs.append(base)
            base_dir = checkpoint.join(base.out_dir, "mlm")
    run = driver.open_run(cfg, run_dir, address, overwrite=overwrite, resume=resume, specs=specs,
                          tokenizer_path=None if source is None else source.tokenizer_dir, echo=echo, kind="distill")
    try:
        if origin is None:
            _record_origin(run, from_run, command)
        if source is not None:
            echo(f"committee from {source.run_dir}: {len(source.names)} members, no member is trained"
                 + ("; pre-training the students' base (a non-member)" if specs else ""))
        results = driver.train_members(run, cfg, specs, echo=echo, resume=resume)
        if source is None:
            driver.write_run_report(run, cfg, committee_specs, results, command=command, echo=echo)
            source = read_finished(layout.run_dir)  # the committee just trained, read back as a finished run
        timing = {"committee_s": time.perf_counter() - t_start, **({"resumed": True} if resume else {})}
        out = Distillation(run, cfg, source, base_dir, echo).run(command, timing, t_start)
        dest = layout.mirror(MIRRORED)
        if dest is not None:
            echo(f"distillation copied to {dest}")
        return out
    finally:
        run.events.close()  # a no-op when the committee's report closed it
        run.claim.release()


def _continued(run_dir: Path, from_run, command: str) -> tuple[Origin | None, Path | None, str]:
    """What a resume continues, after the checks that need no config: (its recorded origin, its --from-run,
    the command the reports show: the one that started it)."""
    rundir.RunDir(run_dir, "distill").check_resumable()
    origin = DistillStore(run_dir).read_origin()
    return origin, resume_source(run_dir, from_run, origin), command if origin is None else origin.command


def _record_origin(run: driver.OpenRun, from_run, command: str) -> None:
    """Write where the committee comes from, which `--resume` reads; a failure here leaves the disk as found."""
    try:
        DistillStore(run.layout.run_dir).write_origin(from_run, command)
    except BaseException:
        run.claim.rollback()
        raise
