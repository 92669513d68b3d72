"""Section 6 "members per GPU": K members pre-trained as one stack (workers/train/groups.py) against one actor per
member (or per core), aggregate real tokens/s. This module holds the CPU rows, the section's entry and its
table; the loops every side trains with (a stack, members in turn), their Ray worker and the alternating
rounds are bench/group_loops.py, the CUDA rows bench/sections/groups_gpu.py.

- CPU: K = 1, 2, 4 at the bert1-256 width (the --model's own when it is 256 wide or less; tiny under
  --quick), with the --model's vocabulary, on `--workers` cores: one one-core actor per core training its
  share of the members in turn with the member loop, the same actors training their share as a stack,
  and one stack of all K in one actor of all the cores, side by side in alternating rounds. Expect no
  gain worth having: a CPU core is busy with one member already, and a stack only turns G small matmuls
  into one batched matmul of the same FLOPs (what it saves is Python and launch overhead, which matters at
  tiny widths only).
- CUDA (bench/sections/groups_gpu.py): a stack, that stack compiled, one member alone and fractional-GPU
  actors, for two shapes and K up to 64, each side alone.
Every side uses the benchmark's --precision, the same seeds, masks and data order (workers.train.seeds).
"""

from __future__ import annotations

import ray

from bench.group_loops import GroupBenchWorker, kill_workers, round_rates
from bench.options import MODELS, SEQ_LEN, BenchOptions, Sizes, pretrain_settings
from bench.prepare import Prepared
from bench.timing import median

CPU_MEMBERS = (1, 2, 4)
CPU_SHAPE = "bert1-256"


def cpu_shape(opts: BenchOptions) -> str:
    """The width the CPU rows train (with the --model's vocabulary): tiny under --quick, else the --model's
    when it is 256 wide or less, else bert1-256."""
    if opts.quick:
        return "tiny"
    return opts.model if MODELS[opts.model]["hidden"] <= 256 else CPU_SHAPE


def _cpu_row(members: int, actors: int, rates: dict[str, list[float]]) -> dict:
    in_turn = median(rates["actors"])
    return {"members": members, "actors": actors, "actors_tokens_per_s": in_turn,
            "stacks_per_core_tokens_per_s": median(rates["stacks_per_core"]),
            "one_stack_tokens_per_s": median(rates["one_stack"]),
            "stacks_per_core_ratio": median(rates["stacks_per_core"]) / in_turn,
            "one_stack_ratio": median(rates["one_stack"]) / in_turn}


def bench_groups_cpu(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    """K members on `workers` cores, three ways: one one-thread actor per core training its share of the
    members in turn (the solo member loop), one one-thread actor per core training its share as a stack,
    and one stack of all K in one actor of `workers` threads (what `members_per_actor: K` runs)."""
    from workers.model.bert import bert_config

    shape = MODELS[cpu_shape(opts)]
    config = bert_config(p.member_config.vocab_size, shape["hidden"], shape["heads"], 1,
                         max_position=SEQ_LEN).to_dict()
    blocks, cores = ray.put(p.packed), opts.workers
    workers = {"actors": [GroupBenchWorker.remote(1, "cpu") for _ in range(cores)],
               "stacks_per_core": [GroupBenchWorker.remote(1, "cpu") for _ in range(cores)],
               "one_stack": [GroupBenchWorker.remote(cores, "cpu")]}
    rows = []
    try:
        for k in CPU_MEMBERS:
            settings = [pretrain_settings(opts, opts.precision, opts.seed + i) for i in range(k)]
            per_core = min(k, cores)
            echo(f"members per GPU (on CPU): {k} member(s) on {cores} cores: {per_core} one-core actor(s) in "
                 f"turn, as stacks, and one stack on all cores")
            sides = {name: side[:per_core] for name, side in workers.items()}
            ray.get([w.setup.remote(config, blocks, p.special, settings[j::len(side)], name != "actors")
                     for name, side in sides.items() for j, w in enumerate(side)])
            rates = round_rates(sides, sizes.scaling_steps, max(2, sizes.scaling_rounds))
            rows.append(_cpu_row(k, per_core, rates))
    finally:
        kill_workers(*workers.values())
    return {"device": "cpu", "shape": cpu_shape(opts), "cores": cores, "precision": opts.precision, "rows": rows,
            "what": (f"aggregate real tokens/s of K members pre-training at the {cpu_shape(opts)} width on {cores} cores: "
                     f"one one-thread actor per core training its share of the members in turn with the member loop "
                     f"(as members_per_actor: 1 runs them), the same actors training their share as one stack "
                     f"(workers/train/groups.py), and one stack of all K in one actor of {cores} threads (as "
                     f"members_per_actor: K runs them); ratios are over the first. Torch threads spin while they "
                     f"wait, so on a machine shared with other work the multi-thread stack loses most")}


def bench_groups(p: Prepared, opts: BenchOptions, sizes: Sizes, echo, machine: dict) -> dict:
    """The section for the --device: GPU rows on CUDA, stack against actors per core on CPU (Ray connected)."""
    if opts.device == "cuda":
        from bench.sections.groups_gpu import bench_groups_gpu

        return bench_groups_gpu(p, opts, sizes, echo, machine["peak_flops_bf16"])
    return bench_groups_cpu(p, opts, sizes, echo)


def groups_table(g: dict, row) -> list[str]:
    """The section's lines in the benchmark table (`row` formats a label and cells)."""
    if "cores" in g:  # the CPU comparison
        lines = [f"6. members per GPU, on CPU ({g['precision']}; expect no gain): K members at the {g['shape']} width, "
                 f"tokens/s, actors in turn | stacks per core | one stack on {g['cores']} cores"]
        for r in g["rows"]:
            lines.append(row(f"K = {r['members']} on {r['actors']} one-core actor(s)", f"{r['actors_tokens_per_s']:,.0f}",
                             f"{r['stacks_per_core_tokens_per_s']:,.0f}", f"{r['one_stack_tokens_per_s']:,.0f}")
                         + f"{r['stacks_per_core_ratio']:>8.2f}x{r['one_stack_ratio']:>7.2f}x")
        return lines
    lines = [f"6. members per GPU ({g['precision']}): tokens/s (share of the bf16 peak), peak GPU memory, warm-up"]
    for r in g["rows"]:
        label = f"{r['shape']}, K = {r['members']}, {r['side']}"
        if "skipped" in r:
            lines.append(row(label, "skipped") + f"  {r['skipped']}")
            continue
        share = "" if r["bf16_peak_share"] is None else f" ({r['bf16_peak_share']:.0%})"
        memory = "" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib'] / 1024:.1f} GiB"
        lines.append(row(label, f"{r['tokens_per_s']:,.0f}{share}", memory, f"{r['warmup_s']:.1f} s"))
    return lines
