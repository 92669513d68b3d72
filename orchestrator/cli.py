"""The `committee` command line: each command parses its arguments, calls one function, and maps errors to
exit codes (2: a user error, with its message and no traceback; 130 / 143: stopped by Ctrl-C / SIGTERM)."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from workers.errors import CommitteeError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pre-train committees of tiny BERTs on Ray, vote, sweep and distill.")
data_app = typer.Typer(no_args_is_help=True, help="The datasets: pull them from the Hugging Face hub.")
app.add_typer(data_app, name="data")

EXIT_USER_ERROR = 2


class SigtermAsInterrupt:
    """The SIGTERM handler (`ray job stop`, Kubernetes, a batch scheduler): handled like Ctrl-C, raised as a
    KeyboardInterrupt (`Stopped(terminated=True)`), which Ray's blocking calls pass through cleanly. It also
    remembers that it came: Ray's signal checks inside a blocking call can re-raise it as a plain
    KeyboardInterrupt, and the exit code must still say SIGTERM."""

    def __init__(self):
        self.received = False

    def __call__(self, signum, frame):
        from orchestrator.run.rundir import Stopped

        self.received = True
        raise Stopped(terminated=True)

    @staticmethod
    def seen() -> bool:
        """Whether the installed SIGTERM handler is this one and was called."""
        return getattr(signal.getsignal(signal.SIGTERM), "received", False)


def user_errors(fn):
    """Turn a CommitteeError into its message on stderr and exit code 2, without a traceback;
    Ctrl-C and SIGTERM stop the work (members included) and exit 130 / 143, naming the command that
    continues the run directory when there is one (`orchestrator.run.rundir.continuable`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CommitteeError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as exc:
            from orchestrator.run.rundir import was_terminated

            terminated = was_terminated(exc) or SigtermAsInterrupt.seen()
            hint = getattr(exc, "continue_with", None)
            typer.secho(("terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)")
                        + (f"; members were stopped. Continue with: {hint}" if hint else ""), err=True)
            raise typer.Exit(143 if terminated else 130) from None
    return wrapper


def invocation() -> str:
    """The command line as typed (`committee run configs/x.yaml ...`), quoted: what reports show."""
    return "committee " + " ".join(shlex.quote(a) for a in sys.argv[1:])


OVERRIDES = typer.Argument(None, help="dotted overrides, e.g. committee.members=8 pretrain.max_steps=200")
RUN_DIR = typer.Option(None, "--run-dir", help="default: runs/<name>")
ADDRESS = typer.Option(None, "--address", help="an existing Ray cluster: auto, ray://HOST:10001 or HOST:6379; "
                                               "absent: Ray starts in-process")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing run directory")


@app.command()
@user_errors
def run(
    config: Optional[str] = typer.Argument(None, help="experiment YAML (see configs/); with --resume it may be "
                                                      "left out (the run's own config.yaml is used)"),
    overrides: Optional[List[str]] = OVERRIDES,
    run_dir: Optional[Path] = RUN_DIR,
    address: Optional[str] = ADDRESS,
    overwrite: bool = OVERWRITE,
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the interrupted run in RUN_DIR: "
                                          "finished members are kept, the others resume from their checkpoints; "
                                          "only resources.* and committee.members may be overridden"),
    pretrained_from: Optional[Path] = typer.Option(None, "--pretrained-from", help="fine-tune the pre-trained "
                                                   "members (and deep model) of this earlier run instead of "
                                                   "pre-training them again: its tokenizer too; the configs must "
                                                   "agree on seed, model, tokenizer and pretrain; the task may differ"),
):
    """Pre-train the committee, fine-tune every member, vote, and write the report."""
    from orchestrator.run.driver import run_command

    run_command(config, overrides, run_dir, resume, address, overwrite, pretrained_from, invocation(), typer.echo)


@app.command()
@user_errors
def distill(
    config: Optional[str] = typer.Argument(None, help="distill YAML: an experiment plus a distill: section (see "
                                           "configs/distill_*.yaml); with --resume it may be left out (the run's "
                                           "own config.yaml is used)"),
    overrides: Optional[List[str]] = OVERRIDES,
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="a finished `committee run` directory: use its "
                                            "members, tokenizer and task split (no member is trained)"),
    run_dir: Optional[Path] = RUN_DIR,
    address: Optional[str] = ADDRESS,
    overwrite: bool = OVERWRITE,
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the stopped distillation in RUN_DIR: "
                                          "finished members, distilled sets, recover tasks and students are kept, "
                                          "the rest runs; only resources.* may be overridden"),
):
    """Distil the training set with the committee (CV-DD) and train fresh students on the distilled sets."""
    from orchestrator.distill.driver import distill_command

    distill_command(config, overrides, from_run, run_dir, resume, address, overwrite, invocation(), typer.echo)


