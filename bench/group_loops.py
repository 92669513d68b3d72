"""The loops of the "members per GPU" section (bench/sections/groups.py, groups_gpu.py): K members as one stack
or in turn, the Ray worker that trains one side, and the alternating rounds that time them side by side."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import ray
import torch

from bench.loops import seeded_mlm
from bench.timing import sync


class StackLoop:
    """K members as one stack: each `step()` trains every member one batch (workers.train.groups.group_train_step)."""

    def __init__(self, models: list, blocks: np.ndarray, special, settings: list, device: str):
        from workers.model.precision import resolve_here
        from workers.model.stacked import StackedMLM
        from workers.train.groups import group_optimizer

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
