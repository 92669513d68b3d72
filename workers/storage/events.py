"""TensorBoard event files of a run, written by the driver from what it already has.

The members' progress records (the ones the monitor drains into metrics.jsonl) and the finished report
become scalars under `<run dir>/tensorboard/`: one event directory per member (so TensorBoard overlays
members in one chart per tag) and one for the committee. Only the driver writes them, so they work on a
multi-node cluster without shared storage. `tensorboard --logdir runs/` shows every run.

Member tags (from the records): pretrain/loss, pretrain/tokens_per_s, pretrain/lr (step = optimizer step),
finetune/loss (step = epoch), finetune/val_accuracy and finetune/test_accuracy (step = last epoch).
Committee tags (from the report): committee/<arm>/<rule> (test accuracy of the full committee, step = its
size), committee_size/<arm> (soft-vote test accuracy, step = committee size), deep/test_accuracy;
<arm> is pretrained or scratch.
Calibration and diversity (from the report's evidence, when it has them): calibration/{nll,ece,brier} of each
member and the deep model in its own directory (step = last epoch, so members overlay), calibration/<arm>/<rule>/
{nll,ece,brier} of each vote with probabilities, and diversity/<arm>/{pairwise_disagreement,error_correlation,
mean_member_brier,ambiguity,vote_brier} (step = committee size) in the committee's.
"""

from __future__ import annotations

from pathlib import Path

EVENTS_DIR = "tensorboard"
COMMITTEE = "committee"
DEEP = "deep"  # the deep model's directory (its member name)
FLUSH_EVERY_S = 5  # a live run shows up in TensorBoard within seconds


def events_dir(run_dir: str | Path) -> Path:
    """Where a run's event files go."""
    return Path(run_dir) / EVENTS_DIR


class RunEvents:
    """Scalar event files of one run; `record` takes progress records, `report` the finished report."""

    def __init__(self, run_dir: str | Path):
        self.root = events_dir(run_dir)
        self._writers: dict[str, object] = {}
        self._last_epoch: dict[str, int] = {}  # member -> last fine-tuning epoch seen
        self._accuracy_written: set[str] = set()  # members whose final accuracies are written

    def _writer(self, name: str):
        if name not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[name] = SummaryWriter(log_dir=str(self.root / name), flush_secs=FLUSH_EVERY_S)
        return self._writers[name]

    def record(self, record: dict) -> None:
        """One progress record of a member (phase pretrain / finetune / done); other records are skipped."""
        member, phase = record.get("member"), record.get("phase")
        if member is None:
            return
        if phase == "pretrain":
            writer, step = self._writer(member), int(record["step"])
            for key in ("loss", "tokens_per_s", "lr"):
                if record.get(key) is not None:
                    writer.add_scalar(f"pretrain/{key}", float(record[key]), step)
        elif phase == "finetune":
            self._last_epoch[member] = int(record["epoch"])
            if record.get("loss") is not None:
                self._writer(member).add_scalar("finetune/loss", float(record["loss"]), int(record["epoch"]))
        elif phase == "done":
            self._member_accuracy(member, record.get("val_accuracy"), record.get("test_accuracy"))

    def _member_accuracy(self, member: str, val_accuracy, test_accuracy) -> None:
        writer, step = self._writer(member), self._last_epoch.get(member, 0)
        for tag, value in (("finetune/val_accuracy", val_accuracy), ("finetune/test_accuracy", test_accuracy)):
            if value is not None:
                writer.add_scalar(tag, float(value), step)
        self._accuracy_written.add(member)

    def report(self, report: dict) -> None:
        """The committee's accuracy by rule and by size, the deep model's, and the final accuracy of members
        that finished before this driver started (a resumed run)."""
        for member in report.get("members", []):
            if member["name"] not in self._accuracy_written:
                self._member_accuracy(member["name"], member["val_accuracy"], member["test_accuracy"])
        writer = self._writer(COMMITTEE)
        size = len(report["committee_curve"])
        for arm, rules in (("pretrained", report.get("committee")), ("scratch", report.get("scratch_committee"))):
            for rule, scores in (rules or {}).items():
                writer.add_scalar(f"committee/{arm}/{rule}", float(scores["test_accuracy"]), size)
        for point in report["committee_curve"]:
            for arm in ("pretrained", "scratch"):
                if point.get(f"{arm}_accuracy") is not None:
                    writer.add_scalar(f"committee_size/{arm}", float(point[f"{arm}_accuracy"]), int(point["size"]))
        if report.get("deep"):
            writer.add_scalar("deep/test_accuracy", float(report["deep"]["test_accuracy"]), 0)
        self._mechanics(report, size)
        self.flush()

    def _mechanics(self, report: dict, size: int) -> None:
        """Calibration of every model and the diversity of each committee, as the report's evidence has them."""
        models = [(m["name"], m) for m in report.get("members", [])]
        if report.get("deep"):
            models.append((DEEP, report["deep"]))
        for name, model in models:
            for metric, value in (model.get("calibration") or {}).items():
                self._writer(name).add_scalar(f"calibration/{metric}", float(value), self._last_epoch.get(name, 0))
        writer = self._writer(COMMITTEE)
        for arm, key in (("pretrained", "committee"), ("scratch", "scratch_committee")):
            for rule, vote in (report.get(key) or {}).items():
                for metric, value in (vote.get("calibration") or {}).items():
                    writer.add_scalar(f"calibration/{arm}/{rule}/{metric}", float(value), size)
        for arm, d in ((report.get("statistics") or {}).get("diversity") or {}).items():
            values = {"pairwise_disagreement": d["pairwise_disagreement"], "error_correlation": d["error_correlation"]["mean"],
                      "mean_member_brier": d["brier"]["mean_member"], "ambiguity": d["brier"]["ambiguity"],
                      "vote_brier": d["brier"]["vote"]}
            for metric, value in values.items():
                if value is not None:
                    writer.add_scalar(f"diversity/{arm}/{metric}", float(value), d["members"])

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
