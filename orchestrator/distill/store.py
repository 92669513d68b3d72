"""What a distillation keeps on disk, written so that `committee distill --resume` can trust it.

Every stage's output is either complete under its final name or absent: a resumed distillation keeps
a stage whose output is there, redoes one whose output is not, and never takes a half-written file for
a finished one (each is written under a temporary name and renamed once complete).

    RUN_DIR/distilled/<method>/ipc-<n>/...        a distilled set at every IPC (a recovered set also holds
                                                  recover.json, its figures); written under
                                                  distilled/.<method>.partial and renamed when complete
    RUN_DIR/distilled/attention/ipc-<n>/set.safetensors   an attention set (learned per IPC), written under
                                                  distilled/attention/.ipc-<n>.partial and renamed
    RUN_DIR/stages/origin.json                    where the committee comes from (--from-run, or null) and
                                                  the command that started the distillation (for the reports)
    RUN_DIR/stages/prior.json                     the members' prior alpha (and the students behind it)
    RUN_DIR/stages/recover/<method>/indices-<a>-<b>.npz   one finished recover task
    RUN_DIR/stages/students/<method>-ipc-<n>-seed-<s>.json one finished student (its report row)
    RUN_DIR/distill.json                          written last: the distillation finished

Only the driver writes these files (Ray tasks return their results to it), so one lock guards them all.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.distill import report as distill_report
from orchestrator.run import rundir
from workers.distill import attention as wa
from workers.distill import recover as wr
from workers.distill import sets as wd
from workers.errors import CommitteeError
from workers.storage import checkpoint

DISTILLED, STAGES = "distilled", "stages"
ORIGIN_FILE, RECOVER_INFO = "origin.json", "recover.json"
PARTIAL = ".partial"  # suffix of a distilled set being written
REAL_METHODS = ("random_hard", "random_single", "random_soft", "random_equal", "random_prior", "selected_prior")
ATTENTION_FILE, PRIOR_FILE = "set.safetensors", "prior.json"
RECOVER_METHODS = ("recover", "recover_single")
# copied to storage.uri at the end: the run's files (config, report, metrics, TensorBoard), the distillation's
# report and sets, and the tokenizer the synthetic sets' token ids belong to
MIRRORED = rundir.MIRRORED_FILES + (distill_report.JSON, distill_report.MARKDOWN, distill_report.PLOT, DISTILLED,
                                    "tokenizer")


@dataclass(frozen=True)
class Origin:
    """What a distillation records when it starts: its --from-run (None: it trains its committee) and command."""

    from_run: Path | None
    command: str


@dataclass(frozen=True)
class DistillStore:
    """The stage outputs of the distillation in `run_dir`."""

    run_dir: Path

    # -- where the committee comes from, and the command that started the distillation ---------------

    @property
    def origin_path(self) -> Path:
        return self.run_dir / STAGES / ORIGIN_FILE

    def write_origin(self, from_run: str | Path | None, command: str) -> None:
        origin = {"from_run": None if from_run is None else str(Path(from_run).resolve()), "command": command}
        checkpoint.write_bytes(self.origin_path, (json.dumps(origin) + "\n").encode())

    def read_origin(self) -> Origin | None:
        """What the distillation recorded when it started, or None (it never started, or an older version)."""
        raw = checkpoint.read_bytes(self.origin_path)
        if raw is None:
            return None
        try:
            origin = json.loads(raw)
            from_run, command = origin["from_run"], str(origin["command"])
        except (ValueError, KeyError, TypeError):
            raise CommitteeError(f"{self.origin_path} is damaged (it says where the committee comes from); start "
                                 f"the distillation again with --overwrite") from None
        return Origin(None if from_run is None else Path(from_run), command)

    # -- distilled sets --------------------------------------------------------------------------

    def set_dir(self, method: str) -> Path:
        return self.run_dir / DISTILLED / method

    def has_set(self, method: str) -> bool:
        """True when the set of `method` was written completely (a partial write has another name)."""
        return self.set_dir(method).is_dir()

    def save_set(self, dset: wd.DistilledSet, ipcs: list[int], num_classes: int, texts, tokenizer,
                 info: dict | None = None) -> None:
        """The set at every IPC of `ipcs` (plus `info` as recover.json), written aside and renamed when complete."""
        final = self.set_dir(dset.method)
        partial = final.parent / f".{dset.method}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)  # left by a distillation stopped while writing it
        for ipc in ipcs:
            part = dset.first(ipc, num_classes)
            directory = partial / f"ipc-{ipc}"
            if isinstance(part.examples, wd.SoftTokens):
                wd.save_synthetic_set(part, tokenizer, directory)
            else:
                wd.save_real_set(part, texts, directory)
        if info is not None:
            (partial / RECOVER_INFO).write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)

    def load_real_set(self, method: str, ipc: int, train, train_labels: np.ndarray,
                      num_classes: int) -> wd.DistilledSet:
        """A saved set of real examples at IPC `ipc` (its largest), rebuilt from its rows of the training split."""
        import pyarrow.parquet as pq

        path = self.set_dir(method) / f"ipc-{ipc}" / "data.parquet"
        try:
            table = pq.read_table(path)
            rows = table.column("train_row").to_numpy().astype(np.int64)
            labels = table.column("label").to_numpy().astype(np.int64)
            soft = (np.array(table.column("soft_label").to_pylist(), dtype=np.float32)
                    if "soft_label" in table.column_names else None)
        except (OSError, KeyError, ValueError) as exc:
            raise self._unusable(method, f"{path} cannot be read ({exc})") from None
        if len(rows) != ipc * num_classes or rows.max(initial=-1) >= len(train_labels) \
                or not np.array_equal(train_labels[rows], labels):
            raise self._unusable(method, f"{path} does not hold this run's examples ({ipc} per class of its "
                                         f"training split)")
        return wd.DistilledSet(method, ipc, wd.take(train, rows), labels, soft, rows)

    def load_recovered_set(self, method: str, ipc: int) -> tuple[wd.DistilledSet, dict]:
        """A saved recovered set at IPC `ipc` (its largest) and its figures (recover.json)."""
        directory = self.set_dir(method)
        try:
            dset = wd.load_synthetic_set(directory / f"ipc-{ipc}", method, ipc)
            info = json.loads((directory / RECOVER_INFO).read_text())
        except (OSError, ValueError) as exc:
            raise self._unusable(method, f"{directory} cannot be read ({exc})") from None
        return dset, info

    def _unusable(self, method: str, problem: str) -> CommitteeError:
        return CommitteeError(f"{problem}; delete {self.set_dir(method)} and resume again to make it anew")

    def saved_paths(self, methods: list[str], ipcs: list[int]) -> dict:
        """Each saved set's main file, relative to the run directory (`distilled_sets` of distill.json)."""
        saved = {}
        for method in [m for m in REAL_METHODS + RECOVER_METHODS + ("attention",) if m in methods]:
            name = {"attention": ATTENTION_FILE}.get(method, "tokens.safetensors" if method in RECOVER_METHODS
                                                     else "data.parquet")
            for ipc in ipcs:
                saved[f"{method}/ipc-{ipc}"] = f"{DISTILLED}/{method}/ipc-{ipc}/{name}"
        return saved

    # -- attention sets (one per IPC) --------------------------------------------------------------

    def attention_path(self, ipc: int) -> Path:
        return self.set_dir("attention") / f"ipc-{ipc}" / ATTENTION_FILE

    def save_attention_set(self, ipc: int, aset: wa.AttentionSet) -> None:
        """The set learned at IPC `ipc`, written aside and renamed when complete."""
        from safetensors.numpy import save_file

        final = self.attention_path(ipc).parent
        partial = final.parent / f".ipc-{ipc}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_file({"embeds": aset.embeds, "lengths": aset.lengths, "labels": aset.labels,
                   "soft_labels": aset.soft_labels, "attention_labels": aset.attention_labels,
                   "inner_lr": np.array([aset.inner_lr], dtype=np.float64),
                   "loss_curve": np.asarray(aset.loss_curve, dtype=np.float64), "seconds": np.array([aset.seconds])},
                  str(partial / ATTENTION_FILE))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)

    def load_attention_set(self, ipc: int) -> wa.AttentionSet | None:
        """The attention set learned at IPC `ipc`, or None (not learned yet)."""
        from safetensors.numpy import load_file

        path = self.attention_path(ipc)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))
        except (OSError, ValueError) as exc:
            raise self._unusable("attention", f"{path} cannot be read ({exc})") from None
        return wa.AttentionSet(t["embeds"], t["lengths"], t["labels"], t["soft_labels"], t["attention_labels"],
                               float(t["inner_lr"][0]), t["loss_curve"], float(t["seconds"][0]))

    # -- the members' prior --------------------------------------------------------------------------

    def save_prior(self, prior: dict) -> None:
        checkpoint.write_bytes(self.run_dir / STAGES / PRIOR_FILE, (json.dumps(prior, indent=2) + "\n").encode())

    def load_prior(self) -> dict | None:
        raw = checkpoint.read_bytes(self.run_dir / STAGES / PRIOR_FILE)
        try:
            return None if raw is None else json.loads(raw)
        except ValueError:
            return None

    # -- recover tasks ---------------------------------------------------------------------------

    def recover_task_path(self, method: str, indices: range) -> Path:
        return self.run_dir / STAGES / "recover" / method / f"indices-{indices.start}-{indices.stop - 1}.npz"

    def save_recover_task(self, method: str, indices: range, result: wr.RecoverResult) -> None:
        meta = {"guide_accuracy_before": result.guide_accuracy_before, "guide_accuracy_after":
                result.guide_accuracy_after, "seconds": result.seconds, "phase_seconds": list(result.phase_seconds)}
        buffer = io.BytesIO()
        np.savez(buffer, token_ids=result.tokens.ids, token_probs=result.tokens.probs,
                 lengths=result.tokens.example_lengths, labels=result.labels, ipc_index=result.ipc_index,
                 loss_curve=result.loss_curve, meta=json.dumps(meta))
        checkpoint.write_bytes(self.recover_task_path(method, indices), buffer.getvalue())

    def load_recover_task(self, method: str, indices: range) -> wr.RecoverResult | None:
        """A finished recover task's result, or None (not finished, or unreadable: it runs again)."""
        raw = checkpoint.read_bytes(self.recover_task_path(method, indices))
        if raw is None:
            return None
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                tokens = wd.SoftTokens(data["token_ids"], data["token_probs"], data["lengths"])
                return wr.RecoverResult(tokens, data["labels"], data["ipc_index"], data["loss_curve"],
                                        meta["guide_accuracy_before"], meta["guide_accuracy_after"],
                                        meta["seconds"], tuple(meta["phase_seconds"]))
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return None

    # -- students ----------------------------------------------------------------------------------

    def student_path(self, method: str, ipc: int | None, seed: int) -> Path:
        return self.run_dir / STAGES / "students" / f"{method}-ipc-{'all' if ipc is None else ipc}-seed-{seed}.json"

    def save_student(self, row: dict) -> None:
        path = self.student_path(row["method"], row["ipc"], row["seed"])
        checkpoint.write_bytes(path, (json.dumps(row) + "\n").encode())

    def load_student(self, method: str, ipc: int | None, seed: int) -> dict | None:
        """A finished student's row, or None (not finished, or unreadable: it trains again)."""
        raw = checkpoint.read_bytes(self.student_path(method, ipc, seed))
        if raw is None:
            return None
        try:
            row = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(row, dict) or (row.get("method"), row.get("ipc"), row.get("seed")) != (method, ipc, seed) \
                or not isinstance(row.get("test_accuracy"), float):
            return None
        return row
