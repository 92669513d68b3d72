"""The Ray actor behind `committee bench`'s serving and scaling figures: one worker process that
holds committee members (and optionally the deep model), answers inference requests and pre-trains
with the member loop. Thin: the work is in workers.bench, workers.pretrain and transformers."""

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
        """Members built under their seeds (eval mode); with `deep_config`, also the deep model (seed 0)."""
        import torch
        from transformers import BertConfig

        from workers.models import build_classifier
        from workers.packed import PackedCommittee

        def build(cfg: dict, seed: int):
            torch.manual_seed(seed)
            return build_classifier(BertConfig.from_dict(cfg), num_labels).to(self.device).eval()

        # Each model served through the packed kernels (K = 1): the fastest way found to run one
        # member, and the same one for the deep model, so neither side gets a trick the other lacks.
        self.members = [PackedCommittee.from_members([build(config, s)]) for s in seeds]
        self.deep = PackedCommittee.from_members([build(deep_config, 0)]) if deep_config else None
        return len(self.members)

    def infer(self, input_ids, attention_mask) -> tuple:
        """Every member held here, one after another: (logits [k, b, classes] float32, per-member seconds)."""
        import torch

        from workers.bench import timed_packed_forward

        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        return timed_packed_forward(self.members, ids, mask, self.device)

    def infer_deep(self, input_ids, attention_mask) -> tuple:
        import torch

        from workers.bench import timed_packed_forward

        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        logits, seconds = timed_packed_forward([self.deep], ids, mask, self.device)
        return logits[0], seconds[0]

    def ping(self) -> float:
        return time.perf_counter()

    def setup_pretrain(self, config: dict, blocks, special, settings, seed: int) -> None:
        """A fresh member (seeded) and the member loop over `blocks`, as every training command runs it."""
        import torch
        from transformers import BertConfig

        from workers.bench import PretrainLoop
        from workers.models import build_mlm

        torch.manual_seed(seed)
        model = build_mlm(BertConfig.from_dict(config)).to(self.device)
        self.loop = PretrainLoop("member", model, blocks, special, settings, reference=False, device=self.device)

    def pretrain_steps(self, steps: int) -> tuple[int, float, float]:
        """(real tokens, wall seconds, CPU seconds of this process) of `steps` member-loop steps."""
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = sum(self.loop.step() for _ in range(steps))
        return tokens, time.perf_counter() - t0, time.process_time() - c0

    def peak_rss_mib(self) -> float:
        from workers.bench import peak_rss_mib

        return peak_rss_mib()

    def peak_gpu_mib(self) -> float:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if self.device.startswith("cuda") else 0.0
