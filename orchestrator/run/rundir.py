"""Every path of a run, and the rules that keep a user's files safe.

`RunLayout` knows where each file of a run lives: the run directory on the driver's disk, and the
member outputs under it or under `storage.uri/<run name>` (shared storage). Run, resume, mirroring,
sweeps and distillation all ask it instead of joining paths themselves.

Safety, in the order a command applies it:
1. `check_target` (nothing touched yet): the run directory is not the working directory, the data
   root, the home directory or an ancestor of any of them, not a file, and its parent is writable.
   An existing non-empty directory is replaced only with `--overwrite`, and only if this tool created
   it (it holds the `.committee-run` marker); anything else is refused, naming what it holds.
2. `claim` (after every check that can fail has passed): creates the directory (or sets the old one
   aside when overwriting) and takes the driver lock, an OS file lock (`flock`) that dies with its
   process, so a killed driver never leaves a stale lock and a second driver on the same directory
   exits 2 naming the holder's host and PID.
3. `RunClaim.commit` once members are running (the replaced run is deleted then), or
   `RunClaim.rollback` when the command fails before that: the disk is left as it was found.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from workers.storage import checkpoint
from workers.errors import CommitteeError

MARKER = ".committee-run"  # written into every run directory this tool creates
LOCK = ".committee-lock"  # flock'ed by the driver that owns the run directory
# what a run copies to storage.uri at the end (files, and folders copied file by file)
MIRRORED_FILES = ("config.yaml", "report.json", "report.md", "committee_curve.png", "metrics.jsonl", "tensorboard")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run: `run_dir` on the driver, member outputs there or on shared storage."""

    run_dir: Path
    storage_uri: str | None = None

    @classmethod
    def of(cls, cfg, run_dir: str | Path) -> "RunLayout":
        return cls(Path(run_dir), cfg.storage.uri)

    # files on the driver's disk
    @property
    def config(self) -> Path:
        return self.run_dir / "config.yaml"

    @property
    def report_json(self) -> Path:
        return self.run_dir / "report.json"

    @property
    def report_md(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def curve_png(self) -> Path:
        return self.run_dir / "committee_curve.png"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def tokenizer(self) -> Path:
        return self.run_dir / "tokenizer"

    @property
    def marker(self) -> Path:
        return self.run_dir / MARKER

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK

    # outputs every node writes (a path, or a storage URI)
    @property
    def storage_root(self):
        """The run dir, or `storage.uri/<run dir name>`: Ray syncs nothing to the head node by itself."""
        return self.run_dir if self.storage_uri is None else checkpoint.join(self.storage_uri, self.run_dir.name)

    @property
    def members_root(self):
        return checkpoint.join(self.storage_root, "members")

    def member_dir(self, name: str):
        """A member's checkpoints, weights and result.npz."""
        return checkpoint.join(self.members_root, name)

    def member_checkpoints(self, name: str):
        return checkpoint.join(self.member_dir(name), "checkpoints")

    def mirror(self, names: tuple[str, ...] = MIRRORED_FILES) -> object | None:
        """Copy these files and folders (by default config, report, metrics and the TensorBoard event files)
        next to the members on shared storage, at the same relative paths; returns where (or None without
        storage.uri). A name that does not exist is skipped."""
        if self.storage_uri is None:
            return None
        for relative in self._mirrored_files(names):
            data = checkpoint.read_bytes(self.run_dir / relative)
            if data is not None:
                checkpoint.write_bytes(checkpoint.join(self.storage_root, *relative.parts), data)
        return self.storage_root

    def _mirrored_files(self, names: tuple[str, ...]) -> list[Path]:
        """The files of `names` relative to the run dir: a file as it is, a folder's files at any depth, less
        those under a name starting with "." (temporary files and sets still being written)."""
        files = []
        for name in names:
            path = self.run_dir / name
            if not path.is_dir():
                files.append(Path(name))
                continue
            files += sorted(p.relative_to(self.run_dir) for p in path.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        return files


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


NOUNS = {"run": "run", "sweep": "sweep", "distill": "distillation"}
KINDS = {"run": "a `committee run` directory", "sweep": "a sweep (its config.yaml has a sweep: section)",
         "distill": "a distillation (its config.yaml has a distill: section)"}


def kind_of(run_dir: Path) -> str | None:
    """"run", "sweep" or "distill": which command made `run_dir`, read from its config.yaml's sections;
    None when it holds no readable config.yaml."""
    from orchestrator.config.loader import command_of, load_raw

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        return command_of(load_raw(path))
    except CommitteeError:
        return None


def continue_command(run_dir: Path, kind: str) -> str:
    """The command that continues an interrupted run directory of `kind` ("run", "sweep", "distill")."""
    return f"committee {kind} --resume {shlex.quote(str(run_dir))}"


def reproduce_lines(kind: str, run_dir: Path, command: str) -> list[str]:
    """A report's "Reproduce" block: the command that made the report (a resume only continues the directory, so
    it is shown as a comment), and the directory's resolved config run into a new directory, which reruns it."""
    lines = []
    if command:
        lines.append(f"# continued with: {command}" if "--resume" in shlex.split(command) else command)
    again = shlex.quote(f"{run_dir}-again")
    lines.append(f"committee {kind} {shlex.quote(str(Path(run_dir) / 'config.yaml'))} --run-dir {again}   "
                 f"# the resolved config of this {NOUNS[kind]}")
    return lines


def check_kind(run_dir: Path, kind: str) -> None:
    """Refuse to resume `run_dir` as a `kind` when another command made it, naming the command that continues
    it (nothing is read beyond its config.yaml; a directory without one is left to the caller's checks)."""
    found = kind_of(run_dir)
    if found is not None and found != kind:
        raise CommitteeError(f"cannot resume {run_dir} as a {NOUNS[kind]}: it is {KINDS[found]}; continue it "
                             f"with: {continue_command(run_dir, found)}")


def check_apart(run_dir: Path, source: Path, option: str) -> None:
    """Refuse a run directory that is, holds or lies inside the run it reads (`option`: --from-run,
    --pretrained-from): --overwrite would delete what it reads."""
    target, origin = Path(run_dir).resolve(), Path(source).resolve()
    if target == origin or origin in target.parents or target in origin.parents:
        raise CommitteeError(f"--run-dir {run_dir} overlaps {option} {source}: the new run writes a run directory "
                             f"of its own; choose another --run-dir (default: runs/<name>)")


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

    layout: RunLayout
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
            for child in self.layout.run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for path in reversed(self.created):
            if path == self.layout.run_dir.resolve():
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.rmdir()  # a parent made for the run: removed only if still empty
                except OSError:
                    pass
        if self.replaced is not None:
            os.replace(self.replaced, self.layout.run_dir)
            self.replaced = None
        self.created, self.found_empty = [], False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def claim(layout: RunLayout, overwrite: bool, resume: bool) -> RunClaim:
    """Create (or take over) the run directory and lock it; call only after `check_target` passed."""
    target = layout.run_dir.resolve()
    if resume or (target.is_dir() and not any(target.iterdir())):
        found_empty = not resume
        if not is_run_dir(target):
            layout.marker.write_text(_marker_text())
        return RunClaim(layout, _lock(layout.lock), found_empty=found_empty)
    replaced = None
    if target.is_dir():  # overwrite of a run directory of ours (check_target made sure)
        old_fd = _lock(layout.lock)  # a driver still running there keeps it: refuse
        replaced = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(target, replaced)
        except OSError as exc:  # e.g. a directory name so long that the set-aside name is too long
            os.close(old_fd)
            raise CommitteeError(f"cannot set {layout.run_dir} aside to overwrite it ({replaced.name[:40]}...: "
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
        raise CommitteeError(f"cannot create the run directory {layout.run_dir}: {exc.strerror}") from None
    layout.marker.write_text(_marker_text())
    return RunClaim(layout, _lock(layout.lock), created=created, replaced=replaced)


def _marker_text() -> str:
    return json.dumps({"tool": "committee", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
