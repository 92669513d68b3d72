"""`committee distill --resume` and storage mirroring, without a Ray run: what a stage leaves on disk
is trusted only when complete, a resume is refused where it would mix or harm, and `RunLayout.mirror`
copies folders (TensorBoard, distilled sets) to a storage URI or a plain path.

The distillation stopped and resumed end to end is in test_distill.py (it reuses that module's run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

from orchestrator.distill.store import DistillStore
from orchestrator.run.rundir import MARKER, RunLayout
from workers.distill import recover as wr
from workers.distill import sets as wd
from workers.errors import CommitteeError
from workers.text.corpus import Ragged

DISTILL_SMOKE = REPO / "configs" / "distill_smoke.yaml"


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# mirroring to storage.uri


def test_mirror_copies_the_tensorboard_folder_file_by_file(tmp_path):
    from workers.storage.events import RunEvents

    run_dir = tmp_path / "runs" / "smoke"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: smoke\n")
    (run_dir / "metrics.jsonl").write_text('{"phase": "pretrain"}\n')
    events = RunEvents(run_dir)  # the driver's own event writer, as a run uses it
    for step in (1, 2):
        events.record({"member": "member-00", "phase": "pretrain", "step": step, "loss": 7.0 - step})
        events.record({"member": "member-01", "phase": "pretrain", "step": step, "loss": 6.0 - step})
    events.close()
    (run_dir / "tensorboard" / ".tmp-events-cut").write_bytes(b"half")  # a write in progress: not copied
    written = {k: v for k, v in snapshot(run_dir / "tensorboard").items() if not k.startswith(".")}
    assert len(written) == 2 and all(v for v in written.values())

    for storage in (f"file://{tmp_path}/bucket", str(tmp_path / "shared")):
        dest = RunLayout(run_dir, storage).mirror()
        root = tmp_path / ("bucket" if storage.startswith("file://") else "shared") / "smoke"
        assert str(dest).endswith("smoke")
        assert snapshot(root / "tensorboard") == written  # every event file, byte for byte, at its path
        assert (root / "config.yaml").read_text() == "name: smoke\n" and (root / "metrics.jsonl").is_file()
        assert not (root / "report.json").exists()  # a name the run does not have is skipped
    assert RunLayout(run_dir, None).mirror() is None


# ----------------------------------------------------------------------------------------------
# stage outputs: complete under their final name, or not there


def small_split(per_class: int = 5, classes: int = 4) -> tuple[Ragged, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 9, per_class * classes)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    train = Ragged(ids=rng.integers(5, 100, offsets[-1]).astype(np.int32), offsets=offsets)
    labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
    return train, labels, [f"text {i}" for i in range(len(labels))]


def test_a_set_counts_as_made_only_once_it_is_complete(tmp_path):
    train, labels, texts = small_split()
    rows = wd.index_major(wd.random_per_class(labels, 4, 3, seed=1), 3)
    soft = np.random.default_rng(1).normal(size=(len(rows), 4)).astype(np.float32)
    dset = wd.DistilledSet("random_prior", 3, wd.take(train, rows), labels[rows], soft, rows)
    store = DistillStore(tmp_path)

    # a save that fails part-way (here: the texts of IPC 1's rows only) leaves no set behind
    with pytest.raises(KeyError):
        store.save_set(dset, [1, 3], 4, {int(r): texts[r] for r in rows[:4]}, tokenizer=None)
    assert (tmp_path / "distilled" / ".random_prior.partial" / "ipc-1" / "data.parquet").is_file()
    assert not store.has_set("random_prior")

    store.save_set(dset, [1, 3], 4, texts, tokenizer=None)
    assert store.has_set("random_prior") and not (tmp_path / "distilled" / ".random_prior.partial").exists()
    back = store.load_real_set("random_prior", 3, train, labels, 4)
    np.testing.assert_array_equal(back.train_rows, rows)
    np.testing.assert_array_equal(back.soft_labels, soft)  # float32, bit for bit
    np.testing.assert_array_equal(back.examples.ids, dset.examples.ids)
    np.testing.assert_array_equal(back.examples.offsets, dset.examples.offsets)
    assert back.labels.dtype == np.int64 and back.labels.tolist() == labels[rows].tolist()

    shuffled = labels[::-1].copy()  # another split: refused, naming the set to delete
    with pytest.raises(CommitteeError, match=re.escape(f"delete {tmp_path / 'distilled' / 'random_prior'}")):
        store.load_real_set("random_prior", 3, train, shuffled, 4)


def test_a_recover_task_reads_back_exactly_and_a_damaged_one_runs_again(tmp_path):
    rng = np.random.default_rng(2)
    tokens = wd.SoftTokens(rng.integers(0, 50, (8, 6, 3)).astype(np.int32),
                           rng.dirichlet(np.ones(3), (8, 6)).astype(np.float32), rng.integers(3, 7, 8))
    result = wr.RecoverResult(tokens, np.arange(8) % 4, np.repeat([0, 1], 4), rng.normal(size=30), 0.375, 1.0,
                              6.25, (4.5, 1.75))
    store, indices = DistillStore(tmp_path), range(4, 6)
    assert store.load_recover_task("recover", indices) is None
    store.save_recover_task("recover", indices, result)
    path = store.recover_task_path("recover", indices)
    assert path.name == "indices-4-5.npz" and [p.name for p in path.parent.iterdir()] == [path.name]
    back = store.load_recover_task("recover", indices)
    for name in ("ids", "probs", "example_lengths"):
        np.testing.assert_array_equal(getattr(back.tokens, name), getattr(tokens, name))
    np.testing.assert_array_equal(back.loss_curve, result.loss_curve)
    assert (back.guide_accuracy_before, back.guide_accuracy_after, back.seconds, back.phase_seconds) == \
        (0.375, 1.0, 6.25, (4.5, 1.75))
    path.write_bytes(path.read_bytes()[:100])  # damaged: the task runs again
    assert store.load_recover_task("recover", indices) is None


def test_a_student_counts_as_finished_only_with_its_whole_row(tmp_path):
    store = DistillStore(tmp_path)
    row = {"method": "full", "ipc": None, "seed": 2, "examples": 400, "test_accuracy": 0.25, "final_loss": 1.5,
           "steps": 30, "train_s": 1.2}
    store.save_student(row)
    assert store.student_path("full", None, 2).name == "full-ipc-all-seed-2.json"
    assert store.load_student("full", None, 2) == row
    assert store.load_student("full", None, 1) is None  # another seed: not finished
    path = store.student_path("full", None, 2)
    path.write_text(json.dumps(row)[:40])  # cut short
    assert store.load_student("full", None, 2) is None
    path.write_text(json.dumps({**row, "seed": 0}))  # a row of another student under this name
    assert store.load_student("full", None, 2) is None


# ----------------------------------------------------------------------------------------------
# resume refused before anything is touched


def distill_dir(tmp_path: Path, overrides: list[str] | None = None, from_run=None) -> Path:
    """A distillation's run directory as one leaves it when stopped after it started."""
    from orchestrator.config.commands import to_yaml
    from orchestrator.config.distill import load_distill_config

    run_dir = tmp_path / "distill_smoke"
    run_dir.mkdir()
    (run_dir / MARKER).write_text("{}\n")
    (run_dir / "config.yaml").write_text(to_yaml(load_distill_config(DISTILL_SMOKE, overrides or [])))
    DistillStore(run_dir).write_origin(from_run, "committee distill configs/distill_smoke.yaml")
    return run_dir


