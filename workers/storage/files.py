"""Where runs and checkpoints are stored: a local (or shared) path, or a pyarrow.fs URI, behind one small API.

A URI is anything `pyarrow.fs.FileSystem.from_uri` opens (`s3://bucket/prefix`, `gs://...`,
`file:///mnt/shared/...`). Paths stay `Path`s; URIs stay `str`s (`join` keeps a `?query`). Object stores
have no rename, so a whole file is written atomically as a temporary sibling + rename on a path and as one
object put on a URI. Reading a URI directory downloads it to a node-local cache (`local_dir`), so the
training loops only ever see local paths.

A write that fails because the disk (or a quota) is full raises a `CommitteeError` naming the path
(`disk_full_is_user_error`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from workers.errors import CommitteeError

_NEARLY_FULL_BYTES = 2**20  # a failed write with less free space than this is taken for a full disk
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FIX_DESTINATION = "free space there or point --run-dir / storage.uri elsewhere"
FIX_STAGING = ("free space there or set TMPDIR to a larger disk (uploads to storage.uri are staged there), "
               "or point --run-dir / storage.uri elsewhere")


# ----------------------------------------------------------------------------------------------
# paths and pyarrow.fs URIs behind one small API


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


def read_range(path, offset: int, length: int) -> bytes:
    """`length` bytes of a file from `offset` (on a URI without fetching the rest of the object)."""
    if not is_uri(path):
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)
    fs, inner = _open(path)
    with fs.open_input_file(inner) as fh:
        return fh.read_at(length, offset)


def file_size(path) -> int:
    """The file's size in bytes."""
    if not is_uri(path):
        return os.stat(path).st_size
    fs, inner = _open(path)
    return fs.get_file_info(inner).size


def write_bytes(path, data: bytes) -> None:
    """Write a whole file atomically: temporary sibling + rename on a path, one object put on a URI."""
    if is_uri(path):
        with disk_full_is_user_error(path):
            fs, inner = _open(path)
            fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(inner) as fh:
                fh.write(data)
        return
    path = Path(path)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        with disk_full_is_user_error(path):
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

    with disk_full_is_user_error(uri):
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


def list_dirs(root) -> list[str]:
    """Names of the directories directly under `root`, sorted; none when `root` is not a directory."""
    if not is_uri(root):
        r = Path(root)
        return sorted(p.name for p in r.iterdir() if p.is_dir()) if r.is_dir() else []
    import pyarrow.fs as pafs

    fs, inner = _open(root)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def entries(directory) -> tuple[list[str], list[str]]:
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


def is_disk_full(exc: BaseException, path) -> bool:
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
def disk_full_is_user_error(path, fix: str = FIX_DESTINATION):
    """Turn a write into `path` that fails on a full disk into a CommitteeError saying so."""
    try:
        yield
    except CommitteeError:
        raise
    except Exception as exc:
        if is_disk_full(exc, path):
            raise CommitteeError(f"no space left on device while writing {path}: {fix}") from exc
        raise
