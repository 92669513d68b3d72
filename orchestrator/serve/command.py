"""`committee serve RUN_DIR`: the command, from the checks to serving (orchestrator/serve/driver.py) or to the load
benchmark (bench/serve/run.py), which both build on the driver."""

from __future__ import annotations

from pathlib import Path


def serve_command(run_dir: Path, values: dict, deployment: dict, cascade: bool, max_loss_points: float, host: str,
                  port: int, address: str | None, bench: bool, json_path: Path | None, quick: bool, command: str,
                  echo) -> None:
    """`committee serve RUN_DIR`: check that the run can be served (before Serve starts: a replica that cannot load
    its model would be restarted again and again), then serve it until Ctrl-C, or with `bench` run the load
    benchmark. `values`: the application's arguments; `deployment`: Serve's options (replicas, autoscale MIN:MAX,
    queue bounds, CPUs per replica)."""
    from orchestrator.serve.runs import check_servable
    from orchestrator.serve.settings import deployment_settings, parse_autoscale

    check_servable(run_dir, values["model"])
    settings = deployment_settings(**{**deployment, "autoscale": parse_autoscale(deployment["autoscale"])})
    if bench:
        from bench.serve.run import bench_served

        bench_served(run_dir, values, settings, max_loss_points=max_loss_points, json_path=json_path, quick=quick,
                     echo=echo)
        return
    from orchestrator.serve.driver import prepared_args, serve_forever

    args = prepared_args(run_dir, values, cascade, max_loss_points, echo=echo)
    serve_forever(run_dir, args, settings, host, port, address, command, echo=echo)
