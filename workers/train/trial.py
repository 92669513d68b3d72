"""One trial of `committee sweep`: a pre-trained member and its scratch twin, as planned members.

The sweep's Tune trainable (`orchestrator.sweep.tune.run_trial`) plans the trial's two members from the point
Tune sampled (`TrialMembers`, made by `orchestrator.run.plan`) and hands them to `member_pair`, which runs them
here without any sweep config and reports through the callback it is given.

A trial trains (or reuses, below) the scratch member of index i at its point and the pre-trained
member of index i (same seed, same fine-tuning data, order and head initialisation: the gap measures
pre-training alone), both with `workers.train.member.run_member`, the code `committee run` uses. After each fine-tuning
epoch of the pre-trained member it reports validation accuracy of both arms and their gap, so an ASHA
scheduler can stop a poor trial early; the last report adds test accuracy, pre-training tokens and
`final: True`. A trial that fails and is retried resumes: a finished member is loaded from its
result.npz, an unfinished pre-training from its last checkpoint (the member directory is per trial).

Scratch twins are shared: a twin depends only on its settings, seed and the task arrays (`twin_key`), which
points that differ only in pre-training share. The first
trial to train a twin publishes it to the sweep's twin store (`<storage root>/twins/<key>/twin.npz`,
one file written atomically); a later trial with the same key copies it into its own scratch-NN
directory instead of training it again, so every reader of trial directories sees the same files. A trial
whose twin is not ready pre-trains its member first and looks again (`twin_ready`).

The token arrays arrive by object reference: the driver `ray.put`s each data configuration once and
passes the table of references with `tune.with_parameters`; a trial fetches only its own. Nothing here
imports Ray or Tune.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Callable

import numpy as np

from workers.committee.voting import accuracy
from workers.storage import checkpoint
from workers.train.member import (
    RESULT_FILE,
    MemberResult,
    MemberSpec,
    Role,
    SharedArrays,
    load_result,
    pretrained_mlm,
    run_member,
)

log = logging.getLogger(__name__)

CURVE_FILE = "val_curve.json"  # a member's validation accuracy after each fine-tuning epoch
TWIN_FILE = "twin.npz"  # in the twin store: a finished twin's result.npz and curve in one file
TWIN_RECORD = "twin.json"  # in a trial's scratch directory: {"key", "reused", "trained_in"}
TWIN_KEY_EXCLUDED = ("out_dir",)  # where a member is written, not what it learns


@dataclass(frozen=True)
class TrialMembers:
    """A trial's two members, planned: the scratch twin and the pre-trained member of one index at one point."""

    scratch: MemberSpec
    pretrained: MemberSpec
    point_id: str



def validation_accuracy(model, arrays: SharedArrays, precision: str) -> float:
    from workers.train.finetune import predict_logits

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


# ----------------------------------------------------------------------------------------------
# the identity of a scratch twin


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def task_arrays_digest(arrays: SharedArrays) -> str:
    """sha256 of what a scratch member trains and is evaluated on: the train / val / test token arrays
    (ids and offsets), their labels, the class count and the special ids (pad and vocabulary size shape
    the model). Each array enters with its name, dtype and shape, so equal bytes of another layout differ.
    The pre-training blocks are left out: a scratch member never reads them."""
    h = hashlib.sha256()
    named = {"train.ids": arrays.train.ids, "train.offsets": arrays.train.offsets, "train_labels": arrays.train_labels,
             "val.ids": arrays.val.ids, "val.offsets": arrays.val.offsets, "val_labels": arrays.val_labels,
             "test.ids": arrays.test.ids, "test.offsets": arrays.test.offsets, "test_labels": arrays.test_labels}
    for name, array in named.items():
        array = np.ascontiguousarray(array)
        h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        h.update(memoryview(array).cast("B"))
    h.update(json.dumps({"num_classes": int(arrays.num_classes), "special": asdict(arrays.special)},
                        sort_keys=True).encode())
    return h.hexdigest()