@pytest.mark.parametrize("overrides, from_run, message", [
    (["distill.student.steps=5"], None, "cannot change distill.student.steps (saved: 30, now: 5)"),
    (["committee.members=4"], None, "cannot change committee.members (saved: 3, now: 4)"),
    (["distill.ipc=[1]", "seed=3"], None, "cannot change distill.ipc (saved: [1, 4], now: [1]); seed (saved: 0, now: 3)"),
    ([], "elsewhere", "trained its own committee; resume it without --from-run"),
])
def test_a_resume_that_would_mix_settings_is_refused_naming_them(tmp_path, overrides, from_run, message):
    from orchestrator.config.distill import load_distill_config
    from orchestrator.distill.driver import distill_experiment

    run_dir = distill_dir(tmp_path)
    before = snapshot(run_dir)
    cfg = load_distill_config(run_dir / "config.yaml", overrides)
    with pytest.raises(CommitteeError, match=re.escape(message)):
        distill_experiment(cfg, run_dir, from_run=tmp_path / from_run if from_run else None, resume=True,
                           echo=lambda *_: None)
    assert snapshot(run_dir) == before


def test_resume_refuses_overwrite_and_directories_that_are_not_a_distillation(tmp_path):
    from orchestrator.config.commands import to_yaml
    from orchestrator.config.distill import load_distill_config

    run_dir = distill_dir(tmp_path)
    both = run_cli("distill", "--resume", run_dir, "--overwrite", timeout=60)
    assert both.returncode == 2 and "cannot be combined with --overwrite" in both.stderr

    run_only = tmp_path / "a_run"  # a `committee run` directory
    run_only.mkdir()
    (run_only / MARKER).write_text("{}\n")
    (run_only / "config.yaml").write_text(to_yaml(load_distill_config(DISTILL_SMOKE)).split("distill:")[0])
    users = tmp_path / "notes"  # a user's directory
    users.mkdir()
    (users / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    started = tmp_path / "started"  # stopped before it wrote its config
    started.mkdir()
    (started / MARKER).write_text("{}\n")
    cases = [(run_only, f"it is a `committee run` directory; continue it with: committee run --resume {run_only}"),
             (users, f"cannot resume {users}: it is not a run directory made by committee (no {MARKER} marker)"),
             (started, "it holds no config.yaml (the distillation was stopped before it started); start it again"),
             (tmp_path / "missing", "it does not exist")]
    for target, message in cases:
        before = snapshot(tmp_path)
        proc = run_cli("distill", "--resume", target, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert snapshot(tmp_path) == before
