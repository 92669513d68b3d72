"""Atomic checkpoints plus the storage they live on: a local (or shared) path, or a pyarrow.fs URI.

A checkpoint is a directory `step-NNNNNNN/` holding exactly these files, and nothing else:
- `model.safetensors`, `config.json` (and `generation_config.json` if transformers writes one):
  `save_pretrained` output;
- `optimizer.safetensors`: the optimizer's per-parameter tensors, named `state.<param index>.<name>`
  (e.g. `state.3.exp_avg`); only when the saved state has an optimizer;
- `state.json`: everything else: `format`, `step`, the caller's counters, the optimizer's
  `param_groups` (and any non-tensor per-parameter value) and the scheduler's state dict;
- `COMPLETE`: on a URI only, the marker of a finished upload.
Nothing is ever unpickled: a checkpoint is read with safetensors and json only, and one holding any
other file (a `state.pt` of an older version, a planted `*.bin` or `*.pkl`) is refused with a
`CheckpointError` before anything in it is read; `check_checkpoints` runs the same check up front.

On a path a checkpoint is written under a temporary name and renamed, so a directory with a final
name is always complete; older checkpoints are pruned after the rename.

On a URI (`s3://bucket/prefix`, `gs://...`, `file:///mnt/shared/...`: anything
`pyarrow.fs.FileSystem.from_uri` opens) object stores have no rename, so a checkpoint is complete
when its `COMPLETE` marker exists: the files are uploaded first, the marker last. Reading a URI
checkpoint downloads it to a node-local cache and returns that local directory, so the training
loops only ever see local paths. Paths stay `Path`s; URIs stay `str`s (`join` keeps a `?query`).

A write that fails because the disk (or a quota) is full raises a `CommitteeError` naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch

from workers.errors import CheckpointError, CommitteeError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
COMPLETE = "COMPLETE"  # marker of a finished upload (URIs only)
CHECKPOINT_FILES = frozenset({MODEL_FILE, "config.json", "generation_config.json", OPTIMIZER_FILE, STATE_FILE,
                              COMPLETE})
REQUIRED_FILES = (MODEL_FILE, "config.json", STATE_FILE)
STATE_FORMAT = 1  # version of the state.json + optimizer.safetensors layout
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")

_STEP_DIR = re.compile(r"step-(\d+)")
_OPTIMIZER_TENSOR = re.compile(r"state\.(\d+)\.(.+)")
_MAX_SAFETENSORS_HEADER_BYTES = 100 * 2**20  # the limit safetensors itself puts on a header
_NEARLY_FULL_BYTES = 2**20  # a failed write with less free space than this is taken for a full disk
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FIX_DESTINATION = "free space there or point --run-dir / storage.uri elsewhere"
_FIX_STAGING = ("free space there or set TMPDIR to a larger disk (uploads to storage.uri are staged there), "
                "or point --run-dir / storage.uri elsewhere")


# ----------------------------------------------------------------------------------------------
# storage: paths and pyarrow.fs URIs behind one small API


def is_uri(path) -> bool:
    return isinstance(path, str) and "://" in path


def join(base, *parts: str):
    """`base/part/...`: a Path for a path, a str for a URI (its `?query`, e.g. an S3 endpoint, kept last)."""
    if not is_uri(base):
        return Path(base).joinpath(*parts)
    head, sep, query = base.partition("?")
    return "/".join([head.rstrip("/"), *parts]) + sep + query


def parent(path):
    """The directory holding `path` (a URI keeps its `?query`)."""
    if not is_uri(path):
        return Path(path).parent
    head, sep, query = path.partition("?")
    return head.rstrip("/").rsplit("/", 1)[0] + sep + query


def _open(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)  # (filesystem, path inside it)


def exists(path) -> bool:
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs as pafs

    fs, inner = _open(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def read_bytes(path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    if not is_uri(path):
        return Path(path).read_bytes() if Path(path).is_file() else None
    if not exists(path):
        return None
    fs, inner = _open(path)
    with fs.open_input_stream(inner) as fh:
        return fh.read()


def _read_range(path, offset: int, length: int) -> bytes:
    """`length` bytes of a file from `offset` (on a URI without fetching the rest of the object)."""
    if not is_uri(path):
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)
    fs, inner = _open(path)
    with fs.open_input_file(inner) as fh:
        return fh.read_at(length, offset)


def _file_size(path) -> int:
    if not is_uri(path):
        return os.stat(path).st_size
    fs, inner = _open(path)
    return fs.get_file_info(inner).size


def write_bytes(path, data: bytes) -> None:
    """Write a whole file atomically: temporary sibling + rename on a path, one object put on a URI."""
    if is_uri(path):
        with _disk_full_is_user_error(path):
            fs, inner = _open(path)
            fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(inner) as fh:
                fh.write(data)
        return
    path = Path(path)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        with _disk_full_is_user_error(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write failed


def remove(path) -> None:
    """Delete a directory tree (or file); a missing one is fine."""
    if not is_uri(path):
        p = Path(path)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
        return
    import pyarrow.fs as pafs

    fs, inner = _open(path)
    kind = fs.get_file_info(inner).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(inner)
    elif kind == pafs.FileType.File:
        fs.delete_file(inner)


def upload(local_dir: str | Path, uri: str) -> None:
    """Copy a local directory tree to `uri` (replacing what was there)."""
    import pyarrow.fs as pafs

    with _disk_full_is_user_error(uri):
        remove(uri)
        fs, inner = _open(uri)
        fs.create_dir(inner, recursive=True)
        pafs.copy_files(str(local_dir), inner, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


def _cache_root() -> Path:
    return Path(tempfile.gettempdir()) / "committee-cache" / str(os.getpid())


def clear_local_cache() -> None:
    """Delete this process's downloads (once their weights are loaded, they are not needed)."""
    shutil.rmtree(_cache_root(), ignore_errors=True)