def twin_key(scratch: MemberSpec, arrays: SharedArrays) -> str:
    """The identity of a scratch twin: trials whose twins have equal keys train byte-identical members.

    In the key, because `workers.train.member.run_member` and the trial's validation curve read them for a
    scratch member:
    - name, role, index: the role picks the `init/scratch` weight stream; name and index are written
      into its result;
    - seed: its weights, head, dropout and fine-tuning data order all come from streams of this seed;
    - model: the shape of the classifier it builds;
    - pretrain: None for every scratch twin (the planner gives the scratch role none, so a point's
      pre-training settings never reach it); kept because a spec with settings there would pre-train;
    - finetune: every fine-tuning setting (lr, epochs, batch size, precision for training and
      evaluation, ...);
    - the task arrays (`task_arrays_digest`): what it trains on and is evaluated on.
    Left out: `out_dir` (where it is written). What the key cannot see is the device a trial runs on:
    every trial of a sweep gets the same resources, so every twin trains on the same kind of device.
    """
    if scratch.role is not Role.SCRATCH:
        raise ValueError(f"twin_key takes a scratch member's spec, not a {scratch.role.value} one ({scratch.name})")
    settings = {f.name: getattr(scratch, f.name) for f in fields(scratch) if f.name not in TWIN_KEY_EXCLUDED}
    settings = {k: asdict(v) if is_dataclass(v) else v for k, v in settings.items()}
    settings["role"] = scratch.role.value
    return "t-" + _digest({"member": settings, "task": task_arrays_digest(arrays)})[:20]


# ----------------------------------------------------------------------------------------------
# the twin store: scratch twins shared by trials with equal twin keys


def twin_path(twins_root, key: str):
    """Where the store keeps the twin of `key` (a path or URI)."""
    return checkpoint.join(twins_root, key, TWIN_FILE)


def has_finished_member(out_dir) -> bool:
    """Whether `out_dir` holds what `member_with_curve` loads instead of training: result and curve."""
    return checkpoint.exists(checkpoint.join(out_dir, RESULT_FILE)) and checkpoint.exists(
        checkpoint.join(out_dir, CURVE_FILE))


def write_twin_record(out_dir, key: str, reused: bool, trained_in: str) -> None:
    record = {"key": key, "reused": reused, "trained_in": trained_in}
    checkpoint.write_bytes(checkpoint.join(out_dir, TWIN_RECORD), json.dumps(record).encode())


def read_twin_record(out_dir) -> dict:
    """The trial's record of its twin; {} for a scratch member finished before twins were shared."""
    raw = checkpoint.read_bytes(checkpoint.join(out_dir, TWIN_RECORD))
    return {} if raw is None else json.loads(raw)


def publish_twin(twins_root, key: str, out_dir) -> None:
    """Put the finished twin in `out_dir` into the store as one file (result.npz's bytes, the validation
    curve, where it was trained), written atomically: a reader sees a whole twin or none. Two trials that
    trained the same twin at once both write a whole file; the last one stays."""
    result_bytes = checkpoint.read_bytes(checkpoint.join(out_dir, RESULT_FILE))
    curve_text = checkpoint.read_bytes(checkpoint.join(out_dir, CURVE_FILE)).decode()
    buffer = io.BytesIO()
    np.savez(buffer, result=np.frombuffer(result_bytes, dtype=np.uint8), val_curve=np.array(curve_text),
             trained_in=np.array(str(out_dir)))
    checkpoint.write_bytes(twin_path(twins_root, key), buffer.getvalue())


