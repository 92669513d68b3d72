"""`run_bench`: prepare, measure the peak, run every section side by side, check the targets."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, replace

from bench.hardware import machine_report, precision_report
from bench.options import BATCH_SIZE, MODELS, NUM_LABELS, SEQ_LEN, BenchOptions, check_options, sizes_for
from bench.prepare import Prepared, prepare
from bench.report import targets
from workers.errors import ResourceError


def ray_cpus(opts: BenchOptions) -> int:
    """Ray's CPUs: one per worker process (CPU), one per fractional-GPU actor (CUDA)."""
    return max(opts.workers, opts.members if opts.device == "cuda" else opts.workers)


@contextmanager
def ray_session(opts: BenchOptions):
    """Ray for the Ray sections: the product's in-process start (or the session already running).

    A Ray this call started is shut down when the block ends; one that was running is left running.
    """
    import ray

    from orchestrator.run.cluster import connect

    started = not ray.is_initialized()
    connect(None, num_cpus=ray_cpus(opts))
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _threads(opts: BenchOptions) -> int:
    """Torch threads in this process: --threads, else all cores (1 with --quick: a smoke run, spared contention)."""
    return opts.threads or (1 if opts.quick else os.cpu_count() or 1)


def _model_report(opts: BenchOptions, prep: Prepared) -> dict:
    from bench.serving import committee_members
    from workers.model.bert import count_parameters

    shape = MODELS[opts.model]
    member = committee_members(prep.member_config, NUM_LABELS, [opts.seed], "cpu")[0]
    return {"name": opts.model, "hidden": shape["hidden"], "heads": shape["heads"],
            "vocab": prep.member_config.vocab_size, "seq_len": SEQ_LEN, "batch_size": BATCH_SIZE,
            "layers": prep.train_config.num_hidden_layers, "member_parameters": count_parameters(member),
            "deep_layers": prep.deep_config.num_hidden_layers}


def _ray_sections(prep: Prepared, opts: BenchOptions, sizes, echo, result: dict) -> None:
    """Stacked groups (bench.sections.groups), then members per GPU (CUDA), or scaling, memory and serving
    through Ray (CPU), into `result`."""
    with ray_session(opts):
        from bench.sections.groups import bench_groups

        result["groups"] = bench_groups(prep, opts, sizes, echo, result["machine"])
        if opts.device == "cuda":
            from bench.sections.gpu import bench_gpu_sharing

            result["members_per_gpu"] = bench_gpu_sharing(prep, opts, sizes, echo)
            return
        from bench.sections.scaling import bench_ray_cpu

        scaling, memory, serving = bench_ray_cpu(prep, opts, sizes, echo)
    result["scaling"], result["memory"] = scaling, memory
    result["latency"]["ray"] = serving
    result["latency"]["projected_ratio_p50_batch1"] = serving["projected_ratio_p50_batch1"]


def run_bench(opts: BenchOptions, echo=print) -> dict:
    """Every section of the benchmark for `opts`; returns the results (what `--json` writes)."""
    import torch
    from transformers.utils import logging as hf_logging

    from bench.flops import measure_peak
    from bench.sections.finetune import bench_finetune
    from bench.sections.latency import bench_latency_local
    from bench.sections.pretrain import bench_pretrain

    check_options(opts)
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise ResourceError("--device cuda: torch sees no CUDA device here; run on a machine with a GPU, or "
                            "use --device cpu")
    hf_logging.set_verbosity_error()
    sizes = sizes_for(opts)
    threads = _threads(opts)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    precision = precision_report(opts.device, opts.precision)
    echo(f"precision: {precision['why']}")
    opts = replace(opts, precision=precision["member"])  # every section runs what the setting resolved to
    prep = prepare(opts, sizes, echo)
    peak = measure_peak(opts.device, opts.quick)
    result: dict = {"command": "committee bench", "options": asdict(opts),
                    "machine": machine_report(opts.device, threads, peak), "precision": precision,
                    "model": _model_report(opts, prep)}
    result["pretrain"] = bench_pretrain(prep, opts, sizes, peak, echo)
    result["finetune"] = bench_finetune(prep, opts, sizes, echo)
    result["latency"] = bench_latency_local(prep, opts, sizes, echo)
    _ray_sections(prep, opts, sizes, echo, result)
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - t0
    return result


def bench_command(json_path, echo, model: str | None, quick: bool, device: str, precision: str, **options) -> dict:
    """`committee bench`: the table on stdout (progress on stderr), the figures as JSON at `json_path` if given."""
    from bench.report import format_table, write_json
    from workers.errors import CommitteeError

    if device not in ("cpu", "cuda") or precision not in ("auto", "bf16", "fp32"):
        raise CommitteeError("--device is cpu or cuda; --precision is auto, bf16 or fp32")
    opts = BenchOptions(model=model or ("tiny" if quick else "bert1"), quick=quick, device=device,
                        precision=precision, **options)
    result = run_bench(opts, echo=lambda msg: echo(msg, err=True))
    echo(format_table(result))
    if json_path:
        write_json(result, json_path)
        echo(f"wrote {json_path}")
    return result
