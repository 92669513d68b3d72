"""A run directory: what it is, every path in it, and the rules that keep a user's files safe.

`RunDir` is one directory of one command (run, sweep or distill): which command made it (its config.yaml's
sections) and its marker, the config it keeps, what `--resume` may change there and every refusal, how it is
continued and reproduced, `--overwrite`, the driver lock, and reading it back once finished. `open_command`
turns a command line (CONFIG or --resume DIR) into a config and a RunDir. `RunLayout` knows where each file of
a run lives: the run directory on the driver's disk, and the member outputs under it or under
`storage.uri/<run name>` (shared storage); run, resume, mirroring, sweeps and distillation all ask it
instead of joining paths themselves.

Safety, in the order a command applies it:
1. `RunDir.check_target` (nothing touched yet): the run directory is not the working directory, the data
   root, the home directory or an ancestor of any of them, not a file, and its parent is writable.
   An existing non-empty directory is replaced only with `--overwrite`, and only if this tool created
   it (it holds the `.committee-run` marker); anything else is refused, naming what it holds.
2. `RunDir.claim` (after every check that can fail has passed): creates the directory (or sets the old one
   aside when overwriting) and takes the driver lock, an OS file lock (`flock`) that dies with its
   process, so a killed driver never leaves a stale lock and a second driver on the same directory
   exits 2 naming the holder's host and PID.
3. `RunClaim.commit` once members are running (the replaced run is deleted then), or
   `RunClaim.rollback` when the command fails before that: the disk is left as it was found.
The mechanics of 1-3 (refusals, the lock, the marker, undo) are in orchestrator.run.claim.
"""

from __future__ import annotations

import json
import shlex
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config.experiment import ExperimentConfig, validate_dict
from orchestrator.config.loader import load_raw
from orchestrator.run.claim import LOCK, MARKER, RunClaim, check_target, claim, is_run_dir
from orchestrator.run.plan import member_name
from workers.errors import CommitteeError
from workers.storage import checkpoint
from workers.train.member import Role, load_result

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


NOUNS = {"run": "run", "sweep": "sweep", "distill": "distillation"}
KINDS = {"run": "a `committee run` directory", "sweep": "a sweep (its config.yaml has a sweep: section)",
         "distill": "a distillation (its config.yaml has a distill: section)"}
# what `--resume` may change, per command: where and how wide the work runs, and (run) the committee size, since
# members are pure functions of their index and a grown committee reuses the finished ones
RESUMABLE_KEYS = {"run": ("resources.", "committee.members"),
                  "sweep": ("resources.", "sweep.max_concurrent_trials", "sweep.max_failures"),
                  "distill": ("resources.",)}
_ABSENT = "absent"