def fetch_twin(twins_root, key: str, out_dir) -> bool:
    """Copy the store's twin of `key` into `out_dir` (record first, result, curve last: the member counts as
    finished once both exist); False when the store holds none (or an unreadable one, which is trained again)."""
    raw = checkpoint.read_bytes(twin_path(twins_root, key))
    if raw is None:
        return False
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as bundle:
            result_bytes, curve_text = bundle["result"].tobytes(), str(bundle["val_curve"])
            trained_in = str(bundle["trained_in"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("twin %s in %s cannot be read (%s): training it again", key, twins_root, exc)
        return False
    write_twin_record(out_dir, key, reused=True, trained_in=trained_in)
    checkpoint.write_bytes(checkpoint.join(out_dir, RESULT_FILE), result_bytes)
    checkpoint.write_bytes(checkpoint.join(out_dir, CURVE_FILE), curve_text.encode())
    return True


def twin_ready(spec: MemberSpec, arrays: SharedArrays, twins_root) -> bool:
    """Whether the trial's scratch twin can be had without training: its own finished one, or the store's.

    When not, the trial pre-trains its member first and looks again afterwards: trials that run at the
    same time and share a twin (the same seed at several points) finish pre-training at different times
    (a smaller corpus first), so the first to finish trains and publishes the twin while the others still
    pre-train, and they find it; looking only at the start, every one of them would train it."""
    return has_finished_member(spec.out_dir) or checkpoint.exists(twin_path(twins_root, twin_key(spec, arrays)))


def scratch_twin(spec: MemberSpec, arrays: SharedArrays, twins_root) -> tuple[MemberResult, list, dict]:
    """The trial's scratch twin: its own when already finished (a retried or resumed trial), else the store's
    copy of an equal twin, else trained here and published. Returns (result, validation curve, record:
    {"key", "reused", "trained_in"})."""
    key = twin_key(spec, arrays)
    if not has_finished_member(spec.out_dir) and not fetch_twin(twins_root, key, spec.out_dir):
        write_twin_record(spec.out_dir, key, reused=False, trained_in=str(spec.out_dir))
    result, curve = member_with_curve(spec, arrays)
    record = {"key": key, "reused": False, "trained_in": str(spec.out_dir), **read_twin_record(spec.out_dir)}
    if not record["reused"] and not checkpoint.exists(twin_path(twins_root, key)):
        publish_twin(twins_root, key, spec.out_dir)
    return result, curve, record


# ----------------------------------------------------------------------------------------------
# the trial


def _epoch_metrics(epoch: int, accuracy_now: float, scratch_curve: list, twin: dict) -> dict:
    scratch_now = scratch_curve[min(epoch, len(scratch_curve)) - 1]
    return {"epoch": epoch, "val_accuracy": accuracy_now, "scratch_val_accuracy": scratch_now,
            "val_gap": accuracy_now - scratch_now, "final": False, **_twin_metrics(twin)}


def _twin_metrics(twin: dict) -> dict:
    """Whether the trial's scratch twin was reused from another trial, and its key (last in a report, so
    Tune's progress table keeps its columns)."""
    return {"scratch_reused": bool(twin["reused"]), "twin_key": twin["key"]}


def final_metrics(pre: MemberResult, scratch: MemberResult, point_id: str, index: int, twin: dict) -> dict:
    """The trial's last report; `twin`: the record `scratch_twin` returned."""
    return {"val_accuracy": pre.val_accuracy, "scratch_val_accuracy": scratch.val_accuracy,
            "val_gap": pre.val_accuracy - scratch.val_accuracy, "test_accuracy": pre.test_accuracy,
            "scratch_test_accuracy": scratch.test_accuracy, "gap": pre.test_accuracy - scratch.test_accuracy,
            "pretrain_tokens": pre.pretrain_stats.get("tokens", 0), "pretrain_steps": pre.pretrain_stats.get("steps", 0),
            "pretrain_final_loss": pre.pretrain_stats.get("final_loss"), "point_id": point_id, "member_index": index,
            "seed": pre.seed, "final": True, **_twin_metrics(twin)}


def member_pair(members: TrialMembers, arrays: SharedArrays, twins_root, report: Callable[[dict], None]) -> None:
    """Run one trial: its scratch twin (its own, the store's, or trained here and published to `twins_root`) and
    its pre-trained member; `report` gets the metrics after each fine-tuning epoch of the pre-trained member
    (with the twin's at the same epoch), then the final ones (`final: True`)."""
    scratch_spec, pre_spec = members.scratch, members.pretrained
    if not twin_ready(scratch_spec, arrays, twins_root):
        pretrained_mlm(pre_spec, arrays, None)  # saved; run_member below loads it and fine-tunes
    scratch, scratch_curve, twin = scratch_twin(scratch_spec, arrays, twins_root)

    def report_epoch(epoch: int, accuracy_now: float) -> None:
        report(_epoch_metrics(epoch, accuracy_now, scratch_curve, twin))

    pre, _ = member_with_curve(pre_spec, arrays, on_epoch_accuracy=report_epoch)
    report(final_metrics(pre, scratch, members.point_id, pre_spec.index, twin))