@app.command()
@user_errors
def sweep(
    config: Optional[str] = typer.Argument(None, help="sweep YAML: an experiment plus a sweep: section (see "
                                           "configs/sweep_*.yaml); with --resume it may be left out (the sweep's "
                                           "own config.yaml is used)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. sweep.seeds=2 "
                                                    "finetune.epochs=4 sweep.space.pretrain.articles.grid=[50,200]"),
    run_dir: Optional[Path] = RUN_DIR,
    address: Optional[str] = ADDRESS,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing sweep directory"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the interrupted sweep in RUN_DIR: "
                                          "finished trials are kept, the others run; only resources.*, "
                                          "sweep.max_concurrent_trials and sweep.max_failures may be overridden"),
):
    """Sweep config points on Ray Tune: each trial pre-trains one member and fine-tunes it beside its scratch
    twin; per point: mean gap with a 95% interval over seeds, the committees' vote, overlap and size."""
    from orchestrator.sweep.driver import sweep_command

    sweep_command(config, overrides, run_dir, resume, address, overwrite, invocation(), typer.echo)


@app.command()
@user_errors
def claims(
    suite: Optional[str] = typer.Argument(None, help="a claims suite: a file, or a built-in name (smoke, laptop, "
                                          "paper: configs/claims_NAME.yaml)"),
    overrides: Optional[List[str]] = OVERRIDES,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: runs/<suite name>"),
    address: Optional[str] = ADDRESS,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing suite directory"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the suite in this directory: finished "
                                          "steps are kept, the others run again"),
    plan: bool = typer.Option(False, "--plan", help="check the suite and print its steps and commands; run nothing"),
):
    """Measure the papers' claims over seed blocks (runs, sweeps, distillations, latency) and write claims.md and
    claims.json: each claim's effect with its 95% interval over blocks, the blocks' paired tests and a verdict."""
    from orchestrator.claims.driver import claims_command

    claims_command(suite, overrides, run_dir, resume, overwrite, plan, address, invocation(), typer.echo)


@app.command()
@user_errors
def validate(config: Path = typer.Argument(..., help="a run, sweep or distill YAML"),
             overrides: Optional[List[str]] = OVERRIDES):
    """Check a config (keys, types, ranges) and its data (a sweep file: every point; a distill file: its request)."""
    from orchestrator.validate import validate_command

    typer.echo(validate_command(config, overrides))


@app.command()
@user_errors
def predict(
    run_dir: Path = typer.Argument(..., help="a finished run directory (it holds report.json)"),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="a .txt file (one example per line) or a data "
                                      "file the run's task section reads (csv, tsv, json, jsonl, parquet)"),
    rule: str = typer.Option("soft", "--rule", help="soft, logit, hard or weighted (the run's own weights)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the JSON lines here instead of stdout"),
):
    """Label texts with a finished run's committee: one JSON line per example with its label, label name,
    soft-label vector and member agreement; with labels in INPUT, the committee's accuracy too."""
    from orchestrator.run.finished import predict_command

    predict_command(run_dir, input_path, rule, out, typer.echo)


