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

    def run(self, spec, arrays, board):
        from workers.member import run_member

        def report(record: dict) -> None:
            board.update.remote(spec.name, record)

        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated attribute here
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ctx.was_current_actor_reconstructed
        # where the member runs (and whether Ray restarted it after its process died): metrics.jsonl keeps it
        report({"phase": "start", "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "restarted": restarted})
        return run_member(spec, arrays, on_log=report)


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
    """Aggregates the members' soft labels into committee decisions (numpy math in workers.voting)."""

    def vote(self, val_logits, test_logits, val_labels, test_labels, temperature: float) -> dict:
        from workers.voting import committee_report

        return committee_report(val_logits, test_logits, val_labels, test_labels, temperature)
