"""`committee serve`: check the run, choose the cascade's threshold, start Ray and Serve, deploy, wait.

The driver reads the run directory (the model itself is loaded by every replica), writes a Serve
config file for the same application beside the run (`serve run` / `serve deploy` users start it from
there), starts Serve's HTTP proxy on the host and port asked for, deploys the application and waits
for Ctrl-C; Serve and Ray stop on the way out, whatever happened.
"""

from __future__ import annotations

import logging
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.serve.settings import (
    APP_NAME,
    CONFIG_FILE,
    AppArgs,
    DeploymentSettings,
    serve_config,
    write_serve_config,
)
from workers.errors import ConfigError, ResourceError

SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}  # no line per request on the console
READY_TIMEOUT_S = 300.0


def calibrate_cascade(run_dir: Path, max_loss_points: float, committee=None, splits=None):
    """The cascade's threshold chosen on the run's validation split (its texts read from the run's data, the
    members' logits from the packed forward the server runs); a `workers.committee.cascade.Calibration`."""
    from orchestrator.run.finished import load_committee
    from orchestrator.run.prepare import load_cfg_task
    from orchestrator.run.rundir import read_finished
    from workers.committee.cascade import choose_threshold, member_order
    from workers.text.corpus import encode

    committee = committee or load_committee(run_dir)
    splits = splits or load_cfg_task(read_finished(run_dir).config)
    logits = committee.logits(encode(committee.tokenizer, splits.val_texts, max_length=committee.max_length))
    return choose_threshold(logits, splits.val_labels, member_order(committee.val_accuracy), max_loss_points)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serve_session(host: str, port: int, address: str | None = None, num_cpus: int | None = None):
    """Ray (in-process, or the cluster at `address`) with Serve's HTTP proxy on host:port.

    In-process, Serve and Ray are shut down when the block ends, however it ends; on a cluster the
    applications deployed in the block are deleted and Serve keeps running for others.
    """
    import ray
    from ray import serve

    from orchestrator.run.cluster import connect

    if address is None and not port_is_free(host, port):
        raise ConfigError(f"committee serve --port {port}: the port is in use on {host}; choose another with --port")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    started_ray = not ray.is_initialized()
    connect(address, num_cpus=num_cpus)
    deployed: list[str] = []
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config=SERVE_LOGGING)
        yield deployed
    finally:
        try:
            if address is None:
                serve.shutdown()
            else:
                for name in deployed:
                    serve.delete(name)
        finally:
            if started_ray:
                ray.shutdown()


@dataclass(frozen=True)
class AppSpec:
    """One application to deploy: its name, route prefix, arguments and Serve options."""

    name: str
    route_prefix: str
    args: AppArgs
    settings: DeploymentSettings


def app_url(host: str, port: int, route_prefix: str) -> str:
    """Where an application answers (no trailing slash); a wildcard host is reached on the loopback."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}{route_prefix.rstrip('/')}"


def deploy(deployed: list[str], apps: list[AppSpec], host: str, port: int) -> dict[str, str]:
    """Run the applications in the session (`serve_session`) at once; wait until each answers; {name: url}."""
    from ray import serve

    from orchestrator.serve.app import CommitteeServer

    targets = [serve.RunTarget(CommitteeServer.options(**a.settings.serve_options()).bind(a.args.model_dump()),
                               name=a.name, route_prefix=a.route_prefix, logging_config=SERVE_LOGGING) for a in apps]
    deployed += [a.name for a in apps]
    serve.run_many(targets, wait_for_applications_running=False)  # waited for below, with a deadline
    urls = {a.name: app_url(host, port, a.route_prefix) for a in apps}
    for url in urls.values():
        wait_until_healthy(url)
    return urls


def cpus_for(apps: list[AppSpec]) -> int:
    """Ray's CPUs in-process: the machine's, or as many as the replicas ask for, so that every replica starts
    (they share the cores then)."""
    import math
    import os

    wanted = 0.0
    for a in apps:
        s = a.settings
        wanted += (s.autoscale[1] if s.autoscale else s.replicas) * s.cpus_per_replica
    return max(os.cpu_count() or 1, math.ceil(wanted))


def wait_until_healthy(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll GET url/healthz until it answers 200 (the proxy may route before the first replica is ready)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise ResourceError(f"{url}/healthz did not answer within {timeout_s:.0f} s: a replica could not start "
                                f"(Ray has {_cluster_cpus()}; each replica asks for --cpus-per-replica), or see "
                                f"the Serve logs in Ray's session directory")
        time.sleep(0.25)


def _cluster_cpus() -> str:
    import ray

    total = ray.cluster_resources().get("CPU", 0)
    free = ray.available_resources().get("CPU", 0)
    return f"{total:g} CPUs, {free:g} free"


def prepared_args(run_dir: Path, args: dict, cascade: bool, max_loss_points: float, echo) -> AppArgs:
    """The application's arguments, with the cascade's threshold chosen on the validation split when asked
    for and not given."""
    from orchestrator.serve.settings import app_args

    placeholder = args.get("cascade_threshold") or (1.0 if cascade else None)
    app_args(run_dir=str(run_dir), **{**args, "cascade_threshold": placeholder})  # checked before calibrating
    if cascade and args.get("cascade_threshold") is None:
        echo(f"choosing the cascade's threshold on the validation split of {run_dir} ...")
        calibration = calibrate_cascade(run_dir, max_loss_points)
        echo(f"cascade threshold {calibration.threshold:.4f}: validation accuracy "
             f"{100 * calibration.val_accuracy:.1f}% "
             f"(full committee {100 * calibration.full_val_accuracy:.1f}%), {100 * calibration.early_exit_share:.0f}% "
             f"of validation texts stop early, {calibration.mean_members:.2f} members per text")
        args = {**args, "cascade_threshold": calibration.threshold, "calibration": calibration.as_dict()}
    elif cascade:
        args = {**args, "calibration": {"threshold": args["cascade_threshold"], "chosen_by": "--cascade-threshold"}}
    elif args.get("cascade_threshold") is not None:
        raise ConfigError("committee serve --cascade-threshold sets the cascade's threshold; add --cascade")
    return app_args(run_dir=str(run_dir.resolve()), **args)


def serve_forever(run_dir: Path, args: AppArgs, settings: DeploymentSettings, host: str, port: int,
                  address: str | None, command: str, echo) -> None:
    """`committee serve`: write the Serve config beside the run, deploy, print where, wait for Ctrl-C."""
    config_path = write_serve_config(run_dir / CONFIG_FILE, serve_config(args, settings, host, port), command)
    echo(f"wrote {config_path} (serve run / serve deploy start the same application)")
    apps = [AppSpec(APP_NAME, "/", args, settings)]
    with serve_session(host, port, address, num_cpus=cpus_for(apps)) as deployed:
        url = deploy(deployed, apps, host, port)[APP_NAME]
        echo(f"serving the {args.model} of {run_dir} at {url}: POST /predict, GET /healthz, GET /metadata "
             f"(Ctrl-C stops)")
        echo(f"  curl -s {url}/predict -H 'Content-Type: application/json' -d '{{\"texts\": [\"a text\"]}}'")
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            echo("stopping Serve ...")
    echo("stopped")
