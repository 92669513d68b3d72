"""Section 6 "members per GPU", its CUDA rows (the CPU rows, the loops and the table: bench/sections/groups.py).

The paper shape (hidden 768, vocab 30,522) and the quickstart's (hidden 128, vocab 8,000), for K = 1, 6, 32,
64: K fractional-GPU actors (one member each, the member loop), the K members as one stack in this process,
and (at the K of GPU_COMPILE_MEMBERS) that stack compiled (`compile: true`); and one member alone in this
process with and without compile. Tokens/s, the share of the bf16 matmul peak and the peak GPU memory. Each
side runs alone (a K = 64 stack and 64 actors do not fit the GPU together), in rounds after a warm-up (which
holds the compilation), the most wanted rows first (`_row_order`); a row that would not fit the free GPU
memory by `workers.train.groups.member_training_bytes`, or that would start after the section's time budget, is
skipped with a note, and one that fails is recorded with its error. `on_row` lets a caller save partial
results after every row (scripts/gpu_groups.py). Every side uses the benchmark's --precision, the same
seeds, masks and data order (workers.train.seeds).
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
from bench.group_loops import GroupBenchWorker, StackLoop, TurnLoop, kill_workers, round_rates, run_side
from bench.loops import seeded_mlm
from bench.options import (
    BATCH_SIZE,
    MASK_PROB,
    MODELS,
    SEQ_LEN,
    TOKENIZER_ORDER_SEED,
    BenchOptions,
    Sizes,
    pretrain_settings,
)
from bench.prepare import Prepared
from bench.timing import median

GPU_MEMBERS = (1, 6, 32, 64)
GPU_COMPILE_MEMBERS = (32, 64)  # the K whose stack also runs compiled (each new K may compile again)
GPU_MEMORY_SHARE = 0.9  # a row runs when its estimated memory fits this share of the GPU's free memory
ACTOR_CONTEXT_BYTES = 600 * 2**20  # what one more process's CUDA context takes on the GPU (about)
GPU_BUDGET_S = 600.0  # rows that would start later than this after the section began are skipped
GPU_SHAPES = {"hidden 768, vocab 30,522": (768, 12, 30522), "hidden 128, vocab 8,000": (128, 2, 8000)}


def _blocks_for_vocab(p: Prepared, opts: BenchOptions, vocab_size: int, sizes: Sizes, echo,
                      tokenizer_dir: str | None = None) -> tuple:
    """(packed blocks, special ids) for `vocab_size`: the prepared ones when their tokenizer has that
    vocabulary, else those of `tokenizer_dir` (a saved tokenizer) or of the product's cached tokenizer of
    that size, on the same articles."""
    if MODELS[opts.model]["vocab"] == vocab_size and tokenizer_dir is None:
        return p.packed, p.special
    from orchestrator.run.prepare import tokenizer_for
    from workers.data import loading as wdata
    from workers.text.corpus import encode, pack_blocks
    from workers.text.tokenizer import load_tokenizer
    from workers.train.pretrain import SpecialIds

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
        kill_workers(self.workers)
        self.workers = []


def _member_bytes(config, settings) -> int:
    """`workers.train.groups.member_training_bytes` for a benchmark shape."""
    from workers.model.bert import ModelSettings
    from workers.train.groups import member_training_bytes

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
    run_side(side, steps)
    warmup_s = time.perf_counter() - t0
    return median(round_rates({"side": side}, steps, rounds, warmup=False)["side"]), warmup_s


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
            return (f"needs about {need_bytes / 2**30:.1f} GiB by workers.train.groups.member_training_bytes; "
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
    from workers.model.bert import bert_config

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
                        "stack (workers/train/groups.py) in one process, that stack compiled (compile: true), and one member "
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


