"""`committee run configs/smoke.yaml` end to end on a real local Ray, and what its run directory holds."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
REQUIRED_REPORT_KEYS = {"task", "members", "committee", "scratch_committee", "committee_curve", "deep", "timing"}


def committee(*args, timeout=300):
    return run_cli(*args, timeout=timeout)


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "timing"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    t0 = time.perf_counter()
    proc = committee("run", "configs/smoke.yaml", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc, time.perf_counter() - t0


def test_smoke_run_writes_a_complete_run_directory(smoke_run):
    run_dir, proc, wall = smoke_run
    assert f"report: {run_dir / 'report.md'}" in proc.stdout
    for name in ("config.yaml", "report.json", "report.md", "committee_curve.png", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    assert REQUIRED_REPORT_KEYS <= set(report)
    assert report["task"] == "ag_news"
    members = report["members"]
    assert [(m["index"], m["seed"], m["pretrained"]) for m in members] == \
        [(0, 0, True), (1, 1, True), (0, 0, False), (1, 1, False)]
    for m in members:
        assert 0.0 <= m["val_accuracy"] <= 1.0 and 0.0 <= m["test_accuracy"] <= 1.0
    # it learns: on 200 real AG News test examples (4 balanced classes: chance 25%) the pre-trained committee
    # is 20 points above chance (about 54% here), and so is its best member
    chance = 0.25
    assert report["committee"]["soft"]["test_accuracy"] >= chance + 0.20, report["committee"]
    assert max(m["test_accuracy"] for m in members if m["pretrained"]) >= chance + 0.20, members
    # no actor asked for a GPU: every member ran on the CPU, and the report says so
    assert {m["device"] for m in members} == {report["deep"]["device"]} == {"cpu"}
    assert "| member-00 | 0 | 1 |" in (run_dir / "report.md").read_text() and "| cpu |" in (run_dir / "report.md").read_text()
    for key in ("committee", "scratch_committee"):
        assert set(report[key]) == {"soft", "logit", "hard", "weighted"}
        assert all(0.0 <= v["test_accuracy"] <= 1.0 for v in report[key].values())
    assert [p["size"] for p in report["committee_curve"]] == [1, 2]
    # the curve's first point is member 0 alone
    assert report["committee_curve"][0]["pretrained_accuracy"] == members[0]["test_accuracy"]
    assert report["committee_curve"][0]["scratch_accuracy"] == members[2]["test_accuracy"]
    assert report["deep"]["layers"] == 2
    assert report["timing"]["wall_s"] > 0 and report["timing"]["pretrain_tokens_per_s"] > 0
    assert report["corpus"]["articles"] == 60
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["member"] for r in lines} >= {"member-00", "member-01", "deep", "scratch-00"}
    assert any(r.get("phase") == "pretrain" for r in lines)


def test_smoke_report_carries_intervals_paired_tests_diversity_and_calibration(smoke_run):
    """Every accuracy of report.json has its 95% interval over the test examples, every comparison the papers make
    has its paired test on those examples, and both committees their diversity and calibration; the numbers are
    checked against each other (the counts behind the tests against the accuracies, the Brier split)."""
    from workers.stats import mcnemar_exact, wilson_interval

    run_dir, _, _ = smoke_run
    report = json.loads((run_dir / "report.json").read_text())
    stats = report["statistics"]
    n = stats["test_examples"]
    assert n == report["corpus"]["test_examples"] == 200
    assert stats["chance"] == {"rate": 0.25, "class": 0, "n": 200}  # AG News's test split is balanced
    models = {m["name"]: m for m in report["members"]} | {"deep": report["deep"]} | {
        f"{key}/{rule}": v for key in ("committee", "scratch_committee") for rule, v in report[key].items()}
    for name, m in models.items():
        low, high = m["test_accuracy_ci95"]
        assert (low, high) == pytest.approx(wilson_interval(round(m["test_accuracy"] * n), n)), name
        assert low < m["test_accuracy"] < high, name
        if name.endswith("/hard"):
            assert m["calibration"] is None
        else:
            assert set(m["calibration"]) == {"nll", "ece", "brier"} and 0 <= m["calibration"]["ece"] <= 1, name
    # a warning for exactly the models whose interval reaches down to chance
    assert sorted(w["model"] for w in stats["warnings"]) == sorted(
        name for name, m in models.items() if m["test_accuracy_ci95"][0] <= 0.25)
    assert report["committee"]["soft"]["test_accuracy_ci95"][0] > 0.25, "the smoke committee learns the task"
    pairs = {(c["a"], c["b"]): c for c in stats["comparisons"]}
    expected = {(f"committee/{r}", f"scratch_committee/{r}") for r in ("soft", "logit", "hard", "weighted")}
    expected |= {(f"committee/{r}", "deep") for r in ("soft", "logit", "hard", "weighted")}
    expected |= {("member-00", "scratch-00"), ("member-01", "scratch-01")}
    assert set(pairs) == expected
    for (a, b), c in pairs.items():
        assert c["n"] == n and c["a_accuracy"] == pytest.approx(models[a]["test_accuracy"])
        assert c["difference"] == pytest.approx(models[a]["test_accuracy"] - models[b]["test_accuracy"])
        assert c["difference"] == pytest.approx((c["a_only"] - c["b_only"]) / n)
        assert c["mcnemar_p"] == pytest.approx(mcnemar_exact(c["a_only"], c["b_only"]))
        assert c["p"] >= c["mcnemar_p"] and c["ci95"][0] <= c["difference"] <= c["ci95"][1]
        assert c["verdict"] in ("a better", "b better", "inconclusive")
        assert c["verdict"] == "inconclusive" or (c["p"] < 0.05 and (c["ci95"][0] > 0 or c["ci95"][1] < 0))
    for arm, key in (("pretrained", "committee"), ("scratch", "scratch_committee")):
        d = stats["diversity"][arm]
        assert d["members"] == 2 and 0 <= d["pairwise_disagreement"] <= 1
        assert d["vote_accuracy"] == report[key]["soft"]["test_accuracy"]
        assert d["brier"]["vote"] == pytest.approx(report[key]["soft"]["calibration"]["brier"], abs=1e-12)
        assert d["brier"]["vote"] == pytest.approx(d["brier"]["mean_member"] - d["brier"]["ambiguity"], abs=1e-12)
        members = [m for m in report["members"] if m["pretrained"] == (arm == "pretrained")]
        assert d["brier"]["mean_member"] == pytest.approx(sum(m["calibration"]["brier"] for m in members) / 2)
    md = (run_dir / "report.md").read_text()
    for words in ("with 95% interval over 200 test examples", "pre-trained − scratch (points) [95% CI]",
                  "committee − deep model", "− scratch twin (points)", "## Committee mechanics", "ECE (15 bins)",
                  "## How the numbers were tested", "exact McNemar", "Wilson"):
        assert words in md, words
    soft = pairs[("committee/soft", "scratch_committee/soft")]
    verdict = {"a better": "pre-trained better", "b better": "scratch better"}.get(soft["verdict"], "inconclusive")
    assert f"| soft | {100 * models['committee/soft']['test_accuracy']:.1f} [" in md and f"| {verdict} |" in md
    assert ("## Warnings" in md) == bool(stats["warnings"])


def test_run_directory_loads_in_plain_transformers(smoke_run):
    from transformers import AutoTokenizer, BertForSequenceClassification

    run_dir, _, _ = smoke_run
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    model = BertForSequenceClassification.from_pretrained(str(run_dir / "members" / "member-00" / "classifier"))
    batch = tokenizer(["Stocks rallied after the earnings report."], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 4)
    assert (run_dir / "members" / "member-00" / "mlm" / "model.safetensors").is_file()


def test_same_config_and_seed_give_the_same_report(smoke_run, tmp_path):
    first_dir, _, _ = smoke_run
    proc = committee("run", "configs/smoke.yaml", "--run-dir", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((first_dir / "report.json").read_text())
    second = json.loads((tmp_path / "again" / "report.json").read_text())
    assert without_timing(second) == without_timing(first)


def test_pretrained_from_gives_the_members_that_pre_training_again_gives(smoke_run, tmp_path):
    """A run that takes its members' pre-training from another run fine-tunes them to the same results as that
    run (CPU runs are deterministic), without a pre-training step of its own; the task may differ in general
    (tests/test_config.py checks which keys may), here it is the same so that the results can be compared."""
    from safetensors.torch import load_file

    source, _, _ = smoke_run
    run_dir = tmp_path / "again"
    proc = committee("run", "configs/smoke.yaml", "committee.scratch=false", "--pretrained-from", str(source),
                     "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"pre-training taken from {source}: deep, member-00, member-01 (fine-tuned only)" in proc.stdout
    report = json.loads((run_dir / "report.json").read_text())
    theirs = json.loads((source / "report.json").read_text())
    assert report["pretrained_from"] == {"run": str(source), "members": ["deep", "member-00", "member-01"]}
    assert "taken from" in (run_dir / "report.md").read_text()
    assert report["members"] == [m for m in theirs["members"] if m["pretrained"]]
    assert report["deep"] == theirs["deep"] and report["committee"] == theirs["committee"]
    for name in ("member-00", "member-01", "deep"):
        mine = load_file(run_dir / "members" / name / "mlm" / "model.safetensors")
        other = load_file(source / "members" / name / "mlm" / "model.safetensors")
        assert mine.keys() == other.keys() and all(mine[k].equal(other[k]) for k in mine), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and not [r for r in records if r.get("phase") == "pretrain"]
    assert (run_dir / "tokenizer" / "tokenizer.json").read_bytes() == (source / "tokenizer" / "tokenizer.json").read_bytes()


def test_pretrained_from_refuses_other_pretraining_and_what_is_no_run(smoke_run, tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    source, _, _ = smoke_run
    target = tmp_path / "new"

    def refused(*args) -> str:  # in-process: every refusal comes before Ray starts
        result = CliRunner().invoke(app, ["run", "configs/smoke.yaml", *map(str, args)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        return result.output

    assert "pretrain.lr (there: 0.001, here: 0.002)" in refused("pretrain.lr=0.002", "--pretrained-from", source,
                                                                 "--run-dir", target)
    (tmp_path / "empty").mkdir()
    assert "holds no config.yaml" in refused("--pretrained-from", tmp_path / "empty", "--run-dir", target)
    assert "overlaps --pretrained-from" in refused("--pretrained-from", source, "--run-dir", source / "inner")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(REPO / "configs" / "sweep_smoke.yaml", sweep / "config.yaml")
    assert "is a sweep" in refused("--pretrained-from", sweep, "--run-dir", target)
    unstarted = tmp_path / "unstarted"  # a run whose members never finished pre-training
    unstarted.mkdir()
    shutil.copy(source / "config.yaml", unstarted / "config.yaml")
    shutil.copytree(source / "tokenizer", unstarted / "tokenizer")
    assert "has no member whose pre-training finished" in refused("--pretrained-from", unstarted, "--run-dir", target)
    assert "leave out --pretrained-from" in refused("--resume", source, "--pretrained-from", unstarted)
    assert not target.exists() and not (source / "inner").exists()


def test_existing_run_directory_is_refused(smoke_run):
    run_dir, _, _ = smoke_run
    proc = committee("run", "configs/smoke.yaml", "--run-dir", str(run_dir))
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run_dir / "report.json").is_file(), "the refused run left the old one untouched"


def test_more_cpus_per_member_than_the_machine_fails_fast(tmp_path):
    t0 = time.perf_counter()
    proc = committee("run", "configs/smoke.yaml", "resources.num_cpus_per_member=64",
                     "resources.placement_timeout_s=5", "--run-dir", str(tmp_path / "big"))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "64" in proc.stderr and "CPU" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - t0 < 120