@app.command()
@user_errors
def serve(
    run_dir: Path = typer.Argument(..., help="a finished run directory (it holds report.json)"),
    port: int = typer.Option(8000, "--port", help="HTTP port of Serve's proxy"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
    address: Optional[str] = typer.Option(None, "--address", help="a running Ray cluster (auto, ray://HOST:10001 or "
                                          "HOST:6379); absent: Ray and Serve start in-process"),
    model: str = typer.Option("committee", "--model", help="committee, or deep: the run's deep model (deep.enabled)"),
    rule: str = typer.Option("soft", "--rule", help="soft, logit, hard or weighted (the run's own weights)"),
    cascade: bool = typer.Option(False, "--cascade", help="ask the members one at a time, best first, and stop "
                                 "once the running soft vote is confident (threshold chosen on the validation split)"),
    cascade_threshold: Optional[float] = typer.Option(None, "--cascade-threshold", help="with --cascade: this "
                                                      "threshold instead of choosing one"),
    max_loss_points: float = typer.Option(0.3, "--max-loss-points", help="with --cascade: validation accuracy the "
                                          "cascade may lose against the full committee, in points"),
    replicas: int = typer.Option(1, "--replicas", help="replicas of the deployment (each holds every member)"),
    autoscale: Optional[str] = typer.Option(None, "--autoscale", help="MIN:MAX replicas, scaled by Serve on load "
                                            "(replaces --replicas)"),
    max_batch: int = typer.Option(64, "--max-batch", help="texts per forward, over concurrent requests"),
    batch_wait_ms: float = typer.Option(0.0, "--batch-wait-ms", help="how long a batch waits for more requests "
                                        "(0: it takes what arrived while the previous batch ran)"),
    max_texts: int = typer.Option(64, "--max-texts", help="texts one request may hold"),
    max_text_chars: int = typer.Option(20_000, "--max-text-chars", help="characters one text may hold"),
    max_ongoing: int = typer.Option(64, "--max-ongoing", help="requests a replica holds at once"),
    max_queued: int = typer.Option(256, "--max-queued", help="requests waiting for a replica; more are "
                                   "answered 503 with Retry-After"),
    retry_after: float = typer.Option(1.0, "--retry-after", help="seconds in the Retry-After header of a 503"),
    cpus_per_replica: float = typer.Option(1.0, "--cpus-per-replica", help="Ray CPUs of one replica"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per replica (default: its CPUs)"),
    bench: bool = typer.Option(False, "--bench", help="instead of serving: the load benchmark of the committee, "
                               "the deep model and the cascade, served side by side on the loopback interface "
                               "(docs/serve.md)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="with --bench: also write the results here"),
    quick: bool = typer.Option(False, "--quick", help="with --bench: a short run to check that it works"),
):
    """Serve a finished run's committee over HTTP with Ray Serve (POST /predict, GET /healthz, GET /metadata)."""
    from orchestrator.serve.command import serve_command

    values = {"model": model, "rule": rule, "cascade_threshold": cascade_threshold, "max_texts_per_request": max_texts,
              "max_text_chars": max_text_chars, "max_batch_texts": max_batch, "batch_wait_ms": batch_wait_ms,
              "threads_per_replica": threads}
    deployment = {"replicas": replicas, "autoscale": autoscale, "max_ongoing_requests": max_ongoing,
                  "max_queued_requests": max_queued, "retry_after_s": retry_after, "cpus_per_replica": cpus_per_replica}
    serve_command(run_dir, values, deployment, cascade=cascade, max_loss_points=max_loss_points, host=host, port=port,
                  address=address, bench=bench, json_path=json_path, quick=quick, command=invocation(),
                  echo=typer.echo)


@app.command("show-config")
@user_errors
def show_config(config: Path = typer.Argument(..., help="a run, sweep or distill YAML"),
                overrides: Optional[List[str]] = OVERRIDES):
    """Print the resolved config (defaults filled in, overrides applied)."""
    from orchestrator.config.commands import show

    typer.echo(show(config, overrides), nl=False)


@app.command()
@user_errors
def bench(
    model: Optional[str] = typer.Option(None, "--model", help="bert1 (paper shape: hidden 768, 12 heads, vocab 30,522), "
                                        "bert1-512, bert1-256, quickstart (hidden 128, 2 heads, vocab 8,000), "
                                        "bert6 (6 layers, trained in the throughput sections), tiny; "
                                        "default bert1, or tiny with --quick"),
    quick: bool = typer.Option(False, "--quick", help="a short run to check that everything works (about a minute)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON here"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    precision: str = typer.Option("auto", "--precision", help="the member loop's precision: auto (bf16 where the "
                                  "hardware runs it natively, else fp32), bf16 or fp32"),
    members: int = typer.Option(6, "--members", min=1, help="committee size K"),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray worker processes of 1 CPU (scaling, serving)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="default: $COMMITTEE_DATA or ../shared/data"),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="where the trained tokenizer is cached"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="a saved tokenizer (default: train and cache one)"),
):
    """Side-by-side throughput and latency: the authors' loops against the project's, on real text."""
    from bench.run import bench_command

    bench_command(json_path, typer.echo, model=model, quick=quick, device=device, precision=precision,
                  members=members, workers=workers, data_root=data_root, cache_dir=cache_dir, tokenizer=tokenizer)


@data_app.command("pull")
@user_errors
def data_pull(
    root: Path = typer.Option(..., "--root", help="where to write the data root"),
    wikipedia_articles: int = typer.Option(6417, help="articles of wikimedia/wikipedia 20231101.en to keep"),
):
    """Write the data-root layout from the Hugging Face hub (needs internet)."""
    from orchestrator.pull import pull_all

    pull_all(root, wikipedia_articles, echo=typer.echo)
    typer.echo(f"data root ready: {root} (use: export COMMITTEE_DATA={root})")


def main() -> None:
    # settings for the whole process (and the Ray workers it starts), made here and not in library code
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, SigtermAsInterrupt())
    app()


if __name__ == "__main__":
    main()
