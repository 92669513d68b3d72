"""Section "members per GPU": K members pre-trained as one stack (workers/groups.py) against one actor per
member (or per core), aggregate real tokens/s.

- CPU: K = 1, 2, 4 at the bert1-256 width (the --model's own when it is 256 wide or less; tiny under
  --quick), with the --model's vocabulary, on `--workers` cores: one one-core actor per core training its
  share of the members in turn with the member loop, the same actors training their share as a stack,
  and one stack of all K in one actor of all the cores, side by side in alternating rounds. Expect no
  gain worth having: a CPU core is busy with one member already, and a stack only turns G small matmuls
  into one batched matmul of the same FLOPs (what it saves is Python and launch overhead, which matters at
  tiny widths only).
- CUDA: the paper shape (hidden 768, vocab 30,522) and the quickstart's (hidden 128, vocab 8,000), for
  K = 1, 6, 32, 64: K fractional-GPU actors (one member each, the member loop), the K members as one stack
  in this process, and (at the K of GPU_COMPILE_MEMBERS) that stack compiled (`compile: true`); and one
  member alone in this process with and without compile. Tokens/s, the share of the bf16 matmul peak and
  the peak GPU memory. Each side runs alone (a K = 64 stack and 64 actors do not fit the GPU together), in
  rounds after a warm-up (which holds the compilation), the most wanted rows first (`_row_order`); a row
  that would not fit the free GPU memory by `workers.groups.member_training_bytes`, or that would start
  after the section's time budget, is skipped with a note.
Every side uses the benchmark's --precision, the same seeds, masks and data order (workers.seeds).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import ray
import torch

from bench.flops import mlm_training_flops
from bench.loops import seeded_mlm
from bench.options import BATCH_SIZE, MASK_PROB, MODELS, SEQ_LEN, TOKENIZER_ORDER_SEED, BenchOptions, Sizes, pretrain_settings
from bench.prepare import Prepared
from bench.timing import median, sync

CPU_MEMBERS = (1, 2, 4)
CPU_SHAPE = "bert1-256"
GPU_MEMBERS = (1, 6, 32, 64)
GPU_COMPILE_MEMBERS = (32, 64)  # the K whose stack also runs compiled (each new K may compile again)
GPU_MEMORY_SHARE = 0.9  # a row runs when its estimated memory fits this share of the GPU's free memory
ACTOR_CONTEXT_BYTES = 600 * 2**20  # what one more process's CUDA context takes on the GPU (about)
GPU_BUDGET_S = 600.0  # rows that would start later than this after the section began are skipped
GPU_SHAPES = {"hidden 768, vocab 30,522": (768, 12, 30522), "hidden 128, vocab 8,000": (128, 2, 8000)}


class StackLoop:
    """K members as one stack: each `step()` trains every member one batch (workers.groups.group_train_step)."""

    def __init__(self, models: list, blocks: np.ndarray, special, settings: list, device: str):
        from workers.groups import StackedMLM, group_optimizer
        from workers.precision import resolve_here

        self.model = StackedMLM(models, device=device).train()
        self.optimizer, self.scheduler = group_optimizer(self.model, settings[0])
        self.blocks, self.special, self.settings, self.device = blocks, special, settings, device
        self.precision = resolve_here(settings[0].precision, device).precision
        self.step_index = 0

    def step(self) -> int:
        """Queue one step of every member (the device may still be working when it returns: `sync` waits)."""
        from workers.groups import queue_group_step
        from workers.pretrain import batch_at

        rows = np.stack([batch_at(self.blocks, self.step_index, s.batch_size, s.seed) for s in self.settings])
        _, real = queue_group_step(self.model, self.optimizer, self.scheduler, torch.from_numpy(rows).long(),
                                   self.special, self.settings, self.step_index, self.precision)
        self.step_index += 1
        return sum(real)

    def sync(self) -> None:
        sync(self.device)


class TurnLoop:
    """Members trained one after another by the member loop (workers.pretrain.queue_step, as `pretrain` runs it:
    the loss is not read back every step)."""

    def __init__(self, models: list, blocks: np.ndarray, special, settings: list, device: str):
        from workers.precision import resolve_here
        from workers.schedule import make_optimizer

        self.members = []
        for model, s in zip(models, settings):
            model = model.to(device).train()
            s = replace(s, precision=resolve_here(s.precision, device).precision)
            self.members.append((model, *make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps), s))
        self.blocks, self.special, self.device = blocks, special, device
        self.step_index = 0

    def step(self) -> int:
        """Queue one step of each member in turn (`sync` waits for the device)."""
        from workers.pretrain import batch_at, queue_step

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


def _run_side(side, steps: int) -> int:
    """`steps` steps of a contender (a list of workers, all at once, or a local loop); its real tokens."""
    if isinstance(side, list):
        return sum(ray.get([w.steps.remote(steps) for w in side]))
    tokens = sum(side.step() for _ in range(steps))
    side.sync()
    return tokens


def _rounds(contenders: dict, steps: int, rounds: int, warmup: bool = True) -> dict[str, list[float]]:
    """Aggregate tokens/s per round, the contenders in alternating order (after one warm-up run each)."""
    names = list(contenders)
    for name in names if warmup else []:
        _run_side(contenders[name], steps)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            tokens = _run_side(contenders[name], steps)
            rates[name].append(tokens / (time.perf_counter() - t0))
    return rates


def _kill(*sides) -> None:
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
    from workers.models import bert_config

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
            rates = _rounds(sides, sizes.scaling_steps, max(2, sizes.scaling_rounds))
            rows.append(_cpu_row(k, per_core, rates))
    finally:
        _kill(*workers.values())
    return {"device": "cpu", "shape": cpu_shape(opts), "cores": cores, "precision": opts.precision, "rows": rows,
            "what": (f"aggregate real tokens/s of K members pre-training at the {cpu_shape(opts)} width on {cores} cores: "
                     f"one one-thread actor per core training its share of the members in turn with the member loop "
                     f"(as members_per_actor: 1 runs them), the same actors training their share as one stack "
                     f"(workers/groups.py), and one stack of all K in one actor of {cores} threads (as "
                     f"members_per_actor: K runs them); ratios are over the first. Torch threads spin while they "
                     f"wait, so on a machine shared with other work the multi-thread stack loses most")}


def _blocks_for_vocab(p: Prepared, opts: BenchOptions, vocab_size: int, sizes: Sizes, echo,
                      tokenizer_dir: str | None = None) -> tuple:
    """(packed blocks, special ids) for `vocab_size`: the prepared ones when their tokenizer has that
    vocabulary, else those of `tokenizer_dir` (a saved tokenizer) or of the product's cached tokenizer of
    that size, on the same articles."""
    if MODELS[opts.model]["vocab"] == vocab_size and tokenizer_dir is None:
        return p.packed, p.special
    from orchestrator.prepare import tokenizer_for
    from workers import data as wdata
    from workers.corpus import encode, pack_blocks
    from workers.pretrain import SpecialIds
    from workers.tokenizer import load_tokenizer

    root = wdata.resolve_data_root(opts.data_root)
    if tokenizer_dir is None:
        articles = min(MODELS["bert1"]["tokenizer_articles"], len(wdata.load_wikipedia_texts(root)))
        cache_dir = Path(opts.cache_dir) if opts.cache_dir else None
        tokenizer_dir = tokenizer_for(root, vocab_size, articles, TOKENIZER_ORDER_SEED, cache_dir=cache_dir, echo=echo)
    tokenizer = load_tokenizer(tokenizer_dir)
    special = SpecialIds.of(tokenizer)
    articles = wdata.pretraining_articles(root, sizes.pretrain_articles, TOKENIZER_ORDER_SEED)
    return pack_blocks(encode(tokenizer, articles, special=False), SEQ_LEN, special.cls, special.sep, special.pad), special


@dataclass(frozen=True)
class GpuPlan:
    """What the CUDA rows measure: shapes {label: (hidden, heads, vocab)}, the K of the stacks, the K whose
    stack also runs compiled, the K of the fractional actors, the section's time budget (seconds), and saved
    tokenizers {vocab size: directory} (a vocabulary without one takes the --model's tokenizer when it has
    that size, else the product's cached one)."""

    shapes: dict = field(default_factory=lambda: dict(GPU_SHAPES))
    members: tuple = GPU_MEMBERS  # the K of the stacks
    compile_members: tuple = GPU_COMPILE_MEMBERS
    fractional_members: tuple = GPU_MEMBERS
    budget_s: float = GPU_BUDGET_S
    tokenizers: dict = field(default_factory=dict)


class _Pool:
    """One-thread Ray workers, grown on demand and kept across rows (starting 64 processes takes a while); each
    asks for 1/max(K) of a GPU, so together they fit Ray's count of one GPU (the sharing itself is the same as
    at 1/K: every process runs on the one GPU)."""

    def __init__(self, largest: int, device: str):
        self.gpus = 1 / largest if device == "cuda" else 0
        self.device, self.workers = device, []

    def take(self, k: int) -> list:
        while len(self.workers) < k:
            self.workers.append(GroupBenchWorker.options(num_gpus=self.gpus).remote(1, self.device))
        return self.workers[:k]

    def close(self) -> None:
        _kill(self.workers)
        self.workers = []


def _member_bytes(config, settings) -> int:
    """`workers.groups.member_training_bytes` for a benchmark shape."""
    from workers.groups import member_training_bytes
    from workers.models import ModelSettings

    model = ModelSettings(config.hidden_size, config.num_attention_heads, config.num_hidden_layers,
                          config.intermediate_size, config.max_position_embeddings, config.hidden_dropout_prob)
    return member_training_bytes(model, settings, config.vocab_size)


def _fresh_gpu(device: str) -> int | None:
    """Hand cached blocks back, zero the peak counter; the GPU's free bytes (None on CPU)."""
    if device != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.mem_get_info()[0]


def _timed(side, steps: int, rounds: int) -> tuple[float, float]:
    """(median aggregate tokens/s of `rounds` rounds, seconds of the warm-up round before them: a compiled
    side compiles there)."""
    t0 = time.perf_counter()
    _run_side(side, steps)
    warmup_s = time.perf_counter() - t0
    return median(_rounds({"side": side}, steps, rounds, warmup=False)["side"]), warmup_s


class GpuRows:
    """The CUDA rows of one run, each side alone: the checks before a row (time budget, free GPU memory
    against its estimate) and its record; a row that fails (out of memory, a compiler error) is recorded as
    skipped with the error, and the section goes on."""

    def __init__(self, plan: GpuPlan, peak_bf16: float | None, steps: int, rounds: int, device: str, echo):
        self.plan, self.peak_bf16, self.device, self.echo = plan, peak_bf16, device, echo
        self.steps, self.rounds = steps, rounds
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []
        self.on_row = None  # called after each row

    def _why_not(self, need_bytes: int) -> str | None:
        spent = time.perf_counter() - self.t0
        if spent > self.plan.budget_s:
            return f"the section's time budget ({self.plan.budget_s:.0f} s) was spent"
        free = _fresh_gpu(self.device)
        if free is not None and need_bytes > GPU_MEMORY_SHARE * free:
            return (f"needs about {need_bytes / 2**30:.1f} GiB by workers.groups.member_training_bytes; "
                    f"{free / 2**30:.1f} GiB of the GPU is free")
        return None

    def add(self, shape: str, k: int, side: str, need_bytes: int, flops_per_token: float, measure) -> None:
        """One row: `measure()` returns (tokens/s, warm-up seconds, peak GPU MiB or None)."""
        base = {"shape": shape, "members": k, "side": side}
        why = self._why_not(need_bytes)
        if why is None:
            self.echo(f"members per GPU: {shape}, K = {k}, {side}")
            try:
                rate, warmup_s, peak_mib = measure()
            except Exception as exc:  # noqa: BLE001 - one row's failure is that row's result, not the section's end
                first_line = (str(exc).strip().splitlines() or [""])[0][:300]
                why = f"failed: {type(exc).__name__}: {first_line}"
        _fresh_gpu(self.device)
        if why is not None:
            self.echo(f"members per GPU: {shape}, K = {k}, {side}: skipped ({why})")
            self.rows.append(base | {"skipped": why})
        else:
            share = rate * flops_per_token / self.peak_bf16 if self.peak_bf16 else None
            self.rows.append(base | {"tokens_per_s": rate, "bf16_peak_share": share, "peak_gpu_mib": peak_mib,
                                     "warmup_s": warmup_s})
        if self.on_row:
            self.on_row()

    def local(self, loop_factory) -> tuple:
        """Measure a loop in this process: (tokens/s, warm-up s, peak GPU MiB)."""
        loop = loop_factory()
        try:
            rate, warmup_s = _timed(loop, self.steps, self.rounds)
        finally:
            del loop
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None
        return rate, warmup_s, peak

    def workers(self, workers: list, setups: list) -> tuple:
        """Measure Ray workers side by side: (aggregate tokens/s, warm-up s, their peak GPU MiB summed)."""
        try:
            ray.get(setups)
            rate, warmup_s = _timed(workers, self.steps, self.rounds)
            peaks = ray.get([w.peak_gpu_mib.remote() for w in workers])
        finally:
            ray.get([w.release.remote() for w in workers])
        return rate, warmup_s, (sum(peaks) if self.device == "cuda" else None)


@dataclass
class _Shape:
    """One shape's inputs for its rows: blocks of its vocabulary, the config, one seeded member to copy."""

    label: str
    blocks: np.ndarray
    blocks_ref: object  # the blocks in Ray's object store, for the actors
    special: object
    config: object
    base: torch.nn.Module  # a member with the initial weights of seed --seed, on the CPU
    flops_per_token: float
    member_bytes: int


def _shape(p: Prepared, opts: BenchOptions, sizes: Sizes, echo, label: str, dims: tuple, tokenizer_dir) -> _Shape:
    from workers.models import bert_config

    hidden, heads, vocab = dims
    blocks, special = _blocks_for_vocab(p, opts, vocab, sizes, echo, tokenizer_dir)
    config = bert_config(max(vocab, special.vocab_size), hidden, heads, 1, max_position=SEQ_LEN)
    tokens = BATCH_SIZE * SEQ_LEN
    return _Shape(label, blocks, ray.put(blocks), special, config, seeded_mlm(config, opts.seed, "cpu"),
                  mlm_training_flops(config, tokens, SEQ_LEN, int(MASK_PROB * tokens)) / tokens,
                  _member_bytes(config, pretrain_settings(opts, opts.precision)))


def _group(opts: BenchOptions, k: int, compiled: bool) -> list:
    return [replace(pretrain_settings(opts, opts.precision, opts.seed + i), compile=compiled) for i in range(k)]


def _local(rows: GpuRows, shape: _Shape, opts: BenchOptions, k: int, stacked: bool, compiled: bool):
    """A measurement of K members in this process: one stack, or (K = 1) the member loop. Every member starts
    from copies of one seeded member (initialising 64 paper-shape members one by one takes minutes; the
    values do not change the speed); each keeps its own data order, masks and dropout."""
    def measure():
        models = [shape.base] * k if stacked else [copy.deepcopy(shape.base) for _ in range(k)]
        return rows.local(lambda: (StackLoop if stacked else TurnLoop)(models, shape.blocks, shape.special,
                                                                       _group(opts, k, compiled), rows.device))
    return measure


def _fractional(rows: GpuRows, pool: _Pool, shape: _Shape, opts: BenchOptions, k: int):
    """A measurement of K one-member actors side by side (each member seeded in its own actor)."""
    def measure():
        workers = pool.take(k)
        setups = [w.setup.remote(shape.config.to_dict(), shape.blocks_ref, shape.special, [s], False)
                  for w, s in zip(workers, _group(opts, k, False))]
        return rows.workers(workers, setups)
    return measure


def _row_order(plan: GpuPlan, shapes: list[_Shape]) -> list[tuple[_Shape, int, str]]:
    """Every row as (shape, K, side), the cheapest and most wanted first, since rows past the time budget are
    skipped: first the eager stacks and one member alone (every shape and K); then the paper shape's member
    alone compiled, each shape's stack compiled at the first compile K, and the fractional actors at the K
    between the smallest and the largest (the comparisons the targets name); then the rest (compiling takes
    the longest, and starting dozens of actor processes a while)."""
    tiers: list[tuple[int, _Shape, int, str]] = []
    for shape in shapes:
        tiers += [(0, shape, 1, "alone")] + [(0, shape, k, "stack") for k in plan.members]
    largest = max(plan.fractional_members, default=0)
    for i, shape in enumerate(shapes):
        tiers.append((1 if i == 0 else 2, shape, 1, "alone, compiled"))
        tiers += [(1 if j == 0 else 2, shape, k, "stack, compiled") for j, k in enumerate(plan.compile_members)]
        tiers += [(1 if 1 < k < largest else 2, shape, k, "fractional") for k in plan.fractional_members]
    return [(shape, k, side) for _, shape, k, side in sorted(tiers, key=lambda t: t[0])]


def _plan_rows(rows: GpuRows, pool: _Pool, shapes: list[_Shape], opts: BenchOptions) -> None:
    """Measure every row of `_row_order`, each as its side needs."""
    for shape, k, side in _row_order(rows.plan, shapes):
        if side == "fractional":
            rows.add(shape.label, k, side, k * (shape.member_bytes + ACTOR_CONTEXT_BYTES), shape.flops_per_token,
                     _fractional(rows, pool, shape, opts, k))
        else:
            stacked, compiled = side.startswith("stack"), side.endswith("compiled")
            rows.add(shape.label, k, side, k * shape.member_bytes, shape.flops_per_token,
                     _local(rows, shape, opts, k, stacked, compiled))


def bench_groups_gpu(p: Prepared, opts: BenchOptions, sizes: Sizes, echo, peak_bf16: float | None,
                     plan: GpuPlan = GpuPlan(), device: str = "cuda", on_row=None) -> dict:
    """The CUDA rows (module docstring) for `plan`, in `_plan_rows`' order; `on_row(result so far)` is called
    after each row (a caller may save partial results). `device="cpu"` only exercises this code path."""
    steps, rounds = sizes.pretrain_steps, max(2, min(3, sizes.pretrain_rounds))
    rows = GpuRows(plan, peak_bf16, steps, rounds, device, echo)

    def result() -> dict:
        return {"device": device, "precision": opts.precision, "rows": rows.rows, "steps_per_round": steps,
                "rounds": rounds, "wall_s": time.perf_counter() - rows.t0, "budget_s": plan.budget_s,
                "what": "aggregate real tokens/s of K members pre-training, each side alone after a warm-up round "
                        "(which holds any compilation: warmup_s): K fractional-GPU actors (one process and one member "
                        "each, the member loop; their peak memory summed, CUDA contexts not counted), the K as one "
                        "stack (workers/groups.py) in one process, that stack compiled (compile: true), and one member "
                        "alone with the member loop, eager and compiled; members in this process start from copies of "
                        "one seeded member; share of the bf16 matmul peak measured in this run"}

    rows.on_row = (lambda: on_row(result())) if on_row else None
    pool = _Pool(max(plan.fractional_members, default=1), device)
    try:
        shapes = [_shape(p, opts, sizes, echo, label, dims, plan.tokenizers.get(dims[2]))
                  for label, dims in plan.shapes.items()]
        _plan_rows(rows, pool, shapes, opts)
    finally:
        pool.close()
    return result()


def bench_groups(p: Prepared, opts: BenchOptions, sizes: Sizes, echo, machine: dict) -> dict:
    """The section for the --device: GPU rows on CUDA, stack against actors per core on CPU (Ray connected)."""
    if opts.device == "cuda":
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
