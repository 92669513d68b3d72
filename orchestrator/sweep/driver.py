"""`committee sweep`: a Ray Tune sweep over config points; a trial is one member and its scratch twin.

check (space, search, data, run dir; nothing created) -> prepare every data configuration (corpus,
measured overlap, token arrays `ray.put` once) -> claim the run directory -> `tune.Tuner` (or
`Tuner.restore` with --resume: no finished trial runs again) -> one row per trial -> the members of
each point voted by the voting actor -> sweep.csv / sweep.json / sweep.md, the plots, best_config.yaml.
Trials whose scratch twins would be identical share one (`<storage root>/twins/`, see workers.train.trial).

Tune is used as documented: a function trainable (`orchestrator.sweep.tune.run_trial`, which plans the trial's
members and runs them with `workers.train.trial.member_pair`) with resources per trial from `resources.*`, `tune.RunConfig(storage_path=<run dir>/tune or storage.uri)`, a
`tune.FailureConfig` that retries a failed trial (it resumes from its member checkpoints),
`ray.tune.report` for metrics, and Tune's own progress table. Ctrl-C stops the sweep gracefully (Tune
saves its state); `committee sweep --resume DIR` continues it.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from orchestrator.config.commands import to_yaml
from orchestrator.config.sweep import SweepConfig
from orchestrator.run import cluster, plan, rundir
from orchestrator.run.driver import data_root_or_none, score
from orchestrator.run.evidence import evidence
from orchestrator.run.prepare import check_data, task_and_corpus, vocabulary_words
from orchestrator.sweep import report as sweep_report
from orchestrator.sweep.data import SweepData, prepare_sweep_data
from orchestrator.sweep.space import (
    PointConfig,
    check_points,
    check_search,
    data_id,
    data_points,
    point_config,
    with_reference_tokenizer,
)
from orchestrator.sweep.tune import (
    TrialPlan,
    num_samples,
    param_space,
    scheduler,
    search_algorithm,
    split_trial_config,
    sweep_log_callback,
    trainable,
    tune_storage,
)
from workers.data import loading as wdata
from workers.errors import CommitteeError, ConfigError
from workers.storage import checkpoint
from workers.train.member import load_result

SEARCH_PACKAGES = {"optuna": "optuna"}  # search -> the package it needs
STATE_FILE = "sweep_state.json"  # the Tune experiment's name and path, for --resume
SWEEP_FILES = ("config.yaml", "sweep.csv", "sweep.json", "sweep.md", "gap_vs_size.png", "gap_vs_overlap.png",
               "best_config.yaml", "metrics.jsonl")


# ----------------------------------------------------------------------------------------------
# checks (nothing is created or deleted)


def check_search_package(search: str) -> None:
    package = SEARCH_PACKAGES.get(search)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"search: {search} needs the '{package}' package, which is not installed: "
                          f"pip install {package}  (or pip install 'committee[search]')") from None


def check_sweep(cfg: SweepConfig) -> list[PointConfig]:
    """Every check that needs no training: search and space, every point's config, the data each data
    configuration reads (article counts included). Returns one point per data configuration."""
    check_search(cfg)
    check_search_package(cfg.sweep.search)
    points = data_points(cfg)  # data keys must take listed values: before the points are checked
    check_points(cfg)
    for point in points:
        check_data(point.experiment)
        if point.corpus.source != "seeded" and point.corpus.pool_articles is not None:
            wdata.pretraining_documents(task_and_corpus(point.experiment)[1], point.corpus.pool_articles,
                                        point.experiment.pretrain.order_seed)
    return points


def check_sweep_state(run_dir: Path) -> None:
    """A sweep resumes from Tune's saved state: refuse a directory that never got as far as saving one."""
    if not (run_dir / STATE_FILE).is_file():
        raise CommitteeError(f"cannot resume {run_dir}: it holds no sweep (no {STATE_FILE}); start it without "
                             "--resume, or choose the sweep's --run-dir")


