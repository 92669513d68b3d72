"""Atomic checkpoints: save, find the latest, load the state and the weights back, and finished weights.

A checkpoint is a directory `step-NNNNNNN/` of safetensors and JSON files only (the format and the checks
that refuse anything else, pickles above all, are in workers/storage/checkpoint_format.py); `check_checkpoints`
runs those checks on every checkpoint under a root before anything is loaded.

On a path a checkpoint is written under a temporary name and renamed, so a directory with a final
name is always complete; older checkpoints are pruned after the rename.

On a URI (`s3://bucket/prefix`, `gs://...`, `file:///mnt/shared/...`: anything
`pyarrow.fs.FileSystem.from_uri` opens) object stores have no rename, so a checkpoint is complete
when its `COMPLETE` marker exists: the files are uploaded first, the marker last. Reading a URI
checkpoint downloads it to a node-local cache and returns that local directory, so the training
loops only ever see local paths. The paths and URIs themselves are workers/storage/files.py's.

A write that fails because the disk (or a quota) is full raises a `CommitteeError` naming the path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

from workers.errors import CheckpointError

# the rest of the storage and format API, re-exported: callers use these as workers.storage.checkpoint.<name>
from workers.storage.checkpoint_format import (
    CHECKPOINT_FILES,
    COMPLETE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    OPTIMIZER_TENSOR,
    PICKLE_SUFFIXES,
    REQUIRED_FILES,
    STATE_FILE,
    STATE_FORMAT,
    check_step_dir,
    refusal,
)
from workers.storage.files import (
    FIX_STAGING,
    clear_local_cache,
    disk_full_is_user_error,
    exists,
    is_uri,
    join,
    list_dirs,
    local_dir,
    parent,
    read_bytes,
    remove,
    upload,
    write_bytes,
)

# ----------------------------------------------------------------------------------------------
# a state dict as safetensors + JSON, and back


def _split_state(state: dict, step: int) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """(state.json's object, optimizer.safetensors' tensors or None) for the state dict `state`.

    `state` may hold "optimizer" (an optimizer's state_dict), "scheduler" (a scheduler's state_dict,
    plain values) and any JSON-serialisable counters; its "step", if any, must be `step`.
    """
    if state.get("step", step) != step:
        raise ValueError(f"state['step'] is {state['step']} but the checkpoint is for step {step}")
    record = {"format": STATE_FORMAT, **{k: v for k, v in state.items() if k != "optimizer"}, "step": step}
    if "optimizer" not in state:
        return record, None
    record["optimizer"], tensors = _split_optimizer(state["optimizer"])
    return record, tensors


def _split_optimizer(optimizer_state: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """An optimizer state_dict as (JSON part: param_groups + non-tensor values, tensors by name)."""
    tensors, scalars = {}, {}
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{int(index)}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(int(index)), {})[name] = value
    return {"param_groups": optimizer_state["param_groups"], "scalars": scalars}, tensors


def _join_optimizer(section: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The optimizer state_dict that `_split_optimizer` split (JSON lists of hyper-parameters such as
    `betas` become tuples again, as the optimizer made them; `params` stays a list)."""
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        index, name = OPTIMIZER_TENSOR.fullmatch(key).groups()
        state.setdefault(int(index), {})[name] = tensor
    for index, entries in section["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in section["param_groups"]]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def _write_checkpoint_files(directory: Path, model, state_text: str,
                            optimizer_tensors: dict[str, torch.Tensor] | None) -> None:
    from safetensors.torch import save_file

    model.save_pretrained(directory, safe_serialization=True)
    if optimizer_tensors is not None:
        save_file(optimizer_tensors, str(directory / OPTIMIZER_FILE))
    (directory / STATE_FILE).write_text(state_text)


# ----------------------------------------------------------------------------------------------
# checkpoints


def _step_names(root) -> list[str]:
    """Names of the complete checkpoints under `root`, oldest first."""
    names = [n for n in list_dirs(root) if n.startswith("step-")]
    if is_uri(root):
        names = [n for n in names if exists(join(root, n, COMPLETE))]
    return names


