"""Section 6 "members per GPU": K members pre-trained as one stack (workers/train/groups.py) against one actor per
member (or per core), aggregate real tokens/s. This module holds the loops every side trains with (a stack,
members in turn), their Ray worker and the alternating rounds, the CPU rows, the section's entry and its
table; the CUDA rows are bench/sections/groups_gpu.py.

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

import time
from dataclasses import replace

import numpy as np
import ray
import torch

from bench.loops import seeded_mlm
from bench.options import MODELS, SEQ_LEN, BenchOptions, Sizes, pretrain_settings
from bench.prepare import Prepared
from bench.timing import median, sync

CPU_MEMBERS = (1, 2, 4)
CPU_SHAPE = "bert1-256"


class StackLoop:
    """K members as one stack: each `step()` trains every member one batch (workers.train.groups.group_train_step)."""

    def __init__(self, models: list, blocks: np.ndarray, special, settings: list, device: str):
        from workers.train.groups import group_optimizer
        from workers.model.precision import resolve_here
        from workers.model.stacked import StackedMLM

        self.model = StackedMLM(models, device=device).train()
        self.optimizer, self.scheduler = group_optimizer(self.model, settings[0])
        self.blocks, self.special, self.settings, self.device = blocks, special, settings, device
        self.precision = resolve_here(settings[0].precision, device).precision
        self.step_index = 0

    def step(self) -> int:
        """Queue one step of every member (the device may still be working when it returns: `sync` waits)."""
        from workers.train.groups import queue_group_step
        from workers.train.pretrain import batch_at

        rows = np.stack([batch_at(self.blocks, self.step_index, s.batch_size, s.seed) for s in self.settings])
        _, real = queue_group_step(self.model, self.optimizer, self.scheduler, torch.from_numpy(rows).long(),
                                   self.special, self.settings, self.step_index, self.precision)
        self.step_index += 1
        return sum(real)

    def sync(self) -> None:
        sync(self.device)


class TurnLoop:
    """Members trained one after another by the member loop (workers.train.pretrain.queue_step, as `pretrain` runs it:
    the loss is not read back every step)."""

    def __init__(self, models: list, blocks: np.ndarray, special, settings: list, device: str):
        from workers.model.precision import resolve_here
        from workers.train.schedule import make_optimizer

        self.members = []
        for model, s in zip(models, settings):
            model = model.to(device).train()
            s = replace(s, precision=resolve_here(s.precision, device).precision)
            self.members.append((model, *make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps), s))
        self.blocks, self.special, self.device = blocks, special, device
        self.step_index = 0

    def step(self) -> int:
        """Queue one step of each member in turn (`sync` waits for the device)."""
        from workers.train.pretrain import batch_at, queue_step

        tokens = 0
        for model, optimizer, scheduler, s in self.members:
            batch = torch.from_numpy(batch_at(self.blocks, self.step_index, s.batch_size, s.seed)).long()
            tokens += queue_step(model, optimizer, scheduler, batch, self.special, s, self.step_index)[1]
        self.step_index += 1
        return tokens

    def sync(self) -> None:
        sync(self.device)


def make_loop(config, blocks: np.ndarray, special, settings: list, stacked: bool, device: str):
    """A StackLoop or TurnLoop over fresh members with the initial weights of their seeds."""
    models = [seeded_mlm(config, s.seed, "cpu") for s in settings]
    return (StackLoop if stacked else TurnLoop)(models, blocks, special, settings, device)


@ray.remote(num_cpus=0)
class GroupBenchWorker:
    """A Ray worker of `num_threads` torch threads holding one loop (contenders take turns, so Ray's CPU
    accounting is left out: both sides of a comparison live at once on a machine that runs one at a time)."""

    def __init__(self, num_threads: int, device: str = "cpu"):
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(max(1, num_threads))
        hf_logging.set_verbosity_error()
        self.device = device
        self.loop = None

    def setup(self, config: dict, blocks, special, settings: list, stacked: bool) -> None:
        from transformers import BertConfig

        self.release()
        self.loop = make_loop(BertConfig.from_dict(config), blocks, special, settings, stacked, self.device)

    def steps(self, count: int) -> int:
        tokens = sum(self.loop.step() for _ in range(count))
        self.loop.sync()
        return tokens

    def release(self) -> None:
        """Drop the loop and hand its GPU memory back (other sides run next on the same GPU)."""
        self.loop = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gpu_mib(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else 0.0


def run_side(side, steps: int) -> int:
    """`steps` steps of a contender (a list of workers, all at once, or a local loop); its real tokens."""
    if isinstance(side, list):
        return sum(ray.get([w.steps.remote(steps) for w in side]))
    tokens = sum(side.step() for _ in range(steps))
    side.sync()
    return tokens


def round_rates(contenders: dict, steps: int, rounds: int, warmup: bool = True) -> dict[str, list[float]]:
    """Aggregate tokens/s per round, the contenders in alternating order (after one warm-up run each)."""
    names = list(contenders)
    for name in names if warmup else []:
        run_side(contenders[name], steps)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            tokens = run_side(contenders[name], steps)
            rates[name].append(tokens / (time.perf_counter() - t0))
    return rates


def kill_workers(*sides) -> None:
    """End the Ray workers of each side (a list of workers; a local loop has none)."""
    for side in sides:
        for worker in side if isinstance(side, list) else []:
            ray.kill(worker)


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
