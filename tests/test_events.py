"""TensorBoard event files: written by the driver from progress records and the report, read back with
TensorBoard's own event reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from workers.committee.voting import RULES
from workers.storage.events import COMMITTEE, RunEvents, events_dir


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file in `folder`, read by TensorBoard's reader."""
    reader = EventAccumulator(str(folder))
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def test_records_and_report_become_scalars(tmp_path):
    """Records shaped as the member loops emit them (pre-training every log_every steps, one per epoch)."""
    events = RunEvents(tmp_path)
    records = [{"member": "member-00", "phase": "start", "node_ip": "127.0.0.1"}]
    records += [{"member": "member-00", "phase": "pretrain", "step": step, "max_steps": 20, "loss": 9.0 - step / 10,
                 "lr": 1e-3 * step / 20, "tokens_per_s": 1000.0 + step} for step in (5, 10, 15, 20)]
    records += [{"member": "member-00", "phase": "finetune", "epoch": e, "epochs": 2, "loss": 1.5 / e} for e in (1, 2)]
    records += [{"member": "member-00", "phase": "done", "val_accuracy": 0.625, "test_accuracy": 0.5}]
    for record in records:
        events.record(record)
    report = {"members": [{"name": "member-00", "val_accuracy": 0.625, "test_accuracy": 0.5},
                          {"name": "member-01", "val_accuracy": 0.75, "test_accuracy": 0.25}],  # finished earlier
              "committee": {rule: {"test_accuracy": 0.5 + i / 10} for i, rule in enumerate(RULES)},
              "scratch_committee": None,
              "committee_curve": [{"size": 1, "pretrained_accuracy": 0.5, "scratch_accuracy": None},
                                  {"size": 2, "pretrained_accuracy": 0.6, "scratch_accuracy": None}],
              "deep": {"test_accuracy": 0.4}}
    events.report(report)
    events.close()
    member = scalars(events_dir(tmp_path) / "member-00")
    pretrain = [r for r in records if r["phase"] == "pretrain"]
    for key in ("loss", "lr", "tokens_per_s"):
        assert member[f"pretrain/{key}"] == [(r["step"], pytest.approx(r[key])) for r in pretrain]
    assert member["finetune/loss"] == [(1, pytest.approx(1.5)), (2, pytest.approx(0.75))]
    assert member["finetune/val_accuracy"] == [(2, pytest.approx(0.625))]
    assert scalars(events_dir(tmp_path) / "member-01")["finetune/val_accuracy"] == [(0, pytest.approx(0.75))]
    committee = scalars(events_dir(tmp_path) / COMMITTEE)
    assert {tag: values for tag, values in committee.items() if tag.startswith("committee/")} == \
        {f"committee/pretrained/{rule}": [(2, pytest.approx(0.5 + i / 10))] for i, rule in enumerate(RULES)}
    assert committee["committee_size/pretrained"] == [(1, pytest.approx(0.5)), (2, pytest.approx(0.6))]
    assert committee["deep/test_accuracy"] == [(0, pytest.approx(0.4))]


