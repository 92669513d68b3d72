"""The Tune function trainable of `committee sweep`: one trial = one point and one member index.

A trial trains the scratch member of index i at its point, then the pre-trained member of index i
(same seed, same fine-tuning data, order and head initialisation: the gap measures pre-training
alone), both with `workers.member.run_member`, the code `committee run` uses. After each fine-tuning
epoch of the pre-trained member it reports validation accuracy of both arms and their gap, so an ASHA
scheduler can stop a poor trial early; the last report adds test accuracy, pre-training tokens and
`final: True`. A trial that fails and is retried resumes: a finished member is loaded from its
result.npz, an unfinished pre-training from its last checkpoint (the member directory is per trial).

The token arrays arrive by object reference: the driver `ray.put`s each data configuration once and
passes the table of references with `tune.with_parameters`; a trial fetches only its own.
"""

from __future__ import annotations

import json

import ray
from ray import tune
from ray.tune.search.repeater import TRIAL_INDEX

from orchestrator.sweep_space import MEMBER_INDEX, data_id, point_config, pretrain_steps, trial_specs
from workers import checkpoint
from workers.member import MemberResult, MemberSpec, SharedArrays, load_result, run_member
from workers.voting import accuracy

CURVE_FILE = "val_curve.json"  # a member's validation accuracy after each fine-tuning epoch


def split_trial_config(config: dict) -> tuple[dict, int]:
    """({dotted key: value} of the point, member index) from a trial's config (grid/random or optuna)."""
    index = config.get(MEMBER_INDEX, config.get(TRIAL_INDEX, 0))
    values = {k: v for k, v in config.items() if k not in (MEMBER_INDEX, TRIAL_INDEX)}
    return values, int(index)


def validation_accuracy(model, arrays: SharedArrays, precision: str) -> float:
    from workers.finetune import predict_logits

    return accuracy(predict_logits(model, arrays.val, arrays.special.pad, precision=precision), arrays.val_labels)


def member_with_curve(spec: MemberSpec, arrays: SharedArrays, on_epoch_accuracy=None) -> tuple[MemberResult, list]:
    """Run (or load, when it finished before) one member; returns its result and per-epoch val accuracy."""
    curve_path = checkpoint.join(spec.out_dir, CURVE_FILE)
    done, saved_curve = load_result(spec.out_dir), checkpoint.read_bytes(curve_path)
    if done is not None and saved_curve is not None:
        return done, json.loads(saved_curve)
    curve: list[float] = []

    def on_epoch(epoch: int, model) -> None:
        curve.append(validation_accuracy(model, arrays, spec.finetune.precision))
        if on_epoch_accuracy is not None:
            on_epoch_accuracy(epoch, curve[-1])

    result = run_member(spec, arrays, on_epoch=on_epoch)
    checkpoint.write_bytes(curve_path, json.dumps(curve).encode())
    return result, curve


def _epoch_metrics(epoch: int, accuracy_now: float, scratch_curve: list) -> dict:
    scratch_now = scratch_curve[min(epoch, len(scratch_curve)) - 1]
    return {"epoch": epoch, "val_accuracy": accuracy_now, "scratch_val_accuracy": scratch_now,
            "val_gap": accuracy_now - scratch_now, "final": False}


def final_metrics(pre: MemberResult, scratch: MemberResult, point_id: str, index: int) -> dict:
    return {"val_accuracy": pre.val_accuracy, "scratch_val_accuracy": scratch.val_accuracy,
            "val_gap": pre.val_accuracy - scratch.val_accuracy, "test_accuracy": pre.test_accuracy,
            "scratch_test_accuracy": scratch.test_accuracy, "gap": pre.test_accuracy - scratch.test_accuracy,
            "pretrain_tokens": pre.pretrain_stats.get("tokens", 0), "pretrain_steps": pre.pretrain_stats.get("steps", 0),
            "pretrain_final_loss": pre.pretrain_stats.get("final_loss"), "point_id": point_id, "member_index": index,
            "seed": pre.seed, "final": True}


def member_pair(config: dict, plan: dict) -> None:
    """Tune function trainable. `plan`: {"sweep": SweepConfig, "data": {data id: {"arrays": ObjectRef,
    "blocks": int}}, "trials_root": path or URI, "threads": int}."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(max(1, int(plan["threads"])))
    hf_logging.disable_progress_bar()
    values, index = split_trial_config(config)
    point = point_config(plan["sweep"], values)
    data = plan["data"][data_id(point)]
    arrays = ray.get(data["arrays"])
    out_root = checkpoint.join(plan["trials_root"], tune.get_context().get_trial_id())
    steps = pretrain_steps(plan["sweep"], point, data["blocks"])
    scratch_spec, pre_spec = trial_specs(point, index, steps, out_root)
    scratch, scratch_curve = member_with_curve(scratch_spec, arrays)

    def report_epoch(epoch: int, accuracy_now: float) -> None:
        tune.report(_epoch_metrics(epoch, accuracy_now, scratch_curve))

    pre, _ = member_with_curve(pre_spec, arrays, on_epoch_accuracy=report_epoch)
    tune.report(final_metrics(pre, scratch, point.point_id, index))
