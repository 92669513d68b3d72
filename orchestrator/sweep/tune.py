"""The Tune objects of a sweep, built from its config: param space, search algorithm, scheduler, the
trainable with its resources, and a callback that logs trials to metrics.jsonl on the driver."""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator.run import rundir
from orchestrator.config.sweep import SweepConfig
from orchestrator.sweep.space import MEMBER_INDEX
from workers.storage import checkpoint


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


def trainable(cfg: SweepConfig, plan: dict):
    from ray import tune

    from workers.trainables import member_pair

    res = cfg.experiment.resources
    resources = {"cpu": res.num_cpus_per_member, "gpu": res.gpus_per_member}
    return tune.with_resources(tune.with_parameters(member_pair, plan=plan), resources)


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
