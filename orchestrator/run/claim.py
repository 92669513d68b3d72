"""The safety of a run directory on disk: what may be used or replaced, and claiming it (create, lock, undo).

`RunDir.check_target` and `RunDir.claim` (orchestrator.run.rundir) call these; see that module's docstring for
the order in which a command applies them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from workers.errors import CommitteeError

MARKER = ".committee-run"  # written into every run directory this tool creates
LOCK = ".committee-lock"  # flock'ed by the driver that owns the run directory


# ----------------------------------------------------------------------------------------------
# checks before anything is touched


def _protected(data_root: Path | None) -> list[tuple[str, Path]]:
    places = [("the working directory", Path.cwd()), ("your home directory", Path.home()),
              ("the repository", Path(__file__).resolve().parents[2])]
    if data_root is not None:
        places.append(("the data root", Path(data_root)))
    return [(what, p.resolve()) for what, p in places]


def _listing(path: Path, limit: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def is_run_dir(path: Path) -> bool:
    """True when `path` was created by this tool as a run directory (it holds the marker)."""
    return (path / MARKER).is_file()


def check_target(run_dir: Path, data_root: Path | None, overwrite: bool, resume: bool) -> None:
    """Refuse a run directory that would harm the user's files, before anything is created or deleted."""
    if str(run_dir).strip() == "" or str(run_dir) == ".":
        raise CommitteeError("the run directory is empty or '.': give --run-dir a directory of its own "
                             "(default: runs/<name>)")
    target = run_dir.resolve()
    if target == Path(target.anchor):
        raise CommitteeError(f"refusing to use {run_dir} (the filesystem root) as a run directory")
    for what, place in _protected(data_root):
        if target == place or target in place.parents:
            rel = "is" if target == place else "contains"
            raise CommitteeError(f"refusing to use {run_dir} as a run directory: it {rel} {what} ({place}); "
                                 f"choose a directory of its own, e.g. --run-dir runs/NAME")
        if what == "the data root" and place in target.parents:
            raise CommitteeError(f"refusing to write a run into the data root ({place}): choose --run-dir "
                                 f"outside it")
    if target.exists() and not target.is_dir():
        raise CommitteeError(f"--run-dir {run_dir} is a file, not a directory; choose another path")
    if resume:
        if not target.is_dir():
            raise CommitteeError(f"cannot resume {run_dir}: it does not exist")
        _check_writable(target, run_dir)
        return
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise CommitteeError(f"run directory {run_dir} already exists; pass --overwrite to replace it, "
                                 f"--resume {run_dir} to continue it, or --run-dir to choose another")
        if not is_run_dir(target):
            raise CommitteeError(
                f"refusing to --overwrite {run_dir}: it is not a run directory made by committee (no {MARKER} "
                f"marker) and holds {_listing(target)}; choose another --run-dir or remove it yourself")
    existing = target
    while not existing.exists():
        existing = existing.parent
    _check_writable(existing, run_dir)


def _check_writable(existing: Path, run_dir: Path) -> None:
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommitteeError(f"cannot write the run directory {run_dir}: {existing} is not writable; "
                             f"choose a --run-dir you can write to")


# ----------------------------------------------------------------------------------------------
# claiming: create or set aside, lock, and undo


def _lock(path: Path):
    """An exclusive flock on `path` (a file in the run dir), or CommitteeError naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "an unknown process"
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise CommitteeError(f"{path.parent} is in use by another committee driver ({holder}); wait for it "
                                 f"to finish or stop it (a killed driver releases its lock at once)") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"host {socket.gethostname()}, PID {os.getpid()}".encode(), 0)
    return fd


@dataclass
class RunClaim:
    """A locked run directory; `rollback` undoes what `claim` did, `commit` makes it final."""

    run_dir: Path
    fd: int | None
    created: list[Path] = field(default_factory=list)  # directories this claim made, innermost last
    replaced: Path | None = None  # the old run, set aside until commit (overwrite)
    found_empty: bool = False  # the directory existed and was empty: rollback empties it again

    def commit(self) -> None:
        """Members are running: the replaced run (if any) is deleted now."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None
        self.created, self.found_empty = [], False

    def rollback(self) -> None:
        """The command failed before any member started: leave the disk as it was found."""
        self.release()
        if self.found_empty:
            for child in self.run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for path in reversed(self.created):
            if path == self.run_dir.resolve():
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.rmdir()  # a parent made for the run: removed only if still empty
                except OSError:
                    pass
        if self.replaced is not None:
            os.replace(self.replaced, self.run_dir)
            self.replaced = None
        self.created, self.found_empty = [], False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def claim(run_dir: Path, overwrite: bool, resume: bool) -> RunClaim:
    target = Path(run_dir).resolve()
    marker, lock = Path(run_dir) / MARKER, Path(run_dir) / LOCK
    if resume or (target.is_dir() and not any(target.iterdir())):
        found_empty = not resume
        if not is_run_dir(target):
            marker.write_text(_marker_text())
        return RunClaim(Path(run_dir), _lock(lock), found_empty=found_empty)
    replaced = None
    if target.is_dir():  # overwrite of a run directory of ours (check_target made sure)
        old_fd = _lock(lock)  # a driver still running there keeps it: refuse
        replaced = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(target, replaced)
        except OSError as exc:  # e.g. a directory name so long that the set-aside name is too long
            os.close(old_fd)
            raise CommitteeError(f"cannot set {run_dir} aside to overwrite it ({replaced.name[:40]}...: "
                                 f"{exc.strerror}); remove it yourself or choose another --run-dir") from None
        os.close(old_fd)
    created = []
    missing = target
    while not missing.exists():
        created.insert(0, missing)
        missing = missing.parent
    try:
        target.mkdir(parents=True)
    except OSError as exc:
        if replaced is not None:
            os.replace(replaced, target)
        raise CommitteeError(f"cannot create the run directory {run_dir}: {exc.strerror}") from None
    marker.write_text(_marker_text())
    return RunClaim(Path(run_dir), _lock(lock), created=created, replaced=replaced)


def _marker_text() -> str:
    return json.dumps({"tool": "committee", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