def make_tuner(cfg: SweepConfig, layout: rundir.RunLayout, trial_plan: TrialPlan, resume: bool,
               tokenizers: dict[str, str]):
    """A new Tuner (with a unique experiment name, saved with the sweep's tokenizers in sweep_state.json), or
    the saved one restored."""
    from ray import tune

    state_path = layout.run_dir / STATE_FILE
    if resume:
        state = json.loads(state_path.read_text())
        if tune.Tuner.can_restore(state["path"]):
            return tune.Tuner.restore(state["path"], trainable=trainable(cfg, trial_plan), resume_unfinished=True,
                                      resume_errored=True, param_space=param_space(cfg))
    else:
        name = f"{layout.run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        state = {"name": name, "path": f"{tune_storage(layout)}/{name}", "tokenizers": tokenizers}
        state_path.write_text(json.dumps(state) + "\n")
    s = cfg.sweep
    tune_config = tune.TuneConfig(metric=s.metric, mode=s.mode, search_alg=search_algorithm(cfg),
                                  scheduler=scheduler(cfg), num_samples=num_samples(cfg),
                                  # grid/random: the variant generator holds the cap (Tune applies this one
                                  # only to searchers such as Optuna's)
                                  max_concurrent_trials=s.max_concurrent_trials if s.search == "optuna" else None)
    run_config = tune.RunConfig(name=state["name"], storage_path=tune_storage(layout),
                                failure_config=tune.FailureConfig(max_failures=s.max_failures),
                                callbacks=[sweep_log_callback(layout.metrics)])
    return tune.Tuner(trainable(cfg, trial_plan), param_space=param_space(cfg), tune_config=tune_config,
                      run_config=run_config)


# ----------------------------------------------------------------------------------------------
# results


def trial_rows(cfg: SweepConfig, grid, data: dict[str, SweepData]) -> list[dict]:
    """One row per trial: point, seed, corpus size and overlap, both arms' accuracy, the gap, its status."""
    rows = []
    for result in grid:
        values, index = split_trial_config(result.config)
        point = point_config(cfg, values)
        m, corpus = result.metrics or {}, data[data_id(point)].corpus
        status = "error" if result.error is not None else ("done" if m.get("final") else "stopped early")
        row = {"trial_id": m.get("trial_id", Path(result.path).name), "point_id": point.point_id,
               "values": dict(point.values), "member_index": index, "seed": point.experiment.seed + index,
               "status": status, "corpus_source": corpus["source"], "pretrain_articles": corpus["articles"],
               "corpus_tokens": corpus["corpus_tokens"], "type_overlap": corpus["type_overlap"],
               "occurrence_overlap": corpus["occurrence_overlap"],
               "token_type_overlap": corpus.get("token_type_overlap"),
               "token_occurrence_overlap": corpus.get("token_occurrence_overlap"), "iterations": m.get("training_iteration"),
               "scratch_reused": m.get("scratch_reused"), "twin_key": m.get("twin_key"),
               "error": None if result.error is None else str(result.error).splitlines()[0][:300]}
        for key in ("pretrain_tokens", "pretrain_steps", "val_accuracy", "scratch_val_accuracy", "val_gap",
                    "test_accuracy", "scratch_test_accuracy", "gap"):
            row[key] = m.get(key) if status == "done" or key.startswith(("val", "scratch_val")) else None
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial_id"])  # Tune numbers trials in the order it made them


def point_committee(ray, cfg: SweepConfig, layout: rundir.RunLayout, rows: list[dict], data: SweepData) -> dict | None:
    """The point's members across seeds, voted by the voting actor (pre-trained and scratch committees)."""
    done = {}
    for row in rows:
        if row["status"] == "done":
            done.setdefault(row["member_index"], row)  # a point drawn twice: its first trial of each seed
    if not done:
        return None
    point = point_config(cfg, rows[0]["values"])
    specs, results = [], {}
    for index, row in sorted(done.items()):
        members = plan.trial_members(point.experiment, point.point_id, index, 0, trial_root(layout, row["trial_id"]))
        for spec in (members.scratch, members.pretrained):
            result = load_result(spec.out_dir)
            if result is not None:
                specs.append(spec)
                results[spec.name] = result
    temperature = cfg.experiment.committee.weight_temperature
    votes = score(ray, specs, results, data.prepared.arrays, temperature)
    tested = evidence(ray, specs, results, data.prepared.arrays, temperature, cfg.experiment.seed)
    return sweep_report.committee_summary(votes, tested, {index: row["trial_id"] for index, row in done.items()})


