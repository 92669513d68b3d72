"""What `committee serve` runs: the application's arguments, the deployment's Serve options, and the
Serve config file written beside the run.

`AppArgs` are the arguments of the application builder (`orchestrator.serve.app:build_app`, what a
Serve config file's `args:` holds); `DeploymentSettings` become the deployment's Serve options
(replicas or autoscaling, the request limits of the queue, CPUs per replica), which a Serve config
file's `deployments:` entry holds. Both refuse a bad value with a ConfigError naming the command's
option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workers.errors import ConfigError

APP_NAME = "committee"
DEPLOYMENT_NAME = "CommitteeServer"
BUILDER = "orchestrator.serve.app:build_app"
CONFIG_FILE = "serve.yaml"  # written into the run directory
HEALTH_CHECK_PERIOD_S = 2.0  # how soon Serve notices a dead replica and starts another

# field -> the `committee serve` option that sets it (error messages name the option)
OPTION_OF = {
    "model": "--model", "rule": "--rule", "cascade_threshold": "--cascade-threshold",
    "max_texts_per_request": "--max-texts", "max_text_chars": "--max-text-chars", "max_batch_texts": "--max-batch",
    "batch_wait_ms": "--batch-wait-ms", "threads_per_replica": "--threads", "replicas": "--replicas",
    "autoscale": "--autoscale", "max_ongoing_requests": "--max-ongoing", "max_queued_requests": "--max-queued",
    "retry_after_s": "--retry-after", "cpus_per_replica": "--cpus-per-replica",
}


class AppArgs(BaseModel):
    """The application builder's arguments: which model of which run, how it votes and batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: str = Field(description="a finished `committee run` directory, seen by every replica")
    model: Literal["committee", "deep"] = Field("committee", description="the run's committee, or its deep model")
    rule: Literal["soft", "logit", "hard", "weighted"] = "soft"
    cascade_threshold: float | None = Field(None, gt=0.0, le=1.01, description="the confidence cascade's "
                                               "threshold on the running soft vote; none: every member answers")
    calibration: dict | None = Field(None, description="how the threshold was chosen (shown by /metadata)")
    max_texts_per_request: int = Field(64, ge=1, le=4096)
    max_text_chars: int = Field(20_000, ge=1)
    max_batch_texts: int = Field(64, ge=1, le=4096, description="texts per forward, over concurrent requests")
    batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0, description="how long a batch waits for more requests; "
                                 "0: it takes what arrived while the last batch ran")
    threads_per_replica: int | None = Field(None, ge=1, le=256, description="torch threads; none: the "
                                               "replica's CPUs")

    @model_validator(mode="after")
    def _fits(self):
        if self.max_texts_per_request > self.max_batch_texts:
            raise ValueError(f"max_texts_per_request (--max-texts) {self.max_texts_per_request} exceeds "
                             f"max_batch_texts (--max-batch) {self.max_batch_texts}: one request must fit one batch")
        if self.cascade_threshold is not None and self.rule != "soft":
            raise ValueError(f"the cascade stops on the running soft vote; it cannot serve the {self.rule} rule")
        if self.cascade_threshold is not None and self.model != "committee":
            raise ValueError("the cascade needs a committee; the deep model is one model")
        return self


class DeploymentSettings(BaseModel):
    """Serve's options for the deployment: how many replicas and how much queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(1, ge=1, le=1024)
    autoscale: tuple[int, int] | None = Field(None, description="(min, max) replicas; replaces replicas")
    max_ongoing_requests: int = Field(64, ge=1, description="requests a replica holds at once (its batches "
                                      "form from these)")
    max_queued_requests: int = Field(256, ge=1, description="requests waiting for a replica; more get 503")
    retry_after_s: float = Field(1.0, ge=0.0, description="the Retry-After header of a 503")
    cpus_per_replica: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _range(self):
        if self.autoscale is not None and not 0 <= self.autoscale[0] <= self.autoscale[1]:
            raise ValueError(f"autoscale {self.autoscale[0]}:{self.autoscale[1]} needs 0 <= MIN <= MAX")
        return self

    def serve_options(self) -> dict:
        """Keyword arguments of `Deployment.options` (and the keys of a Serve config's deployment entry)."""
        options = {"max_ongoing_requests": self.max_ongoing_requests,
                   "max_queued_requests": self.max_queued_requests,
                   "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
                   "ray_actor_options": {"num_cpus": self.cpus_per_replica},
                   "health_check_period_s": HEALTH_CHECK_PERIOD_S}
        if self.autoscale is None:
            options["num_replicas"] = self.replicas
        else:
            low, high = self.autoscale
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                             "target_ongoing_requests": max(1, self.max_ongoing_requests // 2)}
        return options


def _checked(model: type[BaseModel], values: dict) -> BaseModel:
    """`model(**values)`, a validation error turned into a ConfigError naming the command's option."""
    try:
        return model(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = OPTION_OF.get(field, field)
        value = f" = {values[field]!r}" if field in values else ""
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"committee serve {where}{value}: {message}" if where else f"committee serve: {message}") \
            from None


def app_args(**values) -> AppArgs:
    return _checked(AppArgs, values)


def deployment_settings(**values) -> DeploymentSettings:
    return _checked(DeploymentSettings, values)


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """`--autoscale MIN:MAX` as (min, max)."""
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"committee serve --autoscale {text!r}: give MIN:MAX replicas, e.g. 1:4")
    return int(parts[0]), int(parts[1])


def serve_config(args: AppArgs, settings: DeploymentSettings, host: str, port: int, route_prefix: str = "/",
                 name: str = APP_NAME) -> dict:
    """A Serve config file (`serve run FILE`, `serve deploy FILE`) for the same application."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
        "applications": [{
            "name": name,
            "route_prefix": route_prefix,
            "import_path": BUILDER,
            "args": args.model_dump(exclude_none=True),
            "deployments": [{"name": DEPLOYMENT_NAME, **settings.serve_options()}],
        }],
    }


def write_serve_config(path: Path, config: dict, command: str) -> Path:
    """The Serve config as YAML with a header that says how to use it (written to a temporary name, renamed)."""
    import yaml

    header = (f"# serve run {path}      (or, on a running cluster: serve deploy {path})\n"
              f"# The application `{command}` started: same run, model, vote, batching and queue.\n"
              "# Every replica reads run_dir: on a cluster it must be on storage every node sees.\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
    return path
