"""The Ray actor behind `committee bench`'s scaling and serving figures: one worker process that
holds committee members (and optionally the deep model), answers inference requests and pre-trains
with the member loop. Thin: the work is in bench.loops, bench.serving, workers.train.pretrain and transformers."""

from __future__ import annotations

import time

import ray


@ray.remote
class BenchWorker:
    """A worker of `num_threads` torch threads on `device` (a fractional-GPU actor sees one GPU as cuda)."""

    def __init__(self, num_threads: int, device: str = "cpu"):
        import torch
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(max(1, num_threads))
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.device = device
        self.members: list = []
        self.deep = None
        self.loop = None

    def load_classifiers(self, config: dict, seeds: list[int], num_labels: int, deep_config: dict | None = None) -> int:
        """Members of these seeds (eval mode); with `deep_config`, also the deep model (seed 0)."""
        from transformers import BertConfig

        from bench.serving import committee_members
        from workers.model.packed import PackedCommittee

        # Each model served through the packed kernels (K = 1): the fastest way found to run one
        # member, and the same one for the deep model, so neither side gets a trick the other lacks.
        members = committee_members(BertConfig.from_dict(config), num_labels, seeds, self.device)
        self.members = [PackedCommittee.from_members([m]) for m in members]
        if deep_config:
            deep = committee_members(BertConfig.from_dict(deep_config), num_labels, [0], self.device)
            self.deep = PackedCommittee.from_members(deep)
        return len(self.members)

    def infer(self, input_ids, attention_mask) -> tuple:
        """Every member held here, one after another: (logits [k, b, classes] float32, per-member seconds)."""
        from bench.serving import timed_packed_forward

        return timed_packed_forward(self.members, *self._on_device(input_ids, attention_mask), self.device)

    def infer_deep(self, input_ids, attention_mask) -> tuple:
        """The deep model: (logits [b, classes] float32, seconds)."""
        from bench.serving import timed_packed_forward

        logits, seconds = timed_packed_forward([self.deep], *self._on_device(input_ids, attention_mask), self.device)
        return logits[0], seconds[0]

    def _on_device(self, input_ids, attention_mask) -> tuple:
        import torch

        # arrays from Ray's object store are read-only: copied (a request is a few KiB) rather than shared
        return torch.tensor(input_ids, device=self.device), torch.tensor(attention_mask, device=self.device)

    def ping(self) -> float:
        return time.perf_counter()

    def setup_pretrain(self, config: dict, blocks, special, settings) -> None:
        """A fresh member (initial weights of `settings.seed`) and the member loop over `blocks`."""
        from transformers import BertConfig

        from bench.loops import PretrainLoop, seeded_mlm

        model = seeded_mlm(BertConfig.from_dict(config), settings.seed, self.device)
        self.loop = PretrainLoop("member", model, blocks, special, settings, reference=False, device=self.device)

    def pretrain_steps(self, steps: int) -> tuple[int, float, float]:
        """(real tokens, wall seconds, CPU seconds of this process) of `steps` member-loop steps."""
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = sum(self.loop.step() for _ in range(steps))
        return tokens, time.perf_counter() - t0, time.process_time() - c0

    def peak_rss_mib(self) -> float:
        from bench.timing import peak_rss_mib

        return peak_rss_mib()

    def peak_gpu_mib(self) -> float:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if self.device.startswith("cuda") else 0.0