@dataclass(frozen=True)
class RunDir:
    """The directory of one `committee KIND` (run, sweep or distill): what it is, the config it keeps, how it
    is continued and reproduced, and what `--resume` may change in it. Paths inside it: `RunLayout`."""

    path: Path
    kind: str

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def noun(self) -> str:
        return NOUNS[self.kind]

    def kind_found(self) -> str | None:
        """Which command made this directory, read from its config.yaml's sections; None without a readable one."""
        from orchestrator.config.loader import command_of, load_raw

        if not self.config_path.is_file():
            return None
        try:
            return command_of(load_raw(self.config_path))
        except CommitteeError:
            return None

    def continue_command(self) -> str:
        """The command that continues this directory after an interruption."""
        return f"committee {self.kind} --resume {shlex.quote(str(self.path))}"

    def reproduce_lines(self, command: str) -> list[str]:
        """A report's "Reproduce" block: the command that made the report (a resume only continues the directory,
        so it is shown as a comment), and the directory's resolved config run into a new directory."""
        lines = []
        if command:
            lines.append(f"# continued with: {command}" if "--resume" in shlex.split(command) else command)
        again = shlex.quote(f"{self.path}-again")
        lines.append(f"committee {self.kind} {shlex.quote(str(self.config_path))} --run-dir {again}   "
                     f"# the resolved config of this {self.noun}")
        return lines

    def check_resumable(self) -> None:
        """Refuse `--resume` on anything but a started directory of this kind, naming what it is instead."""
        hint = f"give --resume the run directory of a `committee {self.kind}` (default runs/<name>)"
        if not self.path.is_dir():
            what = "is a file" if self.path.exists() else "does not exist"
            raise CommitteeError(f"cannot resume {self.path}: it {what}; {hint}")
        if not is_run_dir(self.path):
            raise CommitteeError(f"cannot resume {self.path}: it is not a run directory made by committee (no "
                                 f"{MARKER} marker); {hint}")
        found = self.kind_found()
        if found is not None and found != self.kind:
            raise CommitteeError(f"cannot resume {self.path} as a {self.noun}: it is {KINDS[found]}; continue it "
                                 f"with: {RunDir(self.path, found).continue_command()}")
        if not self.config_path.is_file():
            raise CommitteeError(f"cannot resume {self.path}: it holds no config.yaml (the {self.noun} was stopped "
                                 f"before it started); start it again: committee {self.kind} CONFIG --run-dir "
                                 f"{shlex.quote(str(self.path))} --overwrite")

    def check_resume(self, cfg) -> None:
        """A resumed directory may change only RESUMABLE_KEYS[kind]: what finished was made with the saved values,
        and a report mixing two settings would be wrong without saying so. Both sides go through the loader, so
        a key added since the directory was saved takes its default on both."""
        from orchestrator.config import commands
        from orchestrator.config.loader import flatten

        saved = flatten(commands.as_mapping(commands.load(self.kind, self.config_path)))
        now = flatten(commands.as_mapping(cfg))
        changed = [k for k in sorted(saved.keys() | now.keys()) if saved.get(k, _ABSENT) != now.get(k, _ABSENT)
                   and not k.startswith(RESUMABLE_KEYS[self.kind])]
        diffs = [f"{k} (saved: {saved.get(k, _ABSENT)!r}, now: {now.get(k, _ABSENT)!r})" for k in changed]
        if (self.kind == "run" and saved["committee.members"] != now["committee.members"] and now["deep.enabled"]
                and now["deep.token_budget"] == "committee"):
            diffs.append("committee.members (the deep model's token budget follows it)")
        if diffs:
            raise CommitteeError(f"--resume {self.path} cannot change {'; '.join(diffs)}: what finished was made with "
                                 f"the saved values, and only {', '.join(RESUMABLE_KEYS[self.kind])} may change; "
                                 f"resume without these overrides or start a new --run-dir")

    def check_target(self, data_root: Path | None, overwrite: bool, resume: bool) -> None:
        """Refuse a directory that would harm the user's files, before anything is created or deleted."""
        check_target(self.path, data_root, overwrite, resume)

    def claim(self, overwrite: bool, resume: bool) -> "RunClaim":
        """Create (or take over) the directory and lock it; call only after `check_target` passed."""
        return claim(self.path, overwrite, resume)

    def finished(self, hint: str | None = None) -> "FinishedRun":
        """The finished run in this directory, read without loading weights (`read_finished`)."""
        return read_finished(self.path, hint or FINISHED_HINT)


def run_name(cfg) -> str:
    """The run name of any command's config (a sweep's is its experiment's)."""
    return cfg.experiment.name if hasattr(cfg, "experiment") else cfg.name