def trials_root(layout: rundir.RunLayout):
    """Where trials keep their members: <storage root>/trials/<trial id>/{scratch-NN, member-NN}."""
    return checkpoint.join(layout.storage_root, "trials")


def trial_root(layout: rundir.RunLayout, trial_id: str):
    return checkpoint.join(trials_root(layout), trial_id)


def twins_root(layout: rundir.RunLayout):
    """The sweep's store of finished scratch twins, shared by its trials: <storage root>/twins/<twin key>/."""
    return checkpoint.join(layout.storage_root, "twins")


# the accuracy each metric rests on: a gap or an accuracy means something only once that model learned the task
LEARNED_BY = {"val_gap": "val_accuracy", "val_accuracy": "val_accuracy", "scratch_val_accuracy": "scratch_val_accuracy"}


def chance_level(val_labels) -> dict:
    """What validation accuracy a model reaches without learning the task (always answering its most
    frequent class), and the bar a point must pass to count as having learned it: two binomial standard
    errors above chance on this many validation examples."""
    counts = np.bincount(np.asarray(val_labels, dtype=np.int64))
    n = int(counts.sum())
    share = float(counts.max()) / n
    return {"chance": share, "bar": share + 2.0 * math.sqrt(share * (1.0 - share) / n), "val_examples": n}


def best_point(cfg: SweepConfig, points: list[dict], rows: list[dict], chance: dict[str, dict]) -> dict:
    """The point with the best mean `sweep.metric` (validation only) over its finished seeds, among the
    points whose model learned the task: mean validation accuracy (`LEARNED_BY[metric]`) above
    `chance[point_id]["bar"]`. Without that guard a search that scores the gap prefers a point where both
    models sit at chance (gap 0) to every point where both learned and pre-training lost.

    {"point": the best ({"point_id", "values", "metric_mean", "learned_accuracy", "seeds_done"}) or None,
     "at_chance": [point ids left out]}.
    """
    learned_key = LEARNED_BY[cfg.sweep.metric]
    scored, at_chance = [], []
    for p in points:
        done = [r for r in rows if r["point_id"] == p["point_id"] and r["status"] == "done"]
        if not done:
            continue
        learned = sum(r[learned_key] for r in done) / len(done)
        if learned <= chance[p["point_id"]]["bar"]:
            at_chance.append(p["point_id"])
            continue
        scored.append((sum(r[cfg.sweep.metric] for r in done) / len(done), len(done), learned, p))
    if not scored:
        return {"point": None, "at_chance": at_chance}
    sign = 1 if cfg.sweep.mode == "max" else -1
    mean, n, learned, p = max(scored, key=lambda t: (sign * t[0], t[1]))
    return {"point": {"point_id": p["point_id"], "values": p["values"], "metric_mean": mean,
                      "learned_accuracy": learned, "seeds_done": n}, "at_chance": at_chance}


def write_best_config(cfg: SweepConfig, best: dict, path: Path) -> None:
    """The best point as an experiment config `committee run` takes as it is."""
    experiment = point_config(cfg, best["values"]).experiment
    experiment = experiment.model_copy(update={"name": f"{cfg.experiment.name}-best"})
    corpus_keys = [k for k in best["values"] if k.startswith("sweep.corpus.")]
    note = (f"# {', '.join(corpus_keys)} chose the corpus; committee run pre-trains on the first "
            f"pretrain.articles articles instead\n") if corpus_keys else ""
    path.write_text(f"# committee run {path}\n# the best point of sweep '{cfg.experiment.name}' by mean "
                    f"{cfg.sweep.metric} ({cfg.sweep.mode}) over {best['seeds_done']} seed(s) on validation data: "
                    f"{best['metric_mean']:+.4f}\n{note}" + to_yaml(experiment))


