"""`committee validate CONFIG`: every check a command makes before it starts, without starting it.

The file's sections say which command it is for (`orchestrator.config.loader.command_of`): a run is checked
for its keys, types, ranges and the data it reads; a sweep for its space, search and every data configuration
its points reach; a distillation also for what it asks to distil.
"""

from __future__ import annotations

from pathlib import Path


def validate_command(config: Path, overrides: list[str] | None) -> str:
    """The one-line verdict on a valid config; raises ConfigError / DataError / CommitteeError otherwise."""
    from orchestrator.config import commands
    from orchestrator.config.loader import command_of, load_raw
    from orchestrator.run.prepare import check_data

    kind = command_of(load_raw(config))
    cfg = commands.load(kind, config, overrides or [])
    if kind == "sweep":
        from orchestrator.sweep.driver import check_sweep
        from orchestrator.sweep.space import with_reference_tokenizer

        cfg = with_reference_tokenizer(cfg)
        data_points = check_sweep(cfg)
        return (f"{config}: valid sweep ({cfg.sweep.search} search over {len(cfg.sweep.space)} key(s), "
                f"{cfg.sweep.seeds} seed(s) per point, {len(data_points)} data configuration(s), task "
                f"{cfg.experiment.task.name})")
    if kind == "distill":
        from orchestrator.distill.driver import check_request

        check_request(cfg)
    root = check_data(cfg)
    where = f"data root {root}" if root is not None else "your own task and corpus"
    return f"{config}: valid ({cfg.committee.members} members, task {cfg.task.name}, {where})"