def open_command(kind: str, config: str | Path | None, overrides: list[str] | None, run_dir: Path | None,
                 resume: Path | None, overwrite: bool):
    """The config and run directory of `committee KIND`, as one of its two forms asks:
    `CONFIG [KEY=VALUE ...] [--run-dir DIR] [--overwrite]` (default runs/<name>), or `--resume DIR [KEY=VALUE ...]`
    (the directory's own config.yaml, or CONFIG when given; the directory is checked before its config is read).
    Returns (config, RunDir, resuming). Resume compatibility (`RunDir.check_resume`) is the command's to check,
    on the config it finally runs (a distillation takes its committee's sections from another run first)."""
    from orchestrator.config import commands

    overrides = list(overrides or [])
    if resume is None:
        if config is None:
            raise CommitteeError(f"give a config YAML (committee {kind} CONFIG), or --resume RUN_DIR")
        if Path(config).is_dir():
            found = RunDir(Path(config), kind).kind_found() or kind
            raise CommitteeError(f"{config} is a directory: give a {kind} config YAML (committee {kind} CONFIG), or "
                                 f"continue the {NOUNS[found]} in it with: {RunDir(Path(config), found).continue_command()}")
        cfg = commands.load(kind, config, overrides)
        target = Path(run_dir) if run_dir is not None else Path("runs") / run_name(cfg)
        return cfg, RunDir(target, kind), False
    if run_dir is not None and Path(run_dir) != Path(resume):
        raise CommitteeError("--resume RUN_DIR continues that run directory; leave out --run-dir")
    if overwrite:
        raise CommitteeError("--resume keeps the run directory; it cannot be combined with --overwrite")
    target = RunDir(Path(resume), kind)
    target.check_resumable()
    if config is not None and "=" in str(config) and not Path(config).is_file():
        overrides.insert(0, str(config))  # `committee KIND --resume DIR key=value`: no config given
        config = None
    return commands.load(kind, config or target.config_path, overrides), target, True


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; `continue_with` is the command that continues its directory."""

    def __init__(self, terminated: bool = False, continue_with: str | None = None):
        super().__init__()
        self.terminated, self.continue_with = terminated, continue_with


def was_terminated(exc: BaseException) -> bool:
    """Whether a SIGTERM (`Stopped(terminated=True)`) is this interrupt or one it interrupted: an interrupt that
    arrives while the work is being stopped (Ray's cleanup, a second signal) carries the first as its context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if getattr(exc, "terminated", False):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


@contextmanager
def continuable(run_dir: RunDir):
    """Turn Ctrl-C or SIGTERM inside the block into `Stopped`, naming the command that continues `run_dir`
    once it holds its config (before that there is nothing to continue)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        hint = run_dir.continue_command() if run_dir.config_path.is_file() else None
        raise Stopped(was_terminated(exc), hint) from exc


def check_apart(run_dir: Path, source: Path, option: str) -> None:
    """Refuse a run directory that is, holds or lies inside the run it reads (`option`: --from-run,
    --pretrained-from): --overwrite would delete what it reads."""
    target, origin = Path(run_dir).resolve(), Path(source).resolve()
    if target == origin or origin in target.parents or target in origin.parents:
        raise CommitteeError(f"--run-dir {run_dir} overlaps {option} {source}: the new run writes a run directory "
                             f"of its own; choose another --run-dir (default: runs/<name>)")


# ----------------------------------------------------------------------------------------------
# a finished run, read back

FINISHED_HINT = "give the directory of a `committee run` that finished (it holds report.json), e.g. runs/<name>"


@dataclass(frozen=True)
class FinishedRun:
    """What a finished run says about its committee, read without loading any weights."""

    run_dir: Path
    config: ExperimentConfig  # the run's config (a distillation's `distill:` section set aside)
    names: tuple[str, ...]  # member-00, member-01, ...
    classifier_dirs: tuple  # each a path or a storage URI
    val_accuracy: np.ndarray  # [members] in [0, 1]
    test_accuracy: np.ndarray  # [members]
    tokenizer_dir: Path
    report: dict  # report.json

    @property
    def label_names(self) -> list[str] | None:
        return self.report.get("corpus", {}).get("label_names") or None

    @property
    def vote_weights(self) -> list[float] | None:
        """The weighted vote's member weights the run reported (softmax of validation accuracy)."""
        return (self.report.get("weights") or {}).get("pretrained")


def _not_finished(run_dir: Path, what: str, hint: str) -> CommitteeError:
    return CommitteeError(f"{run_dir} {what}; {hint}")


def read_finished(run_dir: str | Path, hint: str = FINISHED_HINT) -> FinishedRun:
    """The finished run in `run_dir`: its config.yaml, its report.json (written last), its tokenizer, and for every
    pre-trained member a result.npz and classifier weights; anything missing is a CommitteeError naming it and
    ending with `hint` (what the user should point at instead)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise _not_finished(run_dir, "does not exist", hint)
    if not run_dir.is_dir():
        raise _not_finished(run_dir, "is not a directory", hint)
    found = RunDir(run_dir, "run").kind_found()  # a distillation that trained its committee is a run too
    if found == "sweep":
        raise _not_finished(run_dir, f"is {KINDS['sweep']}, not a run", hint)
    for name in ("config.yaml", "report.json", "tokenizer"):
        if not (run_dir / name).exists():
            raise _not_finished(run_dir, f"is not a finished run (it holds no {name})", hint)
    raw = load_raw(run_dir / "config.yaml")
    raw.pop("distill", None)  # a distillation that trained its committee is a run too
    cfg = validate_dict(raw, source=str(run_dir / "config.yaml"))
    layout = RunLayout.of(cfg, run_dir)
    names, dirs, val, test = [], [], [], []
    for index in range(cfg.committee.members):
        name = member_name(Role.PRETRAINED, index)
        member_dir = layout.member_dir(name)
        result = load_result(member_dir)
        classifier = checkpoint.join(member_dir, "classifier")
        if result is None or not checkpoint.exists(checkpoint.join(classifier, checkpoint.MODEL_FILE)):
            raise _not_finished(run_dir, f"is not a finished run ({name} has no result.npz or no classifier weights "
                                         f"in {member_dir})", hint)
        names.append(name)
        dirs.append(classifier)
        val.append(result.val_accuracy)
        test.append(result.test_accuracy)
    report = json.loads((run_dir / "report.json").read_text())
    return FinishedRun(run_dir, cfg, tuple(names), tuple(dirs), np.array(val), np.array(test), run_dir / "tokenizer",
                       report)