def summarise(ray, cfg: SweepConfig, layout: rundir.RunLayout, rows: list[dict], data: dict[str, SweepData]) -> list[dict]:
    points = []
    for point_id in dict.fromkeys(r["point_id"] for r in rows):  # in the order of their first trial
        point_rows = [r for r in rows if r["point_id"] == point_id]
        point = point_config(cfg, point_rows[0]["values"])
        committee = point_committee(ray, cfg, layout, point_rows, data[data_id(point)])
        points.append(sweep_report.point_summary({"point_id": point_id, "values": point_rows[0]["values"]},
                                                 point_rows, committee))
    return points


def report_header(cfg: SweepConfig, rows: list[dict], data: dict[str, SweepData]) -> dict:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"name": cfg.experiment.name, "task": cfg.experiment.task.name, "search": cfg.sweep.search,
            "scheduler": cfg.sweep.scheduler, "metric": cfg.sweep.metric, "mode": cfg.sweep.mode,
            "seeds": cfg.sweep.seeds, "base_seed": cfg.experiment.seed, "seed": cfg.experiment.seed,
            "budget": cfg.sweep.budget, "corpus_source": cfg.sweep.corpus.source,
            "vocabulary": vocabulary_words(cfg.experiment),
            "space": {k: {d.kind: d.bounds} for k, d in cfg.sweep.space.items()},
            "space_keys": list(cfg.sweep.space),
            "status_counts": ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
            "data_configurations": {k: v.corpus for k, v in data.items()}}


# ----------------------------------------------------------------------------------------------
# the command


def copy_tokenizers(data: dict[str, SweepData], layout: rundir.RunLayout) -> dict[str, str]:
    """Each tokenizer of the sweep into <run dir>/tokenizers/<name>, loadable by transformers; returns
    {tokenizer identity: path relative to the run directory} (what --resume uses)."""
    saved = {}
    for d in data.values():
        tok_dir = Path(d.corpus["tokenizer"])
        dest = layout.run_dir / "tokenizers" / tok_dir.name
        if tok_dir.resolve() != dest.resolve() and not dest.exists():
            shutil.copytree(tok_dir, dest)
        saved[d.corpus["tokenizer_identity"]] = str(dest.relative_to(layout.run_dir))
    return saved


def saved_tokenizers(run_dir: Path) -> dict[str, Path]:
    """A sweep's own tokenizers, by identity (empty for a new sweep)."""
    state = run_dir / STATE_FILE
    if not state.is_file():
        return {}
    return {k: run_dir / rel for k, rel in json.loads(state.read_text()).get("tokenizers", {}).items()}


def sweep_command(config, overrides, run_dir, resume, address, overwrite, command: str, echo) -> dict:
    """`committee sweep CONFIG [KEY=VALUE ...]` or `committee sweep --resume DIR [KEY=VALUE ...]`."""
    cfg, target, resuming = rundir.open_command("sweep", config, overrides, run_dir, resume, overwrite)
    with rundir.continuable(target):
        return run_sweep(cfg, target.path, address=address, overwrite=overwrite, resume=resuming, command=command,
                         echo=echo)


