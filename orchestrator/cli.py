"""The `committee` command line."""

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


_SIGTERM_SEEN: list[bool] = []


def _on_sigterm(signum, frame):
    """SIGTERM (`ray job stop`, Kubernetes, a batch scheduler) is handled like Ctrl-C: raised as
    KeyboardInterrupt, which Ray's blocking calls pass through cleanly; the exit code tells them apart."""
    _SIGTERM_SEEN.append(True)
    raise KeyboardInterrupt


def user_errors(fn):
    """Turn a CommitteeError into its message on stderr and exit code 2, without a traceback;
    Ctrl-C and SIGTERM stop the work (members included) and exit 130 / 143."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CommitteeError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            if _SIGTERM_SEEN:
                typer.secho("terminated (SIGTERM)" + _resume_hint(), err=True)
                raise typer.Exit(143) from None
            typer.secho("interrupted (Ctrl-C)" + _resume_hint(), err=True)
            raise typer.Exit(130) from None
    return wrapper


_RESUMABLE: list[Path] = []  # the run directory a command works in, once it has one
_RESUME_KIND: list[str] = []  # which command continues it (default: run)


def _resume_hint() -> str:
    from orchestrator.run import rundir

    run_dir = _RESUMABLE[-1] if _RESUMABLE else None
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return ""
    kind = _RESUME_KIND[-1] if _RESUME_KIND else "run"
    return f"; members were stopped. Continue with: {rundir.continue_command(run_dir, kind)}"


OVERRIDES = typer.Argument(None, help="dotted overrides, e.g. committee.members=8 pretrain.max_steps=200")


def _config_and_overrides(command: str, config: str | None, overrides: list[str] | None, run_dir: Path | None,
                          overwrite: bool, resume: Path | None, check=None) -> tuple[str, list[str]]:
    """The config file and overrides of `committee COMMAND`: with --resume the run's own config.yaml unless a
    file is given (a first argument with '=' that is no file is an override); `check(resume)` vets the run
    directory before its config is read."""
    overrides = list(overrides or [])
    if resume is None:
        if config is None:
            raise CommitteeError(f"give a config YAML (committee {command} CONFIG), or --resume RUN_DIR")
        return config, overrides
    if run_dir is not None and run_dir != resume:
        raise CommitteeError("--resume RUN_DIR continues that run directory; leave out --run-dir")
    if overwrite:
        raise CommitteeError("--resume keeps the run directory; it cannot be combined with --overwrite")
    if check is not None:
        check(resume)
    if config is not None and "=" in config and not Path(config).is_file():
        overrides.insert(0, config)  # `committee COMMAND --resume DIR key=value`: no config given
        config = None
    if config is None and not (resume / "config.yaml").is_file():
        what = "does not exist" if not resume.exists() else "holds no config.yaml"
        raise CommitteeError(f"{resume} {what}: --resume takes the directory of an interrupted "
                             f"`committee {command}` (it holds the run's config.yaml)")
    return config or str(resume / "config.yaml"), overrides


def _target(name: str, run_dir: Path | None, resume: Path | None) -> Path:
    return resume if resume is not None else (run_dir if run_dir is not None else Path("runs") / name)


@app.command()
@user_errors
def run(
    config: Optional[str] = typer.Argument(None, help="experiment YAML (see configs/); with --resume it may be "
                                                      "left out (the run's own config.yaml is used)"),
    overrides: Optional[List[str]] = OVERRIDES,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: runs/<name>"),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="an existing Ray cluster: auto, ray://HOST:10001 or HOST:6379; "
                                               "absent: Ray starts in-process"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run directory"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the interrupted run in RUN_DIR: "
                                          "finished members are kept, the others resume from their checkpoints; "
                                          "only resources.* and committee.members may be overridden"),
    pretrained_from: Optional[Path] = typer.Option(None, "--pretrained-from", help="fine-tune the pre-trained "
                                                   "members (and deep model) of this earlier run instead of "
                                                   "pre-training them again: its tokenizer too; the configs must "
                                                   "agree on seed, model, tokenizer and pretrain; the task may differ"),
):
    """Pre-train the committee, fine-tune every member, vote, and write the report."""
    from orchestrator.run import rundir
    from orchestrator.config.experiment import load_config
    from orchestrator.run.driver import run_experiment

    config, overrides = _config_and_overrides("run", config, overrides, run_dir, overwrite, resume,
                                              check=lambda d: rundir.check_kind(d, "run"))
    if pretrained_from is not None and resume is not None:
        raise CommitteeError("--resume continues a run that already holds the members it took with "
                             "--pretrained-from; leave out --pretrained-from")
    cfg = load_config(config, overrides)
    target = _target(cfg.name, run_dir, resume)
    _RESUMABLE.append(target)
    command = "committee run " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    run_experiment(cfg, target, address=address, overwrite=overwrite, command=command, echo=typer.echo,
                   resume=resume is not None, pretrained_from=pretrained_from)


@app.command()
@user_errors
def distill(
    config: Optional[str] = typer.Argument(None, help="distill YAML: an experiment plus a distill: section (see "
                                           "configs/distill_*.yaml); with --resume it may be left out (the run's "
                                           "own config.yaml is used)"),
    overrides: Optional[List[str]] = OVERRIDES,
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="a finished `committee run` directory: use its "
                                            "members, tokenizer and task split (no member is trained)"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: runs/<name>"),
    address: Optional[str] = typer.Option(None, "--address", help="an existing Ray cluster (as for `committee run`); "
                                          "absent: Ray starts in-process"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run directory"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the stopped distillation in RUN_DIR: "
                                          "finished members, distilled sets, recover tasks and students are kept, "
                                          "the rest runs; only resources.* may be overridden"),
):
    """Distil the training set with the committee (CV-DD) and train fresh students on the distilled sets."""
    from orchestrator.config.distill import load_distill_config
    from orchestrator.distill.driver import check_resumable, distill_experiment

    config, overrides = _config_and_overrides("distill", config, overrides, run_dir, overwrite, resume,
                                              check=check_resumable)
    cfg = load_distill_config(config, overrides)
    target = _target(cfg.name, run_dir, resume)
    _RESUMABLE.append(target)
    _RESUME_KIND.append("distill")
    command = "committee distill " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    distill_experiment(cfg, target, from_run=from_run, address=address, overwrite=overwrite,
                       resume=resume is not None, command=command, echo=typer.echo)


@app.command()
@user_errors
def validate(config: Path = typer.Argument(..., help="experiment YAML"), overrides: Optional[List[str]] = OVERRIDES):
    """Check a config (keys, types, ranges) and its data (a sweep file: every point; a distill file: its request)."""
    from orchestrator.config.loader import command_of, load_raw

    section = command_of(load_raw(config))
    if section == "sweep":
        return _validate_sweep(config, overrides or [])
    from orchestrator.config.experiment import load_config
    from orchestrator.config.distill import load_distill_config
    from orchestrator.run.prepare import check_data

    if section == "distill":
        from orchestrator.distill.driver import check_request

        cfg = load_distill_config(config, overrides or [])
        check_request(cfg)
    else:
        cfg = load_config(config, overrides or [])
    root = check_data(cfg)
    where = f"data root {root}" if root is not None else "your own task and corpus"
    typer.echo(f"{config}: valid ({cfg.committee.members} members, task {cfg.task.name}, {where})")


def _validate_sweep(config: Path, overrides: list[str]) -> None:
    from orchestrator.config.sweep import load_sweep_config
    from orchestrator.sweep.driver import check_sweep
    from orchestrator.sweep.space import with_reference_tokenizer

    cfg = with_reference_tokenizer(load_sweep_config(config, overrides))
    data_points = check_sweep(cfg)
    typer.echo(f"{config}: valid sweep ({cfg.sweep.search} search over {len(cfg.sweep.space)} key(s), "
               f"{cfg.sweep.seeds} seed(s) per point, {len(data_points)} data configuration(s), task "
               f"{cfg.experiment.task.name})")


@app.command()
@user_errors
def sweep(
    config: Path = typer.Argument(..., help="sweep YAML: an experiment plus a sweep: section (see configs/sweep_*.yaml); "
                                  "with --resume, the sweep's directory instead (its own config.yaml is used)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. sweep.seeds=2 "
                                                    "finetune.epochs=4 sweep.space.pretrain.articles.grid=[50,200]"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: runs/<name>"),
    address: Optional[str] = typer.Option(None, "--address", help="an existing Ray cluster (auto, ray://HOST:10001 "
                                          "or HOST:6379); absent: Ray starts in-process"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing sweep directory"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted sweep: `--resume DIR`, or "
                                "`CONFIG --resume [--run-dir DIR]` (default runs/<name>); finished trials are "
                                "kept, the others run"),
):
    """Sweep config points on Ray Tune: each trial pre-trains one member and fine-tunes it beside its scratch
    twin; per point: mean gap with a 95% interval over seeds, the committees' vote, overlap and size."""
    from orchestrator.run import rundir
    from orchestrator.config.sweep import load_sweep_config
    from orchestrator.sweep.driver import run_sweep

    if resume and overwrite:
        raise CommitteeError("--resume keeps the sweep directory; it cannot be combined with --overwrite")
    if resume and (config.is_dir() or not config.exists()):  # `--resume DIR`, the form run and distill take
        saved, overrides = _config_and_overrides("sweep", None, overrides, run_dir, overwrite, config,
                                                 check=lambda d: rundir.check_kind(d, "sweep"))
        run_dir, config = config, Path(saved)
    elif config.is_dir():
        raise CommitteeError(f"{config} is a directory: give a sweep YAML (committee sweep CONFIG), or continue "
                             f"the sweep in it with: {rundir.continue_command(config, 'sweep')}")
    cfg = load_sweep_config(config, list(overrides or []))
    target = run_dir if run_dir is not None else Path("runs") / cfg.experiment.name
    command = "committee sweep " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    run_sweep(cfg, target, address=address, overwrite=overwrite, resume=resume, command=command, echo=typer.echo)