def local_dir(path) -> Path:
    """A local directory with the contents of `path`: the path itself, or a fresh download of a URI
    (into this process's cache; `clear_local_cache` removes it)."""
    if not is_uri(path):
        return Path(path)
    import pyarrow.fs as pafs

    cache = _cache_root() / hashlib.sha1(path.encode()).hexdigest()[:16]
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    fs, inner = _open(path)
    pafs.copy_files(inner, str(cache), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return cache


def _list_dirs(root) -> list[str]:
    if not is_uri(root):
        r = Path(root)
        return sorted(p.name for p in r.iterdir() if p.is_dir()) if r.is_dir() else []
    import pyarrow.fs as pafs

    fs, inner = _open(root)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def _entries(directory) -> tuple[list[str], list[str]]:
    """(names of the regular files, names of anything else: directories, links) directly in `directory`."""
    files, others = [], []
    if not is_uri(directory):
        with os.scandir(directory) as found:
            for entry in found:
                (files if entry.is_file(follow_symlinks=False) else others).append(entry.name)
        return sorted(files), sorted(others)
    import pyarrow.fs as pafs

    fs, inner = _open(directory)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        (files if info.type == pafs.FileType.File else others).append(info.base_name)
    return sorted(files), sorted(others)


# ----------------------------------------------------------------------------------------------
# a full disk is the user's to fix, not a traceback


def _local_path_of(path) -> Path | None:
    """The local file system path behind `path` (a path, or a file:// URI), else None."""
    if not is_uri(path):
        return Path(path)
    import pyarrow.fs as pafs

    fs, inner = _open(path)
    return Path(inner) if isinstance(fs, pafs.LocalFileSystem) else None


def _free_bytes(path) -> int | None:
    """Free bytes on the disk that holds `path` (or its nearest existing ancestor); None if unknown."""
    local = _local_path_of(path)
    for candidate in () if local is None else (local, *local.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _is_disk_full(exc: BaseException, path) -> bool:
    """Whether `exc`, raised while writing `path`, means no space (or quota) is left there.

    Python and pyarrow raise OSError with errno ENOSPC/EDQUOT; safetensors raises its own error
    whose message carries "os error 28"; torch's writers lose the errno altogether, so as a last
    resort a disk with (almost) no free space left after a failed write counts as full.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(cause)
        if any(f"os error {code}" in text or os.strerror(code) in text for code in _DISK_FULL_ERRNOS):
            return True
        cause = cause.__cause__ or cause.__context__
    free = _free_bytes(path)
    return free is not None and free < _NEARLY_FULL_BYTES


@contextmanager
def _disk_full_is_user_error(path, fix: str = _FIX_DESTINATION):
    """Turn a write into `path` that fails on a full disk into a CommitteeError saying so."""
    try:
        yield
    except CommitteeError:
        raise
    except Exception as exc:
        if _is_disk_full(exc, path):
            raise CommitteeError(f"no space left on device while writing {path}: {fix}") from exc
        raise


# ----------------------------------------------------------------------------------------------
# the checkpoint format: safetensors and JSON, never pickle


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
        index, name = _OPTIMIZER_TENSOR.fullmatch(key).groups()
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
# checking a checkpoint before anything in it is loaded


def _refusal(step_dir, problem: str) -> CheckpointError:
    return CheckpointError(
        f"refusing checkpoint {step_dir}: {problem}; nothing was loaded from it. A checkpoint holds only "
        f"{', '.join(sorted(CHECKPOINT_FILES))}, read with safetensors and json (pickled files such as "
        f"state.pt, *.bin or *.pkl are never loaded: unpickling can run code). To restart this member's "
        f"pre-training from scratch, delete {parent(step_dir)}")


def _unexpected_file_problem(name: str) -> str:
    if name.lower().endswith(PICKLE_SUFFIXES):
        return f"it holds {name!r}, a pickle file (an older checkpoint format, or planted)"
    return f"it holds an unexpected file {name!r}"


def _safetensors_names(path, step_dir) -> list[str]:
    """The tensor names in the header of the safetensors file `path`, after checking that the header
    parses and its offsets fit the file; reads the header only."""
    name = Path(str(path).partition("?")[0]).name
    size = _file_size(path)
    if size < 8:
        raise _refusal(step_dir, f"{name} is too short for a safetensors file ({size} bytes)")
    header_bytes = int.from_bytes(_read_range(path, 0, 8), "little")
    if header_bytes > min(size - 8, _MAX_SAFETENSORS_HEADER_BYTES):
        raise _refusal(step_dir, f"{name} is not a safetensors file (header length {header_bytes} in "
                                 f"{size} bytes)")
    try:
        header = json.loads(_read_range(path, 8, header_bytes))
    except ValueError as exc:
        raise _refusal(step_dir, f"{name} has a safetensors header that is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _refusal(step_dir, f"{name} has a safetensors header that is not a JSON object")
    data_bytes = size - 8 - header_bytes
    names = []
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        if not _is_tensor_entry(entry, data_bytes):
            raise _refusal(step_dir, f"{name} has a malformed header entry for tensor {tensor!r}")
        names.append(tensor)
    return names


def _is_tensor_entry(entry, data_bytes: int) -> bool:
    """A safetensors header entry: {"dtype": str, "shape": [int...], "data_offsets": [begin, end]}."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return False
    return (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes)


def _parse_state(raw: bytes, step_dir, has_optimizer_file: bool, required_keys) -> dict:
    """state.json's object, checked: format, step (matching the directory's name), optimizer section."""
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise _refusal(step_dir, f"{STATE_FILE} is not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise _refusal(step_dir, f"{STATE_FILE} is not a JSON object")
    if record.get("format") != STATE_FORMAT:
        raise _refusal(step_dir, f"{STATE_FILE} has format {record.get('format')!r}, expected {STATE_FORMAT}")
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise _refusal(step_dir, f"{STATE_FILE} has no step (a whole number >= 0)")
    named = _STEP_DIR.fullmatch(Path(str(step_dir).partition("?")[0]).name)
    if named and int(named.group(1)) != step:
        raise _refusal(step_dir, f"{STATE_FILE} says step {step}, the directory's name another")
    missing = [key for key in required_keys if key not in record]
    if missing:
        raise _refusal(step_dir, f"{STATE_FILE} lacks {', '.join(map(repr, missing))}")
    if ("optimizer" in record) != has_optimizer_file:
        raise _refusal(step_dir, f"{STATE_FILE} and {OPTIMIZER_FILE} disagree on whether there is an "
                                 f"optimizer state")
    if "optimizer" in record:
        _check_optimizer_section(record["optimizer"], step_dir)
    return record


def _check_optimizer_section(section, step_dir) -> None:
    groups = section.get("param_groups") if isinstance(section, dict) else None
    if (not isinstance(groups, list) or not isinstance(section.get("scalars"), dict)
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                       and all(isinstance(p, int) for p in g["params"]) for g in groups)):
        raise _refusal(step_dir, f"{STATE_FILE}'s optimizer section is malformed (param_groups with "
                                 f"params, and scalars, expected)")


def _check_optimizer_tensors(names: list[str], record: dict, step_dir) -> None:
    """Every tensor of optimizer.safetensors is `state.<index>.<name>` for a parameter index in a group."""
    indices = {p for group in record["optimizer"]["param_groups"] for p in group["params"]}
    for name in names:
        match = _OPTIMIZER_TENSOR.fullmatch(name)
        if match is None or int(match.group(1)) not in indices:
            raise _refusal(step_dir, f"{OPTIMIZER_FILE} holds tensor {name!r}, not state.<parameter index>."
                                     f"<name> of a parameter in the optimizer's groups")


def _check_step_dir(step_dir, required_keys=()) -> dict:
    """Check one checkpoint directory (file names, safetensors headers, state.json) and return its
    parsed state.json; raises CheckpointError, having read nothing but JSON and headers."""
    files, others = _entries(step_dir)
    if others:
        raise _refusal(step_dir, f"it holds {others[0]!r}, which is not a regular file")
    unexpected = [name for name in files if name not in CHECKPOINT_FILES]
    if unexpected:
        raise _refusal(step_dir, _unexpected_file_problem(unexpected[0]))
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise _refusal(step_dir, f"{', '.join(missing)} missing")
    _safetensors_names(join(step_dir, MODEL_FILE), step_dir)
    has_optimizer = OPTIMIZER_FILE in files
    optimizer_names = _safetensors_names(join(step_dir, OPTIMIZER_FILE), step_dir) if has_optimizer else []
    record = _parse_state(read_bytes(join(step_dir, STATE_FILE)), step_dir, has_optimizer, required_keys)
    if has_optimizer:
        _check_optimizer_tensors(optimizer_names, record, step_dir)
    return record


def check_checkpoints(root, required_keys: tuple[str, ...] = ()) -> None:
    """Check every complete checkpoint under `root` (a path or URI; a missing one holds none) before
    anything is loaded: only the expected file names, safetensors headers that parse, a state.json
    object with format, step and `required_keys`. Raises CheckpointError naming the file at fault."""
    for name in _step_names(root):
        _check_step_dir(join(root, name), required_keys)


# ----------------------------------------------------------------------------------------------
# checkpoints


def _step_names(root) -> list[str]:
    """Names of the complete checkpoints under `root`, oldest first."""
    names = [n for n in _list_dirs(root) if n.startswith("step-")]
    if is_uri(root):
        names = [n for n in names if exists(join(root, n, COMPLETE))]
    return names


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
            with _disk_full_is_user_error(tmp, _FIX_STAGING):
                _write_checkpoint_files(Path(tmp), model, state_text, optimizer_tensors)
            upload(tmp, final)
        write_bytes(join(final, COMPLETE), b"")
        for old in [n for n in _list_dirs(root) if n.startswith("step-") and n < name][: None if keep <= 1 else -(keep - 1)]:
            remove(join(root, old))
        return final
    root = Path(root)
    final = root / name
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        with _disk_full_is_user_error(final):
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
    record = _check_step_dir(path, required_keys)
    state = {k: v for k, v in record.items() if k != "format"}
    if "optimizer" in record:
        try:
            tensors = load_file(str(path / OPTIMIZER_FILE))
        except SafetensorError as exc:
            raise _refusal(path, f"{OPTIMIZER_FILE} cannot be read ({exc})") from None
        state["optimizer"] = _join_optimizer(record["optimizer"], tensors)
    return state


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The model weights (model.safetensors) of the local checkpoint directory `path`, on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(Path(path) / MODEL_FILE), device=str(device))
    except SafetensorError as exc:
        raise _refusal(path, f"{MODEL_FILE} cannot be read ({exc})") from None


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
            with _disk_full_is_user_error(tmp, _FIX_STAGING):
                model.save_pretrained(tmp, safe_serialization=True)
            upload(tmp, path)
        for name, text in (extra_files or {}).items():
            write_bytes(join(path, name), text.encode())
        return path
    path = Path(path)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        with _disk_full_is_user_error(path):
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