def run_sweep(cfg: SweepConfig, run_dir: str | Path, address: str | None = None, overwrite: bool = False,
              resume: bool = False, command: str = "", echo=print) -> dict:
    """Run (or resume) the sweep into `run_dir`; returns sweep.json's content."""
    cfg = with_reference_tokenizer(cfg)
    layout = rundir.RunLayout.of(cfg.experiment, run_dir)
    target = rundir.RunDir(layout.run_dir, "sweep")
    # 1. checks and preparation: nothing created or deleted until they pass
    points = check_sweep(cfg)
    target.check_target(data_root_or_none(cfg.experiment), overwrite=overwrite, resume=resume)
    if resume:
        target.check_resumable()
        check_sweep_state(layout.run_dir)
        target.check_resume(cfg)
    data = prepare_sweep_data(points, echo, saved_tokenizers(layout.run_dir) if resume else None)
    ray = cluster.connect(address)
    res = cfg.experiment.resources
    if address is None:
        cluster.check_fits_here(res.num_cpus_per_member, res.gpus_per_member)
    # 2. claim the run directory, then run the trials
    claim = target.claim(overwrite=overwrite, resume=resume)
    try:
        echo(("resuming the sweep in " if resume else "sweep directory: ") + str(layout.run_dir))
        layout.config.write_text(to_yaml(cfg))
        tokenizers = copy_tokenizers(data, layout)
        if not checkpoint.is_uri(layout.storage_root):
            cluster.check_shared_dir(Path(trials_root(layout)))  # several nodes: every one must see the trials
        trial_plan = TrialPlan(sweep=cfg, threads=max(1, int(res.num_cpus_per_member)),
                               trials_root=str(trials_root(layout)), twins_root=str(twins_root(layout)),
                               data={key: {"arrays": ray.put(d.prepared.arrays), "blocks": d.corpus["blocks"]}
                                     for key, d in data.items()})
        tuner = make_tuner(cfg, layout, trial_plan, resume, tokenizers)
        claim.commit()
    except BaseException:
        claim.rollback()
        raise
    try:
        grid = tuner.fit()
        unfinished = unfinished_trials(grid)
        if unfinished:
            echo(f"the sweep stopped before all its trials finished; continue it with: {target.continue_command()}")
            raise KeyboardInterrupt
        out = finish(ray, cfg, layout, grid, data, command, echo)
    finally:
        claim.release()
    if grid.num_errors:
        raise CommitteeError(f"{grid.num_errors} trial(s) failed after {cfg.sweep.max_failures} retries (see "
                             f"{layout.run_dir / 'sweep.csv'}); the report covers the others; rerun the failed "
                             f"ones with --resume")
    return out


def unfinished_trials(grid) -> int:
    """Trials that neither ended nor failed: after Ctrl-C, the ones that were running or waiting (Tune's saved
    state keeps them for --resume). A trial ended when its last result is the trainable's `final` report, or
    when Tune marked it `done` (a scheduler's stop). Tune marks a trial whose function returned `done` too, but
    in place, after the result was saved: a trial that ended just before Ctrl-C can come back from the saved
    state without it, and counting it would end every --resume with "stopped before all its trials finished"."""
    ended = [result.error is not None or any((result.metrics or {}).get(k) for k in ("done", "final")) for result in grid]
    return ended.count(False)


def finish(ray, cfg: SweepConfig, layout: rundir.RunLayout, grid, data: dict[str, SweepData], command: str,
           echo) -> dict:
    """Rows, committees and files once every trial has ended."""
    rows = trial_rows(cfg, grid, data)
    points = summarise(ray, cfg, layout, rows, data)
    sweep_report.add_trial_evidence(rows, points)
    out = sweep_report.build(report_header(cfg, rows, data), rows, points)
    if cfg.sweep.search != "grid":
        chance = {p["point_id"]: chance_level(data[data_id(point_config(cfg, p["values"]))].prepared.arrays.val_labels)
                  for p in points}
        selection = best_point(cfg, points, rows, chance)
        out["best"], out["best_at_chance"] = selection["point"], selection["at_chance"]
        out["chance"] = chance  # per point: a point's task (task.*) sets its validation labels
        if out["best"] is not None:
            write_best_config(cfg, out["best"], layout.run_dir / "best_config.yaml")
        else:
            echo(f"no point's model learned the task above chance on validation ({len(selection['at_chance'])} at "
                 f"chance): no best_config.yaml")
    sweep_report.write(layout.run_dir, out, command or f"committee sweep {layout.config} --run-dir {layout.run_dir}")
    echo(f"sweep report: {layout.run_dir / 'sweep.md'}")
    dest = layout.mirror(SWEEP_FILES)
    if dest is not None:
        echo(f"report copied to {dest}")
    return out

