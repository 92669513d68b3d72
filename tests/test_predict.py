"""`committee predict` and `Committee.predict` on the finished run of the README's own-data example."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import REPO, run_cli
from test_own_data import RELATIONS

from orchestrator.config.experiment import load_config
from orchestrator.run.finished import load_committee
from orchestrator.run.prepare import load_cfg_task
from workers.committee.voting import RULES
from workers.errors import CommitteeError
from workers.text.corpus import encode
from workers.train.finetune import predict_logits
from workers.train.member import load_result


def csv_test_rows() -> list[dict]:
    with open(RELATIONS / "test.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def committee(own_data_run):  # noqa: F811
    return load_committee(own_data_run["run_dir"])


@pytest.fixture(scope="module")
def run_task(own_data_run, committee):  # noqa: F811
    """The run's own task splits, read from its config.yaml in the run's working directory."""
    cwd = own_data_run["cwd"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return load_cfg_task(load_config(own_data_run["run_dir"] / "config.yaml"))


def test_cli_predict_agrees_with_the_runs_test_accuracy(own_data_run):  # noqa: F811
    run_dir = own_data_run["run_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    line, proc = next((line, proc) for line, proc in own_data_run["procs"] if line.startswith("committee predict"))
    records = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
    rows = csv_test_rows()
    assert len(records) == len(rows) and [r["index"] for r in records] == list(range(len(rows)))
    names = report["corpus"]["label_names"]
    for record in records:
        assert names[record["label"]] == record["label_name"]
        assert sum(record["soft_labels"]) == pytest.approx(1.0, abs=1e-4) and len(record["soft_labels"]) == len(names)
        assert record["agreement"] in (0.0, 0.5, 1.0)  # two members
    accuracy = np.mean([r["label_name"] == row["relation"] for r, row in zip(records, rows)])
    assert accuracy == report["committee"]["soft"]["test_accuracy"]
    assert f"on {len(rows)} labelled examples" in proc.stderr and f"{accuracy:.4f}" in proc.stderr


def test_every_rule_agrees_with_the_report(own_data_run, committee, run_task):  # noqa: F811
    report = json.loads((own_data_run["run_dir"] / "report.json").read_text())
    for rule in RULES:
        predictions = committee.predict(run_task.test_texts, rule=rule)
        accuracy = float((predictions.labels == run_task.test_labels).mean())
        assert accuracy == report["committee"][rule]["test_accuracy"], rule


def test_packed_predictions_equal_the_members_one_by_one(own_data_run, committee, run_task):  # noqa: F811
    assert committee.packs and len(committee) == 2
    examples = encode(committee.tokenizer, run_task.test_texts, max_length=committee.max_length)
    packed = committee.logits(examples)  # [K, n, classes]
    one_by_one = np.stack([predict_logits(m, examples, committee.pad_id) for m in committee.members])
    np.testing.assert_allclose(packed, one_by_one, atol=1e-4)
    assert np.array_equal(packed.argmax(axis=2), one_by_one.argmax(axis=2))
    for k, name in enumerate(committee.names):
        saved = load_result(own_data_run["run_dir"] / "members" / name)
        assert saved.finetune_stats.get("precision", "fp32") == "fp32", "configs/own_data.yaml fine-tunes in fp32"
        np.testing.assert_allclose(packed[k], saved.test_logits, atol=1e-4)  # what the run itself computed
    predictions = committee.predict(run_task.test_texts)
    agreement = (one_by_one.argmax(axis=2) == predictions.labels).mean(axis=0)
    np.testing.assert_allclose(predictions.agreement, agreement)


def test_text_file_input_and_python_api_agree(own_data_run, committee, tmp_path):  # noqa: F811
    rows = csv_test_rows()[:12]
    texts = [f"{r['entities']} {r['sentence']}" for r in rows]
    path = tmp_path / "examples.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    proc = run_cli("predict", own_data_run["run_dir"], path, "--rule", "weighted", timeout=180)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    expected = committee.predict(texts, rule="weighted")
    assert [r["label"] for r in records] == expected.labels.tolist()
    assert [r["label_name"] for r in records] == expected.label_names
    assert "accuracy" not in proc.stderr, "a .txt INPUT has no labels"


def test_bad_predict_input_exits_2(own_data_run, committee, tmp_path):  # noqa: F811
    run_dir = own_data_run["run_dir"]
    blank = tmp_path / "blank.txt"
    blank.write_text("first example\n   \nthird\n", encoding="utf-8")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "config.yaml").write_text((REPO / "configs" / "sweep_smoke.yaml").read_text())
    for args, message in (((run_dir, blank), "line 2 is empty"),
                          ((unfinished, blank), "is not a finished run (it holds no report.json)"),
                          ((tmp_path / "missing", blank), f"{tmp_path / 'missing'} does not exist"),
                          ((sweep, blank), "is a sweep (its config.yaml has a sweep: section), not a run"),
                          ((run_dir, blank, "--rule", "median"), "not a voting rule")):
        proc = run_cli("predict", *args, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    with pytest.raises(CommitteeError, match="example 1 is empty"):
        committee.predict(["a text", ""])
    with pytest.raises(CommitteeError, match="no texts"):
        committee.predict([])
