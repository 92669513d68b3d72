"""Atomic checkpoints plus the storage they live on: a local (or shared) path, or a pyarrow.fs URI.

A checkpoint is a directory `step-NNNNNNN/` holding `save_pretrained` output and `state.pt`
(optimizer, scheduler, step, counters). On a path it is written under a temporary name and renamed,
so a directory with a final name is always complete; older checkpoints are pruned after the rename.

On a URI (`s3://bucket/prefix`, `gs://...`, `file:///mnt/shared/...`: anything
`pyarrow.fs.FileSystem.from_uri` opens) object stores have no rename, so a checkpoint is complete
when its `COMPLETE` marker exists: the files are uploaded first, the marker last. Reading a URI
checkpoint downloads it to a node-local cache and returns that local directory, so the training
loops only ever see local paths. Paths stay `Path`s; URIs stay `str`s (`join` keeps a `?query`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

STATE_FILE = "state.pt"
COMPLETE = "COMPLETE"  # marker of a finished upload (URIs only)


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


def write_bytes(path, data: bytes) -> None:
    """Write a whole file atomically: temporary sibling + rename on a path, one object put on a URI."""
    if is_uri(path):
        fs, inner = _open(path)
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(inner) as fh:
            fh.write(data)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(data)
    tmp.replace(path)


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

    remove(uri)
    fs, inner = _open(uri)
    fs.create_dir(inner, recursive=True)
    pafs.copy_files(str(local_dir), inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


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


# ----------------------------------------------------------------------------------------------
# checkpoints


def _step_names(root) -> list[str]:
    """Names of the complete checkpoints under `root`, oldest first."""
    names = [n for n in _list_dirs(root) if n.startswith("step-")]
    if is_uri(root):
        names = [n for n in names if exists(join(root, n, COMPLETE))]
    return names


def latest(root) -> Path | None:
    """The newest complete checkpoint under `root` as a local directory (downloaded from a URI), or None."""
    names = _step_names(root)
    return local_dir(join(root, names[-1])) if names else None


def save(root, step: int, model, state: dict, keep: int = 1):
    """Write checkpoint `step-N` under `root` (atomically, see the module doc) and prune older ones."""
    name = f"step-{step:07d}"
    if is_uri(root):
        with tempfile.TemporaryDirectory(prefix="committee-ckpt-") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            torch.save(state, Path(tmp) / STATE_FILE)
            upload(tmp, join(root, name))
        write_bytes(join(root, name, COMPLETE), b"")
        for old in [n for n in _list_dirs(root) if n.startswith("step-") and n < name][: None if keep <= 1 else -(keep - 1)]:
            remove(join(root, old))
        return join(root, name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in _step_names(root)[:-keep]:
        shutil.rmtree(root / old, ignore_errors=True)
    return final


def load_state(path: str | Path) -> dict:
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)


def save_final(path, model, extra_files: dict[str, str] | None = None):
    """Write finished weights to `path` atomically; on a URI the extra files are written last (markers)."""
    if is_uri(path):
        with tempfile.TemporaryDirectory(prefix="committee-final-") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            upload(tmp, path)
        for name, text in (extra_files or {}).items():
            write_bytes(join(path, name), text.encode())
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(tmp, safe_serialization=True)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
