"""`committee bench`'s section 6 ("members per GPU") alone, for a GPU session too short for the whole benchmark.

The same code as the benchmark's section (bench.sections.groups_gpu.bench_groups_gpu): the benchmark's inputs
(bench.prepare), its matmul peak (bench.flops), its Ray session (bench.run.ray_session) and its table rows.
--dry runs every row on the CPU at tiny shapes and K, compiling through the aot_eager backend (the code paths,
not the numbers), so the script is tested where there is no GPU.

python scripts/gpu_groups.py --device cuda --tokenizer DIR [--tokenizer-8000 DIR] [--budget-s S] --json FILE
python scripts/gpu_groups.py --dry --tokenizer-8000 DIR --json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DRY_SHAPES = {"hidden 64, vocab 2,000": (64, 2, 2000), "hidden 32, vocab 8,000": (32, 2, 8000)}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--dry", action="store_true", help="tiny shapes and K on the CPU (tests this script)")
    ap.add_argument("--tokenizer", help="the saved tokenizer of the paper shape (vocab 30,522)")
    ap.add_argument("--tokenizer-8000", dest="tokenizer_8000", help="a saved tokenizer of vocab 8,000")
    ap.add_argument("--members", default=None, help="K of the stacks, comma-separated (default 1,6,32,64)")
    ap.add_argument("--compile-members", default=None, help="K whose stack also runs compiled (default 32,64)")
    ap.add_argument("--fractional-members", default=None, help="K of the fractional actors (default 1,6,32,64)")
    ap.add_argument("--budget-s", type=float, default=None, help="rows starting later than this are skipped")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", required=True, help="where the results go")
    return ap.parse_args(argv)


def plan_for(args):
    """The rows to measure: the section's plan, or the tiny one of --dry."""
    from bench.sections.groups_gpu import GpuPlan

    plan = GpuPlan()
    if args.dry:
        plan = replace(plan, shapes=dict(DRY_SHAPES), members=(1, 2), compile_members=(2,), fractional_members=(1, 2),
                       budget_s=600.0)
    for field in ("members", "compile_members", "fractional_members"):
        given = getattr(args, field)
        if given is not None:
            plan = replace(plan, **{field: tuple(int(k) for k in given.split(",") if k)})
    if args.budget_s is not None:
        plan = replace(plan, budget_s=args.budget_s)
    return replace(plan, tokenizers={8000: args.tokenizer_8000} if args.tokenizer_8000 else {})


def main(argv: list[str]) -> dict:
    args = parse(argv)
    import torch
    from transformers.utils import logging as hf_logging

    from bench.flops import measure_peak
    from bench.hardware import machine_report, precision_report
    from bench.options import BenchOptions, check_options, sizes_for
    from bench.prepare import prepare
    from bench.report import _row
    from bench.run import ray_session
    from bench.sections.groups import groups_table
    from bench.sections.groups_gpu import bench_groups_gpu
    from workers.train import pretrain as member_loop

    hf_logging.set_verbosity_error()
    device = "cpu" if args.dry else args.device
    # members: Ray's CPUs (bench.run.ray_cpus), which also bound how many worker processes start at once
    opts = BenchOptions(model="tiny" if args.dry else "bert1", quick=args.dry, device=device,
                        members=max(2, os.cpu_count() or 2), tokenizer=None if args.dry else args.tokenizer,
                        data_root=args.data_root)
    check_options(opts)
    if args.dry:
        member_loop.COMPILE_BACKEND = "aot_eager"  # inductor's C++ build takes minutes on a small CPU
    t0 = time.perf_counter()
    precision = precision_report(device, opts.precision)
    print(f"precision: {precision['why']}", flush=True)
    opts = replace(opts, precision=precision["member"])
    sizes = sizes_for(opts)
    prep = prepare(opts, sizes, print)
    peak = measure_peak(device, opts.quick)
    machine = machine_report(device, torch.get_num_threads(), peak)
    head = {"command": "scripts/gpu_groups.py " + " ".join(argv), "options": asdict(opts), "machine": machine,
            "precision": precision}

    def save(groups: dict) -> dict:  # after every row: a session stopped at its time limit keeps what it measured
        result = head | {"groups": groups, "wall_s": time.perf_counter() - t0}
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        return result

    with ray_session(opts):
        groups = bench_groups_gpu(prep, opts, sizes, print, peak["bf16"], plan_for(args), device=device, on_row=save)
    result = save(groups)
    print("\n".join(groups_table(groups, _row)))
    print(f"section 6 wall: {result['wall_s']:.0f} s", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