@app.command()
@user_errors
def predict(
    run_dir: Path = typer.Argument(..., help="a finished run directory (it holds report.json)"),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="a .txt file (one example per line) or a data "
                                      "file the run's task section reads (csv, json, jsonl, parquet)"),
    rule: str = typer.Option("soft", "--rule", help="soft, logit, hard or weighted (the run's own weights)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the JSON lines here instead of stdout"),
):
    """Label texts with a finished run's committee: one JSON line per example with its label, label name,
    soft-label vector and member agreement; with labels in INPUT, the committee's accuracy too."""
    import json

    from workers.data.predict_inputs import label_ids_for, predict_inputs
    from workers.committee.voting import RULES

    if rule not in RULES:
        raise CommitteeError(f"--rule {rule!r} is not a voting rule; choose from {', '.join(RULES)}")
    if not (run_dir / "report.json").is_file():
        from orchestrator.run import rundir

        if not run_dir.exists():
            what = "does not exist"
        elif rundir.kind_of(run_dir) == "sweep":
            what = f"is {rundir.KINDS['sweep']}, not a run"
        else:
            what = "is not a finished run (it holds no report.json)"
        raise CommitteeError(f"{run_dir} {what}; give the directory of a `committee run` that finished, e.g. "
                             f"runs/<name>")
    texts, raw_labels = predict_inputs(input_path, committee_task(run_dir))  # checked before loading weights
    from workers.committee.committee import Committee

    committee = Committee.from_run(run_dir)
    predictions = committee.predict(texts, rule=rule)
    lines = "".join(json.dumps(record) + "\n" for record in predictions.records())
    if out is None:
        typer.echo(lines, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(lines)
        typer.echo(f"wrote {len(texts)} predictions to {out}", err=True)
    if raw_labels is not None:
        truth = label_ids_for(raw_labels, committee.label_names(predictions.soft_labels.shape[1]), str(input_path))
        typer.echo(f"committee accuracy ({rule} vote) on {len(truth)} labelled examples of {input_path}: "
                   f"{float((predictions.labels == truth).mean()):.4f}", err=True)


def committee_task(run_dir: Path):
    """The task section of a run's config.yaml (what a predict INPUT is read as)."""
    from orchestrator.config.experiment import validate_dict
    from orchestrator.config.loader import load_raw

    raw = load_raw(run_dir / "config.yaml")
    raw.pop("distill", None)
    return validate_dict(raw, source=str(run_dir / "config.yaml")).task


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
    from orchestrator.serve.driver import prepared_args, serve_forever
    from orchestrator.serve.runs import check_servable
    from orchestrator.serve.settings import deployment_settings, parse_autoscale

    check_servable(run_dir, model)
    settings = deployment_settings(replicas=replicas, autoscale=parse_autoscale(autoscale),
                                   max_ongoing_requests=max_ongoing, max_queued_requests=max_queued,
                                   retry_after_s=retry_after, cpus_per_replica=cpus_per_replica)
    values = {"model": model, "rule": rule, "cascade_threshold": cascade_threshold, "max_texts_per_request": max_texts,
              "max_text_chars": max_text_chars, "max_batch_texts": max_batch, "batch_wait_ms": batch_wait_ms,
              "threads_per_replica": threads}
    if bench:
        from bench.served import bench_served

        bench_served(run_dir, values, settings, max_loss_points=max_loss_points, json_path=json_path, quick=quick,
                     echo=typer.echo)
        return
    args = prepared_args(run_dir, values, cascade, max_loss_points, echo=typer.echo)
    command = "committee serve " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    serve_forever(run_dir, args, settings, host, port, address, command, echo=typer.echo)


@app.command("show-config")
@user_errors
def show_config(config: Path = typer.Argument(..., help="experiment YAML"), overrides: Optional[List[str]] = OVERRIDES):
    """Print the resolved config (defaults filled in, overrides applied)."""
    from orchestrator.config.experiment import load_config, to_yaml

    typer.echo(to_yaml(load_config(config, overrides or [])), nl=False)


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
    from bench.options import BenchOptions
    from bench.report import format_table, write_json
    from bench.run import run_bench

    if device not in ("cpu", "cuda") or precision not in ("auto", "bf16", "fp32"):
        raise typer.BadParameter("--device is cpu or cuda; --precision is auto, bf16 or fp32")
    opts = BenchOptions(model=model or ("tiny" if quick else "bert1"), quick=quick, device=device,
                        precision=precision, members=members, workers=workers, data_root=data_root,
                        cache_dir=cache_dir, tokenizer=tokenizer)
    result = run_bench(opts, echo=lambda msg: typer.echo(msg, err=True))
    typer.echo(format_table(result))
    if json_path:
        write_json(result, json_path)
        typer.echo(f"wrote {json_path}")


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
    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    main()
