"""`committee run`: prepare -> launch/monitor -> score -> report, composed from the shared stages.

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
from pathlib import Path

import numpy as np

from orchestrator import cluster, report, rundir
from orchestrator.config import ExperimentConfig, load_raw, to_yaml, validate_dict
from orchestrator.monitor import MemberRun
from orchestrator.plan import member_specs
from orchestrator.prepare import prepare
from workers import checkpoint
from workers.errors import CommitteeError
from workers.member import MemberResult, MemberSpec, Role

log = logging.getLogger(__name__)

# what `--resume` may change: where and how wide members run, and the committee size (members are
# pure functions of their index, so a grown committee reuses the finished ones)
RESUMABLE_KEYS = ("resources.", "committee.members")


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
    saved_path = Path(run_dir) / "config.yaml"
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


def check_member_checkpoints(layout: rundir.RunLayout, specs: list[MemberSpec]) -> None:
    """Refuse a run whose member checkpoints hold anything but weights and plain state (nothing unpickled)."""
    for spec in specs:
        checkpoint.check_checkpoints(layout.member_checkpoints(spec.name))


def score(ray, specs: list[MemberSpec], results: dict[str, MemberResult], arrays, temperature: float) -> dict:
    """The score stage: the voting actor votes the pre-trained committee and the scratch committee."""
    from workers.actors import VoterActor

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


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, address: str | None = None,
                   overwrite: bool = False, command: str = "", echo=print, resume: bool = False) -> dict:
    """Run the whole experiment into `run_dir`; returns the report dict (also written as report.json).

    resume=True continues the run in `run_dir` (same config but RESUMABLE_KEYS), skipping finished members.
    """
    t_start = time.perf_counter()
    layout = rundir.RunLayout.of(cfg, run_dir)
    specs = member_specs(cfg, layout)
    # 1. checks: nothing is created or deleted until they all pass
    data_root = data_root_or_none(cfg)
    rundir.check_target(layout.run_dir, data_root, overwrite=overwrite, resume=resume)
    if resume:
        check_resume(cfg, layout.run_dir)
        check_member_checkpoints(layout, specs)
    reuse = layout.tokenizer if resume and layout.tokenizer.is_dir() else None
    prepared = prepare(cfg, tokenizer_path=reuse, echo=echo)
    ray = cluster.connect(address)
    if address is None:
        cluster.check_fits_here(cfg.resources.num_cpus_per_member, cfg.resources.gpus_per_member)
    # 2. claim the run directory (created or set aside, locked), then write what the run is
    claim = rundir.claim(layout, overwrite=overwrite, resume=resume)
    try:
        echo(("resuming the run in " if resume else "run directory: ") + str(layout.run_dir))
        layout.config.write_text(to_yaml(cfg))
        if prepared.tokenizer_dir.resolve() != layout.tokenizer.resolve():
            shutil.rmtree(layout.tokenizer, ignore_errors=True)
            shutil.copytree(prepared.tokenizer_dir, layout.tokenizer)
        c = prepared.corpus
        echo(f"corpus: {c['articles']} articles, {c['corpus_tokens']:,} tokens in {c['blocks']:,} blocks of "
             f"{cfg.pretrain.seq_len}; task {cfg.task.name}: {c['train_examples']} train / {c['val_examples']} val / "
             f"{c['test_examples']} test")
        if not checkpoint.is_uri(layout.members_root):
            cluster.check_shared_dir(Path(layout.members_root))
        # 3. launch and follow the members; the claim is final once they run
        members = MemberRun(ray, specs, ray.put(prepared.arrays), cfg.resources, layout.metrics, echo=echo,
                            in_process=address is None, on_started=claim.commit)
        results = members.run()
    except BaseException:
        claim.rollback()  # a no-op for what was committed: only a run that never started is undone
        raise
    try:
        members_done = time.perf_counter()
        # 4. score and report
        votes = score(ray, specs, results, prepared.arrays, cfg.committee.weight_temperature)
        corpus = dict(prepared.corpus)
        timing = {"wall_s": time.perf_counter() - t_start, "prepare_s": corpus.pop("prepare_s"),
                  "members_wall_s": members_done - t_start}
        out = report.build(cfg, corpus, results, specs, votes, timing)
        report.write(layout, out, command=command)
        echo(f"report: {layout.report_md}")
        dest = layout.mirror()
        if dest is not None:
            echo(f"report copied to {dest}")
        return out
    finally:
        claim.release()


def data_root_or_none(cfg: ExperimentConfig) -> Path | None:
    """The data root the run reads (protected from run directories), or None when it cannot be resolved yet."""
    from workers.data import resolve_data_root

    try:
        return resolve_data_root(cfg.data.root)
    except CommitteeError:
        return None  # prepare() reports the missing data root with its own message
