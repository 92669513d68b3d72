"""The Tune objects of a sweep, built from its config: param space, search algorithm, scheduler, the
trainable with its resources, and a callback that logs trials to metrics.jsonl on the driver.

The trainable (`run_trial`) is this project's one Tune adapter: Tune samples a point, `TrialPlan.members`
plans the trial's two members from it (`orchestrator.run.plan`), and `workers.train.trial.member_pair` runs
them, reporting through `tune.report`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.sweep import SweepConfig
from orchestrator.run import plan, rundir
from orchestrator.sweep.space import MEMBER_INDEX, data_id, point_config, pretrain_steps
from workers.storage import checkpoint
from workers.train.trial import TrialMembers


def tune_domain(domain):
    from ray import tune

    values = domain.bounds
    makers = {"grid": lambda v: tune.grid_search(list(v)), "choice": lambda v: tune.choice(list(v)),
              "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
              "randint": lambda v: tune.randint(*v)}
    return makers[domain.kind](values)


def param_space(cfg: SweepConfig) -> dict:
    """Tune's param_space: the space's keys, and (grid, random) the member index as a grid dimension."""
    from ray import tune

    space = {key: tune_domain(domain) for key, domain in cfg.sweep.space.items()}
    if cfg.sweep.search != "optuna":  # optuna: the Repeater sets the index
        space[MEMBER_INDEX] = tune.grid_search(list(range(cfg.sweep.seeds)))
    return space


def search_algorithm(cfg: SweepConfig):
    """grid/random: Tune's variant generator, random values drawn once per point and shared by its seeds;
    optuna: OptunaSearch, each suggestion repeated once per seed (the searcher sees the seeds' mean)."""
    from ray.tune.search import BasicVariantGenerator, Repeater

    if cfg.sweep.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return Repeater(OptunaSearch(seed=cfg.experiment.seed), repeat=cfg.sweep.seeds, set_index=True)
    return BasicVariantGenerator(constant_grid_search=True, random_state=cfg.experiment.seed,
                                 max_concurrent=cfg.sweep.max_concurrent_trials or 0)


def max_finetune_epochs(cfg: SweepConfig) -> int:
    domain = cfg.sweep.space.get("finetune.epochs")
    return max([cfg.experiment.finetune.epochs] + (list(domain.bounds) if domain else []))


def scheduler(cfg: SweepConfig):
    """ASHA over fine-tuning epochs (a trial reports once per epoch, then once more with its final metrics)."""
    if cfg.sweep.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_finetune_epochs(cfg) + 1,
                         grace_period=cfg.sweep.grace_epochs, reduction_factor=cfg.sweep.reduction_factor,
                         stop_last_trials=False)


def num_samples(cfg: SweepConfig) -> int:
    s = cfg.sweep
    return {"grid": 1, "random": s.num_samples, "optuna": s.num_samples * s.seeds}[s.search]


def split_trial_config(config: dict) -> tuple[dict, int]:
    """({dotted key: value} of the point, member index) from a trial's config (grid/random or optuna)."""
    from ray.tune.search.repeater import TRIAL_INDEX

    index = config.get(MEMBER_INDEX, config.get(TRIAL_INDEX, 0))
    values = {k: v for k, v in config.items() if k not in (MEMBER_INDEX, TRIAL_INDEX)}
    return values, int(index)


@dataclass(frozen=True)
class TrialPlan:
    """What every trial needs to plan its members, made once by the driver (`tune.with_parameters` ships it)."""

    sweep: SweepConfig
    data: dict  # data id -> {"arrays": the ObjectRef of its SharedArrays, "blocks": pre-training blocks}
    trials_root: str  # <storage root>/trials (a path or URI): a trial's members go to <trials_root>/<trial id>
    twins_root: str  # <storage root>/twins: the store of finished scratch twins (workers.train.trial)
    threads: int  # torch threads of a trial

    def members(self, config: dict, trial_id: str) -> tuple[TrialMembers, object]:
        """(the trial's planned members, the ObjectRef of its data configuration's arrays)."""
        values, index = split_trial_config(config)
        point = point_config(self.sweep, values)
        data = self.data[data_id(point)]
        steps = pretrain_steps(self.sweep, point, data["blocks"])
        out_root = checkpoint.join(self.trials_root, trial_id)
        return plan.trial_members(point.experiment, point.point_id, index, steps, out_root), data["arrays"]


def run_trial(config: dict, trial_plan: TrialPlan) -> None:
    """Tune's function trainable: plan this trial's members from the point Tune sampled, then run them."""
    import ray
    import torch
    from ray import tune
    from transformers.utils import logging as hf_logging

    from workers.train.trial import member_pair

    torch.set_num_threads(max(1, trial_plan.threads))
    hf_logging.disable_progress_bar()
    members, arrays_ref = trial_plan.members(config, tune.get_context().get_trial_id())
    member_pair(members, ray.get(arrays_ref), trial_plan.twins_root, tune.report)


def trainable(cfg: SweepConfig, trial_plan: TrialPlan):
    from ray import tune

    res = cfg.experiment.resources
    resources = {"cpu": res.num_cpus_per_member, "gpu": res.gpus_per_member}
    return tune.with_resources(tune.with_parameters(run_trial, trial_plan=trial_plan), resources)


def sweep_log_callback(metrics_path: Path):
    """A Tune callback that appends trial starts, results and ends to metrics.jsonl (driver side)."""
    from ray import tune

    class SweepLog(tune.Callback):
        KEYS = ("training_iteration", "epoch", "val_accuracy", "scratch_val_accuracy", "val_gap", "test_accuracy",
                "scratch_test_accuracy", "gap", "final")

        def __init__(self, path: str):
            self.path = path

        def _write(self, record: dict) -> None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

        def on_trial_start(self, iteration, trials, trial, **info):
            self._write({"event": "trial_start", "trial_id": trial.trial_id, "config": trial.config})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._write({"event": "result", "trial_id": trial.trial_id,
                         **{k: result[k] for k in self.KEYS if k in result}})

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._write({"event": "trial_end", "trial_id": trial.trial_id})

        def on_trial_error(self, iteration, trials, trial, **info):
            self._write({"event": "trial_error", "trial_id": trial.trial_id})

    return SweepLog(str(metrics_path))


def tune_storage(layout: rundir.RunLayout) -> str:
    """Tune's storage_path: <run dir>/tune, or <storage.uri>/<run dir name>/tune (every node sees it)."""
    root = layout.storage_root
    return str(checkpoint.join(root, "tune")) if checkpoint.is_uri(root) else str(Path(root).resolve() / "tune")