def test_calibration_and_diversity_become_scalars(tmp_path):
    """A report with evidence (shaped as orchestrator.run.report writes it): each model's calibration in its own
    directory, each vote's and each committee's diversity in the committee's."""
    events = RunEvents(tmp_path)
    events.record({"member": "member-00", "phase": "finetune", "epoch": 3, "epochs": 3, "loss": 0.5})
    cal = {"nll": 1.25, "ece": 0.125, "brier": 0.5}
    rules = {rule: {"test_accuracy": 0.5, "calibration": None if rule == "hard" else cal} for rule in RULES}
    diversity = {"members": 2, "pairwise_disagreement": 0.25, "error_correlation": {"mean": 0.4},
                 "brier": {"vote": 0.45, "mean_member": 0.5, "ambiguity": 0.05}}
    events.report({"members": [{"name": "member-00", "val_accuracy": 0.5, "test_accuracy": 0.5, "calibration": cal}],
                   "committee": rules, "scratch_committee": None,
                   "committee_curve": [{"size": 1, "pretrained_accuracy": 0.5, "scratch_accuracy": None},
                                       {"size": 2, "pretrained_accuracy": 0.5, "scratch_accuracy": None}],
                   "deep": {"test_accuracy": 0.4, "calibration": {"nll": 2.0, "ece": 0.25, "brier": 0.75}},
                   "statistics": {"diversity": {"pretrained": diversity}}})
    events.close()
    member = scalars(events_dir(tmp_path) / "member-00")
    assert {k: v for k, v in member.items() if k.startswith("calibration/")} == \
        {f"calibration/{k}": [(3, pytest.approx(v))] for k, v in cal.items()}  # step: the member's last epoch
    assert scalars(events_dir(tmp_path) / "deep")["calibration/ece"] == [(0, pytest.approx(0.25))]
    committee = scalars(events_dir(tmp_path) / COMMITTEE)
    assert {k for k in committee if k.startswith("calibration/")} == {
        f"calibration/pretrained/{rule}/{k}" for rule in ("soft", "logit", "weighted") for k in cal}
    assert committee["calibration/pretrained/soft/brier"] == [(2, pytest.approx(0.5))]
    assert {k: v for k, v in committee.items() if k.startswith("diversity/")} == {
        "diversity/pretrained/pairwise_disagreement": [(2, pytest.approx(0.25))],
        "diversity/pretrained/error_correlation": [(2, pytest.approx(0.4))],
        "diversity/pretrained/vote_brier": [(2, pytest.approx(0.45))],
        "diversity/pretrained/mean_member_brier": [(2, pytest.approx(0.5))],
        "diversity/pretrained/ambiguity": [(2, pytest.approx(0.05))]}


def test_a_run_writes_its_scalars(own_data_run):
    run_dir = own_data_run["run_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    members = sorted({r["member"] for r in records})
    assert members == sorted(["member-00", "member-01", "scratch-00", "scratch-01", "deep"])
    assert sorted(p.name for p in events_dir(run_dir).iterdir()) == sorted([*members, COMMITTEE])
    accuracy = {m["name"]: m["val_accuracy"] for m in report["members"]}
    for name in members:
        written = scalars(events_dir(run_dir) / name)
        mine = [r for r in records if r["member"] == name]
        pretrain = [r for r in mine if r["phase"] == "pretrain"]
        if name.startswith("scratch"):
            assert not pretrain and "pretrain/loss" not in written
        else:
            for key in ("loss", "tokens_per_s", "lr"):
                assert written[f"pretrain/{key}"] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in pretrain]
        finetune = [r for r in mine if r["phase"] == "finetune"]
        assert written["finetune/loss"] == [(r["epoch"], pytest.approx(r["loss"], rel=1e-6)) for r in finetune]
        if name in accuracy:
            assert written["finetune/val_accuracy"] == [(finetune[-1]["epoch"], pytest.approx(accuracy[name]))]
    committee = scalars(events_dir(run_dir) / COMMITTEE)
    size = len(report["committee_curve"])
    for arm, key in (("pretrained", "committee"), ("scratch", "scratch_committee")):
        for rule in RULES:
            assert committee[f"committee/{arm}/{rule}"] == [(size, pytest.approx(report[key][rule]["test_accuracy"]))]
        assert committee[f"committee_size/{arm}"] == [(p["size"], pytest.approx(p[f"{arm}_accuracy"]))
                                                      for p in report["committee_curve"]]
    assert committee["deep/test_accuracy"] == [(0, pytest.approx(report["deep"]["test_accuracy"]))]
    # the report's evidence: every model's calibration, each committee's diversity
    for member in report["members"]:
        written = scalars(events_dir(run_dir) / member["name"])
        assert {k: v[0][1] for k, v in written.items() if k.startswith("calibration/")} == \
            {f"calibration/{k}": pytest.approx(v) for k, v in member["calibration"].items()}
    assert scalars(events_dir(run_dir) / "deep")["calibration/nll"][0][1] == \
        pytest.approx(report["deep"]["calibration"]["nll"])
    for arm, key in (("pretrained", "committee"), ("scratch", "scratch_committee")):
        assert committee[f"calibration/{arm}/soft/ece"] == [(size, pytest.approx(report[key]["soft"]["calibration"]["ece"]))]
        assert committee[f"diversity/{arm}/ambiguity"] == \
            [(size, pytest.approx(report["statistics"]["diversity"][arm]["brier"]["ambiguity"]))]
