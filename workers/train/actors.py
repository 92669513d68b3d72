"""Thin Ray actors around the plain functions: members, the progress board and the committee voter."""

from __future__ import annotations

import os
import warnings

import ray


@ray.remote
class MemberActor:
    """Runs one member; torch uses as many threads as the CPUs the actor was given."""

    def __init__(self, num_threads: int):
        import torch
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(max(1, num_threads))
        hf_logging.disable_progress_bar()

    @staticmethod
    def _start_record() -> dict:
        """Where the member runs (and whether Ray restarted it after its process died): metrics.jsonl keeps it."""
        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated attribute here
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ctx.was_current_actor_reconstructed
        return {"phase": "start", "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "restarted": restarted}

    def run_group(self, specs, arrays, board) -> dict:
        """Runs a group of members (workers.train.groups: pre-trained as one stack, then fine-tuned one by one);
        returns {name: MemberResult}. A group of one is the solo loop (`workers.train.member.run_member`)."""
        from workers.train.groups import run_group

        def report(name: str, record: dict) -> None:
            board.update.remote(name, record)

        start = self._start_record()
        if len(specs) > 1:
            start["group"] = [s.name for s in specs]
        for spec in specs:
            report(spec.name, start)
        return run_group(specs, arrays, on_log=report)


@ray.remote(num_cpus=0, max_calls=1)
def gpu_memory_bytes() -> int | None:
    """The memory of the GPU this task was given (None without one): `members_per_actor: auto` sizes groups by it.
    `max_calls=1`: its worker exits after the call, so no idle process keeps a CUDA context (Ray gives GPU
    tasks that limit by default, but this one is declared without GPUs and asks for one per call)."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Collects members' progress records; the driver drains them into metrics.jsonl and a progress line."""

    def __init__(self):
        self._new: list[dict] = []
        self._latest: dict[str, dict] = {}

    def update(self, name: str, record: dict) -> None:
        record = {"member": name, **record}
        self._new.append(record)
        self._latest[name] = record

    def drain(self) -> tuple[list[dict], dict[str, dict]]:
        new, self._new = self._new, []
        return new, dict(self._latest)


@ray.remote(num_cpus=0)
class VoterActor:
    """Aggregates the members' outputs into committee decisions and soft labels (numpy math in workers.committee.voting).

    Classification (`vote`) and distillation (`soft_labels`, `prior_weights`) use the same rules; `evidence`
    adds what the reports' claims rest on (workers.committee.evidence: intervals, paired tests, diversity).
    """

    def vote(self, val_logits, test_logits, val_labels, test_labels, temperature: float) -> dict:
        from workers.committee.voting import committee_report

        return committee_report(val_logits, test_logits, val_labels, test_labels, temperature)

    def evidence(self, members: list[dict], val_labels, test_labels, temperature: float, seed: int) -> dict:
        from workers.committee.evidence import committee_evidence

        return committee_evidence(members, val_labels, test_labels, temperature, seed)

    def soft_labels(self, logits, rule: str, val_accuracy=None, temperature: float = 10.0):
        from workers.committee.voting import soft_labels

        return soft_labels(logits, rule, val_accuracy, temperature)

    def prior_weights(self, val_accuracy, temperature: float):
        from workers.committee.voting import prior_weights

        return prior_weights(val_accuracy, temperature)
