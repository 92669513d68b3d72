"""`committee run`: prepare -> launch/monitor -> score -> report, composed from the shared stages.

The stages are functions other commands compose too (`committee distill` trains its committee with
them): `open_run` (checks, prepare, connect, claim), `train_members` (launch and follow members),
`write_run_report` (score and report).

Every check that can fail (run directory, config, resume compatibility, checkpoints, the whole data,
the tokenizer, resources in-process) runs before anything is created or deleted; a run that fails
before its members start leaves the disk as it found it (`rundir.RunClaim.rollback`).
A killed driver is continued with `run_experiment(..., resume=True)` (`committee run --resume
RUN_DIR`): finished members (their result.npz) are loaded, not redone; the others resume from their
checkpoints.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config.commands import to_yaml
from orchestrator.config.experiment import ExperimentConfig
from orchestrator.run import cluster, report, rundir
from orchestrator.run.evidence import evidence
from orchestrator.run.monitor import MemberRun
from orchestrator.run.plan import member_specs
from orchestrator.run.prepare import Prepared, prepare
from orchestrator.run.pretrained_from import PretrainedSource, copy_pretrained, pretrained_source, recorded
from workers.errors import CommitteeError
from workers.storage import checkpoint
from workers.storage.events import RunEvents
from workers.train.member import MemberResult, MemberSpec, Role

log = logging.getLogger(__name__)

def check_member_checkpoints(layout: rundir.RunLayout, specs: list[MemberSpec]) -> None:
    """Refuse a run whose member checkpoints hold anything but weights and plain state (nothing unpickled)."""
    for spec in specs:
        checkpoint.check_checkpoints(layout.member_checkpoints(spec.name))


def score(ray, specs: list[MemberSpec], results: dict[str, MemberResult], arrays, temperature: float) -> dict:
    """The score stage: the voting actor votes the pre-trained committee and the scratch committee."""
    from workers.train.actors import VoterActor

    voter = VoterActor.options(**cluster.on_this_node()).remote()
    groups = {"pretrained": [results[s.name] for s in specs if s.role is Role.PRETRAINED],
              "scratch": [results[s.name] for s in specs if s.role is Role.SCRATCH]}
    votes = {}
    try:
        for label, group in groups.items():
            if group:
                votes[label] = ray.get(voter.vote.remote(
                    np.stack([r.val_logits for r in group]), np.stack([r.test_logits for r in group]),
                    arrays.val_labels, arrays.test_labels, temperature))
    finally:
        ray.kill(voter)
    return votes


@dataclass
class OpenRun:
    """A run directory that passed every check and is claimed: what the stages after `open_run` share."""

    layout: rundir.RunLayout
    prepared: Prepared
    ray: object  # the connected `ray` module
    claim: rundir.RunClaim
    address: str | None
    t_start: float
    events: RunEvents | None = None  # TensorBoard event files (made from progress records and the report)
    pretrained: PretrainedSource | None = None  # --pretrained-from: members whose pre-training is copied in

    def __post_init__(self):
        if self.events is None:
            self.events = RunEvents(self.layout.run_dir)


def open_run(cfg: ExperimentConfig, run_dir: str | Path, address: str | None = None, overwrite: bool = False,
             resume: bool = False, specs: list[MemberSpec] | None = None, tokenizer_path: Path | None = None,
             pretrained_from: Path | None = None, echo=print, kind: str = "run") -> OpenRun:
    """Stages 1-2 of a run: every check, prepare and connect (nothing created or deleted), then claim.

    `specs`: the members whose checkpoints a resumed run checks (default: `member_specs(cfg, layout)`);
    `tokenizer_path`: a saved tokenizer to use instead of the config's (default: a resumed run's own);
    `pretrained_from`: a run whose pre-trained members (and tokenizer) this run takes (`orchestrator.run.pretrained_from`);
    `kind`: the command whose directory this is ("run", or "distill" for a distillation's committee).
    The caller releases `OpenRun.claim` at the end (and rolls it back if it fails before members start).
    """
    t_start = time.perf_counter()
    layout = rundir.RunLayout.of(cfg, run_dir)
    specs = member_specs(cfg, layout) if specs is None else specs
    data_root = data_root_or_none(cfg)
    target = rundir.RunDir(layout.run_dir, kind)
    target.check_target(data_root, overwrite=overwrite, resume=resume)
    if resume:
        target.check_resumable()
        target.check_resume(cfg)
        check_member_checkpoints(layout, specs)
    if tokenizer_path is None and resume and layout.tokenizer.is_dir():
        tokenizer_path = layout.tokenizer
    source = None
    if pretrained_from is not None:
        source = pretrained_source(cfg, pretrained_from, layout.run_dir, specs)
        tokenizer_path = source.tokenizer
    prepared = prepare(cfg, tokenizer_path=tokenizer_path, echo=echo)
    ray = cluster.connect(address)
    if address is None:
        cluster.check_fits_here(cfg.resources.num_cpus_per_member, cfg.resources.gpus_per_member)
    claim = target.claim(overwrite=overwrite, resume=resume)
    return OpenRun(layout, prepared, ray, claim, address, t_start, pretrained=source)


def train_members(run: OpenRun, cfg: ExperimentConfig, specs: list[MemberSpec], echo=print,
                  resume: bool = False) -> dict[str, MemberResult]:
    """Stage 3: write what the run is (config, tokenizer), then launch and follow `specs` until all finish.

    The claim is committed once members run; a failure before that rolls it back (the disk is left as found).
    """
    layout, prepared = run.layout, run.prepared
    try:
        echo(("resuming the run in " if resume else "run directory: ") + str(layout.run_dir))
        layout.config.write_text(to_yaml(cfg))
        if prepared.tokenizer_dir.resolve() != layout.tokenizer.resolve():
            shutil.rmtree(layout.tokenizer, ignore_errors=True)
            shutil.copytree(prepared.tokenizer_dir, layout.tokenizer)
        if run.pretrained is not None:
            copy_pretrained(run.pretrained, layout.run_dir, echo=echo)
        c = prepared.corpus
        echo(f"corpus: {c['articles']} articles, {c['corpus_tokens']:,} tokens in {c['blocks']:,} blocks of "
             f"{cfg.pretrain.seq_len}; task {cfg.task.name}: {c['train_examples']} train / {c['val_examples']} val / "
             f"{c['test_examples']} test")
        if not checkpoint.is_uri(layout.members_root):
            cluster.check_shared_dir(Path(layout.members_root))
        members = MemberRun(run.ray, specs, run.ray.put(prepared.arrays), cfg.resources, layout.metrics, echo=echo,
                            in_process=run.address is None, on_started=run.claim.commit,
                            on_record=run.events.record)
        return members.run()
    except BaseException:
        run.claim.rollback()  # a no-op for what was committed: only a run that never started is undone
        raise


def write_run_report(run: OpenRun, cfg: ExperimentConfig, specs: list[MemberSpec], results: dict[str, MemberResult],
                     command: str = "", echo=print) -> dict:
    """Stage 4: score and evidence (the voting actor) and report (report.json, report.md, the curve, the mirror copy)."""
    members_done = time.perf_counter()
    votes = score(run.ray, specs, results, run.prepared.arrays, cfg.committee.weight_temperature)
    tested = evidence(run.ray, specs, results, run.prepared.arrays, cfg.committee.weight_temperature, cfg.seed)
    corpus = dict(run.prepared.corpus)
    timing = {"wall_s": time.perf_counter() - run.t_start, "prepare_s": corpus.pop("prepare_s"),
              "members_wall_s": members_done - run.t_start}
    taken = run.pretrained.summary() if run.pretrained is not None else recorded(run.layout.run_dir)  # or resumed
    out = report.build(cfg, corpus, results, specs, votes, timing, pretrained_from=taken, evidence=tested)
    report.write(run.layout, out, command=command)
    run.events.report(out)
    run.events.close()
    echo(f"report: {run.layout.report_md}")
    dest = run.layout.mirror()
    if dest is not None:
        echo(f"report copied to {dest}")
    return out


def run_command(config, overrides, run_dir, resume, address, overwrite, pretrained_from, command: str, echo) -> dict:
    """`committee run CONFIG [KEY=VALUE ...]` or `committee run --resume DIR [KEY=VALUE ...]`."""
    if pretrained_from is not None and resume is not None:
        raise CommitteeError("--resume continues a run that already holds the members it took with "
                             "--pretrained-from; leave out --pretrained-from")
    cfg, target, resuming = rundir.open_command("run", config, overrides, run_dir, resume, overwrite)
    with rundir.continuable(target):
        return run_experiment(cfg, target.path, address=address, overwrite=overwrite, command=command, echo=echo,
                              resume=resuming, pretrained_from=pretrained_from)


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, address: str | None = None,
                   overwrite: bool = False, command: str = "", echo=print, resume: bool = False,
                   pretrained_from: str | Path | None = None) -> dict:
    """Run the whole experiment into `run_dir`; returns the report dict (also written as report.json).

    resume=True continues the run in `run_dir` (same config but RESUMABLE_KEYS), skipping finished members;
    `pretrained_from`: a run whose finished pre-trained members are fine-tuned here instead of pre-trained again.
    """
    specs = member_specs(cfg, rundir.RunLayout.of(cfg, run_dir))
    run = open_run(cfg, run_dir, address, overwrite=overwrite, resume=resume, specs=specs, echo=echo,
                   pretrained_from=None if pretrained_from is None else Path(pretrained_from))
    try:
        results = train_members(run, cfg, specs, echo=echo, resume=resume)
        return write_run_report(run, cfg, specs, results, command=command, echo=echo)
    finally:
        run.claim.release()


def data_root_or_none(cfg: ExperimentConfig) -> Path | None:
    """The data root the run reads (protected from run directories), or None when it cannot be resolved yet."""
    from workers.data.loading import resolve_data_root

    try:
        return resolve_data_root(cfg.data.root)
    except CommitteeError:
        return None  # prepare() reports the missing data root with its own message