def check_checkpoints(root, required_keys: tuple[str, ...] = ()) -> None:
    """Check every complete checkpoint under `root` (a path or URI; a missing one holds none) before
    anything is loaded: only the expected file names, safetensors headers that parse, a state.json
    object with format, step and `required_keys`. Raises CheckpointError naming the file at fault."""
    for name in _step_names(root):
        check_step_dir(join(root, name), required_keys)


def latest(root, required_keys: tuple[str, ...] = ()) -> Path | None:
    """The newest complete checkpoint under `root` as a local directory (downloaded from a URI), or None.

    Every checkpoint under `root` is checked first (`check_checkpoints`): a bad one raises CheckpointError.
    """
    names = _step_names(root)
    if not names:
        return None
    check_checkpoints(root, required_keys)
    return local_dir(join(root, names[-1]))


def save(root, step: int, model, state: dict, keep: int = 1):
    """Write checkpoint `step-N` under `root` (atomically, see the module doc) and prune older ones.

    `state`: optional "optimizer" and "scheduler" state dicts plus JSON-serialisable counters.
    """
    name = f"step-{step:07d}"
    record, optimizer_tensors = _split_state(state, step)
    state_text = json.dumps(record)  # fails on a non-JSON value before anything is written
    if is_uri(root):
        final = join(root, name)
        with tempfile.TemporaryDirectory(prefix="committee-ckpt-") as tmp:
            with disk_full_is_user_error(tmp, FIX_STAGING):
                _write_checkpoint_files(Path(tmp), model, state_text, optimizer_tensors)
            upload(tmp, final)
        write_bytes(join(final, COMPLETE), b"")
        for old in [n for n in list_dirs(root) if n.startswith("step-") and n < name][: None if keep <= 1 else -(keep - 1)]:
            remove(join(root, old))
        return final
    root = Path(root)
    final = root / name
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        with disk_full_is_user_error(final):
            root.mkdir(parents=True, exist_ok=True)
            _write_checkpoint_files(tmp, model, state_text, optimizer_tensors)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the write failed
    for old in _step_names(root)[:-keep]:
        shutil.rmtree(root / old, ignore_errors=True)
    return final


def load_state(path: str | Path, required_keys: tuple[str, ...] = ()) -> dict:
    """The state dict saved in the local checkpoint directory `path`, as `save` was given it
    ("optimizer" rebuilt as a state_dict with CPU tensors), after the checks of `check_checkpoints`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    record = check_step_dir(path, required_keys)
    state = {k: v for k, v in record.items() if k != "format"}
    if "optimizer" in record:
        try:
            tensors = load_file(str(path / OPTIMIZER_FILE))
        except SafetensorError as exc:
            raise refusal(path, f"{OPTIMIZER_FILE} cannot be read ({exc})") from None
        state["optimizer"] = _join_optimizer(record["optimizer"], tensors)
    return state


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The model weights (model.safetensors) of the local checkpoint directory `path`, on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(Path(path) / MODEL_FILE), device=str(device))
    except SafetensorError as exc:
        raise refusal(path, f"{MODEL_FILE} cannot be read ({exc})") from None


def load_pretrained(model_cls, path, **kwargs):
    """`model_cls.from_pretrained` on the weights saved at `path` (a directory, or a URI downloaded to
    this process's cache), from safetensors only: a `pytorch_model.bin` beside them is never read."""
    local = local_dir(path)
    if not (local / MODEL_FILE).is_file() and not (local / f"{MODEL_FILE}.index.json").is_file():
        raise CheckpointError(f"no {MODEL_FILE} in {path}: weights are loaded from safetensors only (pickled "
                              f"*.bin files are never read, unpickling can run code); save them again with "
                              f"save_pretrained(..., safe_serialization=True) or train them again")
    return model_cls.from_pretrained(str(local), use_safetensors=True, **kwargs)


def save_final(path, model, extra_files: dict[str, str] | None = None):
    """Write finished weights to `path` atomically; on a URI the extra files are written last (markers)."""
    if is_uri(path):
        with tempfile.TemporaryDirectory(prefix="committee-final-") as tmp:
            with disk_full_is_user_error(tmp, FIX_STAGING):
                model.save_pretrained(tmp, safe_serialization=True)
            upload(tmp, path)
        for name, text in (extra_files or {}).items():
            write_bytes(join(path, name), text.encode())
        return path
    path = Path(path)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        with disk_full_is_user_error(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(tmp, safe_serialization=True)
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the write failed
    return path
