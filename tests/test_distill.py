"""`committee distill` (CV-DD for text): the labelling math by hand, the voting actor, recover, the
soft-target loss, and the command end to end on a real local Ray (one run shared by the module)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from workers.committee.voting import accuracy, aggregate, prior_weights, soft_labels
from workers.distill import recover as wr
from workers.distill import sets as wd
from workers.train.finetune import FinetuneSettings, finetune_step, soft_target_loss

REPO = Path(__file__).resolve().parents[1]
DISTILL_SMOKE = REPO / "configs" / "distill_smoke.yaml"
METHODS = ["random_hard", "random_single", "random_soft", "random_equal", "random_prior", "selected_prior", "recover",
           "recover_single", "attention", "full", "kd_full"]
WHOLE_SPLIT = ("full", "kd_full")


# ----------------------------------------------------------------------------------------------
# the labelling math, by hand


def test_prior_weights_are_softmax_of_accuracy_in_percent_over_t():
    val_accuracy = np.array([0.80, 0.75, 0.60])
    # T = 10: exp(8), exp(7.5), exp(6) = 2980.958, 1808.042, 403.429 over their sum 5192.429
    np.testing.assert_allclose(prior_weights(val_accuracy, 10.0), [0.574097, 0.348207, 0.077696], atol=1e-6)
    # T = 5: exp(16), exp(15), exp(12) over their sum
    np.testing.assert_allclose(prior_weights(val_accuracy, 5.0), [0.721399, 0.265388, 0.013213], atol=1e-6)
    # a recover pair is weighted over the pair only
    np.testing.assert_allclose(wr.guide_weights((2, 0), val_accuracy, 5.0), [np.exp(12) / (np.exp(12) + np.exp(16)),
                                                                           np.exp(16) / (np.exp(12) + np.exp(16))])
    assert wr.guide_weights((1,), val_accuracy, 5.0).tolist() == [1.0]


def test_method4_soft_labels_are_the_prior_weighted_sum_of_the_members_logits():
    logits = np.array([[[2.0, -1.0, 0.5], [0.0, 1.0, 0.0]],  # member 0: val 90%
                       [[-1.0, 3.0, 0.0], [1.0, 1.0, -2.0]]])  # member 1: val 80%
    # weights softmax([90, 80] / 10) = [e / (e + 1), 1 / (e + 1)] = [0.731059, 0.268941]
    # example 0: 0.731059 * [2, -1, 0.5] + 0.268941 * [-1, 3, 0] = [1.193176, 0.075766, 0.365529]
    # example 1: 0.731059 * [0, 1, 0] + 0.268941 * [1, 1, -2] = [0.268941, 1.0, -0.537883]
    scores = soft_labels(logits, "prior_weighted", np.array([0.9, 0.8]), temperature=10.0)
    teacher = wd.teacher_logits(scores, "prior_weighted")
    np.testing.assert_allclose(teacher, [[1.193176, 0.075766, 0.365529], [0.268941, 1.0, -0.537883]], atol=1e-6)
    # the equal-weight rule is the mean probability; its teacher logits give it back through a softmax
    mean_prob = soft_labels(logits, "mean_probability")
    np.testing.assert_allclose(mean_prob, (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).mean(0))
    back = np.exp(wd.teacher_logits(mean_prob, "mean_probability"))
    np.testing.assert_allclose(back / back.sum(-1, keepdims=True), mean_prob, rtol=1e-6)


def test_voting_actor_soft_labels_are_the_classification_votes_scores(ray_local):
    from workers.train.actors import VoterActor

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 20, 4))  # [members, examples, classes]
    labels = rng.integers(0, 4, 20)
    val_accuracy = np.array([0.7, 0.55, 0.6])
    voter = VoterActor.remote()
    weighted = ray_local.get(voter.soft_labels.remote(logits, "prior_weighted", val_accuracy, 10.0))
    mean_prob = ray_local.get(voter.soft_labels.remote(logits, "mean_probability"))
    np.testing.assert_allclose(weighted, aggregate(logits, "weighted", prior_weights(val_accuracy, 10.0)))
    np.testing.assert_allclose(mean_prob, aggregate(logits, "soft"))
    # the same actor's classification vote decides by these scores (weights from the same accuracies)
    vote = ray_local.get(voter.vote.remote(logits, logits, labels, labels, 10.0))
    assert vote["rules"]["soft"]["test_accuracy"] == accuracy(mean_prob, labels)
    own_val = np.array([accuracy(m, labels) for m in logits])  # vote() weighs by the members' accuracy here
    own = ray_local.get(voter.soft_labels.remote(logits, "prior_weighted", own_val, 10.0))
    assert vote["rules"]["weighted"]["test_accuracy"] == accuracy(own, labels)
    np.testing.assert_allclose(ray_local.get(voter.prior_weights.remote(val_accuracy, 5.0)),
                               prior_weights(val_accuracy, 5.0))


def test_soft_target_loss_is_the_hand_computed_kl():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])

    def kl_by_hand(t: float) -> float:
        p = np.exp(teacher.numpy() / t) / np.exp(teacher.numpy() / t).sum(1, keepdims=True)  # teacher probs
        q = np.exp(student.numpy() / t) / np.exp(student.numpy() / t).sum(1, keepdims=True)  # student probs
        return float((p * (np.log(p) - np.log(q))).sum(1).mean())  # summed over classes, mean over the batch

    for t in (20.0, 1.0):
        assert soft_target_loss(student, teacher, t).item() == pytest.approx(kl_by_hand(t), rel=1e-3)  # float32
    # row 0 at T = 20 by hand: p = softmax([0.1, 0, 0]), q = softmax([0.05, 0, -0.05]): KL = 2.7452e-4
    assert soft_target_loss(student[:1], teacher[:1], 20.0).item() == pytest.approx(2.7452e-4, rel=1e-3)


def test_the_fine_tuning_step_trains_on_soft_targets_with_that_loss():
    from workers.model.bert import bert_config, build_classifier

    torch.manual_seed(0)
    model = build_classifier(bert_config(100, 16, 2, 1, max_position=16, num_labels=3, dropout=0.0), 3)
    input_ids = torch.randint(5, 100, (4, 9))
    mask = torch.ones_like(input_ids)
    teacher = torch.randn(4, 3) * 3
    settings = FinetuneSettings(seed=0, epochs=1, batch_size=4, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0,
                                precision="fp32", max_steps=1, soft_target_temperature=20.0)
    with torch.no_grad():
        expected = soft_target_loss(model(input_ids=input_ids, attention_mask=mask).logits, teacher, 20.0).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert finetune_step(model, optimizer, scheduler, input_ids, mask, teacher, settings, 0) == pytest.approx(expected)
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        hard = torch.nn.functional.cross_entropy(model(input_ids=input_ids, attention_mask=mask).logits, labels).item()
    assert finetune_step(model, optimizer, scheduler, input_ids, mask, labels, settings, 1) == pytest.approx(hard)


def test_selection_is_nested_across_ipc_and_stays_in_class():
    labels = np.repeat(np.arange(3), 10)
    small, large = wd.random_per_class(labels, 3, 2, seed=4), wd.random_per_class(labels, 3, 6, seed=4)
    np.testing.assert_array_equal(large[:, :2], small)
    assert (labels[large] == np.arange(3)[:, None]).all()
    features = np.random.default_rng(0).normal(size=(30, 5))
    herded = wd.herding_per_class(features, labels, 3, 4)
    assert (labels[herded] == np.arange(3)[:, None]).all() and len({*herded.ravel()}) == 12
    # herding's first pick is the example nearest the class mean
    assert herded[0, 0] == np.argmin(np.linalg.norm(features[:10] - features[:10].mean(0), axis=1))
    rows = wd.index_major(large, 2)
    assert labels[rows].tolist() == [0, 1, 2, 0, 1, 2]


# ----------------------------------------------------------------------------------------------
# the command end to end, and what its committee does


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("distill") / "smoke"
    t0 = time.perf_counter()
    proc = run_cli("distill", DISTILL_SMOKE, "--run-dir", run_dir, timeout=1500)  # a shared machine can be slow
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def committee_and_arrays(distill_run):
    from orchestrator.config.distill import load_distill_config
    from orchestrator.run.finished import load_committee
    from orchestrator.run.prepare import prepare

    run_dir, _, _ = distill_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 shared cores: one thread is several times faster than two here
    cfg = load_distill_config(run_dir / "config.yaml")
    arrays = prepare(cfg, tokenizer_path=run_dir / "tokenizer", echo=lambda *_: None).arrays
    yield load_committee(run_dir), arrays
    torch.set_num_threads(threads)


def test_distill_smoke_end_to_end(distill_run):
    run_dir, proc, wall = distill_run
    print(f"committee distill configs/distill_smoke.yaml: {wall:.0f} s")
    for name in ("distill.json", "distill.md", "accuracy_vs_ipc.png", "report.json", "config.yaml", "tokenizer"):
        assert (run_dir / name).exists(), name
    report = json.loads((run_dir / "distill.json").read_text())
    assert report["task"] == "ag_news" and report["chance"] == 0.25
    expected = {(m, ipc, seed) for m in METHODS for ipc in ([None] if m in WHOLE_SPLIT else [1, 4])
                for seed in (0, 1, 2)}
    assert {(r["method"], r["ipc"], r["seed"]) for r in report["rows"]} == expected
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in report["rows"])
    # every student takes its steps: 30, kd_full distill.kd.steps (30), an attention student its one update
    assert {r["steps"] for r in report["rows"] if r["method"] != "attention"} == {30}
    assert {r["steps"] for r in report["rows"] if r["method"] == "attention"} == {1}
    assert {r["examples"] for r in report["rows"] if r["method"] == "kd_full"} == {400 + 40}  # + unlabelled texts
    assert {(s["method"], s["ipc"]) for s in report["summary"]} == {(m, i) for m, i, _ in expected}
    # alpha is CV-DD's prior: each member's student (2 random examples per class) scored on the validation split
    members, prior = report["committee"]["members"], report["prior"]
    assert [m["name"] for m in members] == ["member-00", "member-01", "member-02"]
    assert prior["source"] == "student" and prior["ipc"] == 2 and len(prior["students"]) == 3
    for m, student in zip(members, prior["students"]):
        assert student["method"] == f"prior.{m['name']}" and m["alpha"] == student["test_accuracy"]
    assert [m["best"] for m in members] == [i == int(np.argmax([m["alpha"] for m in members])) for i in range(3)]
    assert sum(m["relabel_weight"] for m in members) == pytest.approx(1.0)
    np.testing.assert_allclose([m["relabel_weight"] for m in members],
                               prior_weights(np.array([m["alpha"] for m in members]), 10.0))
    # every comparison is paired over the three shared student seeds, with an interval and a p
    assert len(report["comparisons"]) == 8 * 2 + 1
    for c in report["comparisons"]:
        assert c["n"] == 3 and c["seeds"] == [0, 1, 2] and 0.0 <= c["p_unadjusted"] <= c["p"] <= 1.0
        assert c["verdict"] in ("a better", "b better", "inconclusive") and c["family_size"] == 17
    kd = report["kd_full"]
    assert kd["student"]["n"] == 3 and kd["members"] == 3 and 0 < kd["soft_committee_test_accuracy"] <= 1
    assert set(kd["latency"]["ms_per_example"]) == {"committee", "best member", "student"}
    assert kd["latency"]["student_over_committee"] > 0 and kd["latency"]["examples"] == 20
    markdown = (run_dir / "distill.md").read_text()
    assert "| method | what | IPC 1 | IPC 4 |" in markdown and "relabel weight" in markdown
    assert "committee labels - best member's labels" in markdown and "committee distill" in markdown
    assert "## The committee distilled into one student (kd_full)" in markdown and "| alpha |" in markdown
    assert "no member is trained" not in proc.stdout  # this run trained its committee
    for name in ("member-00", "member-01", "member-02", "student-base"):
        assert (run_dir / "members" / name / "result.npz").is_file(), name


def test_distilled_real_sets_load_with_datasets_and_carry_the_committee_labels(distill_run, committee_and_arrays):
    import datasets

    run_dir, _, _ = distill_run
    committee, arrays = committee_and_arrays
    for method in ("random_hard", "random_single", "random_soft", "random_equal", "random_prior", "selected_prior"):
        for ipc in (1, 4):
            data = datasets.load_dataset("parquet", data_files=str(run_dir / "distilled" / method / f"ipc-{ipc}" /
                                                                   "data.parquet"), split="train")
            assert len(data) == 4 * ipc and data["label"] == [0, 1, 2, 3] * ipc
            assert all(isinstance(t, str) and t for t in data["text"])
            assert ("soft_label" in data.column_names) == (method != "random_hard")
    # random_prior's soft labels: the sum (weights softmax(alpha% / 10)) of the members' logits on those examples
    def read(method):
        return datasets.load_dataset("parquet", data_files=str(run_dir / "distilled" / method / "ipc-4" /
                                                                "data.parquet"), split="train")

    data = read("random_prior")
    rows = np.array(data["train_row"])
    logits = committee.logits(wd.take(arrays.train, rows))  # [K, 16, 4]
    alpha = np.array([m["alpha"] for m in json.loads((run_dir / "distill.json").read_text())["committee"]["members"]])
    weights = np.exp(100 * alpha / 10) / np.exp(100 * alpha / 10).sum()
    by_hand = sum(w * member_logits for w, member_logits in zip(weights, logits))
    np.testing.assert_allclose(np.array(data["soft_label"]), by_hand, atol=1e-4)
    np.testing.assert_array_equal(arrays.train_labels[rows], data["label"])
    # random_equal: CV-DD's equal voter, the members' logits summed with weights 1/3; random_soft: the log of the
    # mean probability (the soft committee); the same examples
    assert read("random_equal")["train_row"] == read("random_soft")["train_row"] == data["train_row"]
    np.testing.assert_allclose(np.array(read("random_equal")["soft_label"]), logits.mean(axis=0), atol=1e-4)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.array(read("random_soft")["soft_label"]), np.log(probs.mean(axis=0)), atol=1e-4)


def test_synthetic_sets_are_tensors_with_a_readable_decoding(distill_run):
    import datasets

    run_dir, _, _ = distill_run
    for method in ("recover", "recover_single"):
        directory = run_dir / "distilled" / method / "ipc-4"
        dset = wd.load_synthetic_set(directory)
        tokens = dset.examples
        assert tokens.ids.shape == tokens.probs.shape and tokens.ids.shape[0] == 16 and tokens.ids.shape[2] == 8
        np.testing.assert_allclose(tokens.probs.sum(-1), 1.0, atol=1e-5)
        assert dset.labels.tolist() == [0, 1, 2, 3] * 4 and dset.soft_labels.shape == (16, 4)
        decoded = datasets.load_dataset("parquet", data_files=str(directory / "decoded.parquet"), split="train")
        assert len(decoded) == 16 and all(text.strip() for text in decoded["text"])


def test_committee_packed_forward_equals_its_members_one_by_one(committee_and_arrays):
    from workers.train.finetune import pad_batch, predict_logits

    committee, arrays = committee_and_arrays
    assert committee.packs and len(committee) == 3
    examples = wd.take(arrays.test, np.arange(40))
    expected = np.stack([predict_logits(m, examples, committee.pad_id) for m in committee.members])
    np.testing.assert_allclose(committee.logits(examples), expected, rtol=1e-4, atol=1e-5)
    pooled = committee.features(examples)  # [K, 40, hidden]: the pooled [CLS] vectors
    input_ids, mask = pad_batch(examples, np.arange(40), committee.pad_id)
    with torch.no_grad():
        one = committee.members[1].bert(input_ids=input_ids, attention_mask=mask).pooler_output.numpy()
    np.testing.assert_allclose(pooled[1], one, rtol=1e-4, atol=1e-5)


def test_recover_lowers_its_loss_and_puts_its_examples_in_class_for_the_guides(committee_and_arrays):
    """Recover (a random span crop every iteration, the default) from test examples the two best members get
    wrong: afterwards both classify every saved (top-k) example, whole, as its class, and the loss has come down."""
    committee, arrays = committee_and_arrays
    pair = tuple(int(m) for m in np.argsort(-committee.val_accuracy)[:2])
    logits = committee.logits(arrays.test)[list(pair)]
    wrong = np.flatnonzero((logits.argmax(-1) != arrays.test_labels[None]).any(0))[:4]
    assert len(wrong) == 4
    stats = committee.hidden_stats(arrays.train)
    # 80 iterations: with a crop every iteration, 40 left 3 of the 8 (example, guide) pairs out of class
    settings = wr.RecoverSettings(iterations=80, lr=0.25, stats_weight=0.01, temperature=5.0, init_probability=0.9,
                                  keep_top=8, augment="crop", crop_min_share=0.5, seed=0)
    result = wr.recover(committee.members, stats, committee.val_accuracy, wd.take(arrays.test, wrong),
                        arrays.test_labels[wrong], np.zeros(4, dtype=np.int64), [pair], settings, committee.pad_id)
    assert result.loss_curve[-1] < 0.5 * result.loss_curve[0]
    assert result.guide_accuracy_before < 1.0 and result.guide_accuracy_after == 1.0
    saved = wr.guided_accuracy(committee.members, result.tokens, result.labels, result.ipc_index, [pair],
                               committee.pad_id)
    assert saved == 1.0 and result.tokens.ids.shape[2] == 8


def test_from_run_trains_no_member(distill_run, tmp_path):
    source, _, _ = distill_run
    before = {p: p.stat().st_mtime_ns for p in (source / "members").rglob("*") if p.is_file()}
    target = tmp_path / "again"
    proc = run_cli("distill", DISTILL_SMOKE, "--from-run", source, "--run-dir", target, "distill.ipc=[1]",
                   "distill.methods=[random_prior, recover]",
                   "distill.recover.iterations=4", f"storage.uri=file://{tmp_path}/bucket", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the distillation's outputs are copied to storage.uri/<run dir name>, byte for byte
    mirrored = tmp_path / "bucket" / "again"
    assert f"distillation copied to file://{mirrored}" in proc.stdout
    expected = ["config.yaml", "metrics.jsonl", "distill.json", "distill.md", "accuracy_vs_ipc.png",
                "distilled/random_prior/ipc-1/data.parquet", "distilled/recover/ipc-1/tokens.safetensors",
                "distilled/recover/ipc-1/decoded.parquet", "distilled/recover/recover.json", "tokenizer/tokenizer.json"]
    for name in expected:
        assert (mirrored / name).read_bytes() == (target / name).read_bytes(), name
    assert not [p for p in mirrored.rglob(".*")] and not (mirrored / "stages").exists()
    assert "no member is trained" in proc.stdout and " done: val " not in proc.stdout
    assert not (target / "members").exists() and not (target / "report.json").exists()
    assert {p: p.stat().st_mtime_ns for p in (source / "members").rglob("*") if p.is_file()} == before
    report = json.loads((target / "distill.json").read_text())
    assert report["committee"]["run_dir"] == str(source)
    assert {r["method"] for r in report["rows"]} == {"random_prior", "recover"}
    # the same random examples and labels as the source run's at IPC 1 (same seeds, same committee)
    import pyarrow.parquet as pq

    mine = pq.read_table(target / "distilled/random_prior/ipc-1/data.parquet")
    assert mine.equals(pq.read_table(source / "distilled/random_prior/ipc-1/data.parquet"))


def without_timing(report: dict) -> dict:
    """distill.json less what measures time, and less where the committee was read from."""
    out = json.loads(json.dumps(report))
    out.pop("timing")
    out["committee"].pop("run_dir")
    out["kd_full"].pop("latency")
    for row in out["rows"]:
        row.pop("train_s")
    for info in out["recover"].values():
        info.pop("task_seconds")
        info.pop("seconds_per_iteration")
    return out


@pytest.mark.slow  # end to end, about 40 s here: make test-all (tests/test_distill_resume.py covers each stage)
def test_a_stopped_distillation_resumes_to_the_uninterrupted_report(distill_run, tmp_path):
    """The smoke run as a stop during recover leaves it (no recovered set made, one of their two recover tasks
    finished, most students not trained, and half-written files a kill leaves), resumed, stopped again by
    SIGTERM among the students, and resumed to the end: the report equals the uninterrupted run's, all but
    timing, and nothing finished is made again."""
    source, _, _ = distill_run
    run_dir = tmp_path / "stopped"
    shutil.copytree(source, run_dir)
    for name in ("distill.json", "distill.md", "accuracy_vs_ipc.png"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "distilled" / "recover")  # its task finished: the set is made from it
    shutil.rmtree(run_dir / "distilled" / "recover_single")
    shutil.rmtree(run_dir / "stages" / "recover" / "recover_single")  # its task runs again
    students = run_dir / "stages" / "students"
    kept = sorted(students.glob("random_hard-*.json"))
    assert len(kept) == 6 and len(list(students.glob("*.json"))) == 60 + 3  # and the prior's 3
    for row in students.glob("*.json"):
        if row not in kept:
            row.unlink()
    partial = run_dir / "distilled" / ".recover_single.partial" / "ipc-1"  # a set cut short while written
    partial.mkdir(parents=True)
    (partial / "tokens.safetensors").write_bytes(b"\0" * 10)
    (students / "random_single-ipc-1-seed-0.json").write_text('{"method": "random_single", "ipc": 1, "se')

    first = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "distill", "--resume", str(run_dir)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list(students.glob("*.json"))) < len(kept) + 5 and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 143, out[-3000:] + err[-3000:]
    assert f"Continue with: committee distill --resume {run_dir}" in err
    assert "4 member(s) already finished; running 0" in out  # the committee and the students' base
    assert ("distilled sets already made: random_hard, random_single, random_soft, random_equal, random_prior, "
            "selected_prior") in out
    assert "recovered sets already made" not in out and "recover: 1 task(s) already finished; running 1" in out
    assert "recover recover_single indices 0+" in out and "recover recover indices" not in out
    assert all((run_dir / "distilled" / m / "recover.json").is_file() for m in ("recover", "recover_single"))
    assert not partial.parent.exists()
    assert not (run_dir / "distill.json").exists()
    # whole rows only: the cut-short one counts once it was trained again
    done_before = len(kept) + sum(1 for row in students.glob("*.json") if row not in kept
                                  and row.read_text().endswith("}\n"))

    resumed = run_cli("distill", "--resume", run_dir, "resources.placement_timeout_s=200", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "recovered sets already made: recover, recover_single" in resumed.stdout
    assert f"students: {60 - done_before} to train (pretrained init, relabel per_view, augmentation crop); " \
           f"{done_before} finished before" in resumed.stdout
    mine, theirs = (json.loads((d / "distill.json").read_text()) for d in (run_dir, source))
    assert without_timing(mine) == without_timing(theirs)
    assert mine["committee"]["run_dir"] == str(run_dir)
    ours_md = (run_dir / "distill.md").read_text().replace(str(run_dir), str(source)).splitlines()
    theirs_md = (source / "distill.md").read_text().splitlines()
    timed = ("wall time", "| soft committee", "| best member", "| kd_full student", "Timed side by side")
    assert [line for line in ours_md if not any(t in line for t in timed)] == \
        [line for line in theirs_md if not any(t in line for t in timed)]


def test_an_unfinished_run_exits_2_before_any_work(distill_run, tmp_path):
    source, _, _ = distill_run
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(source / "config.yaml", half / "config.yaml")  # a run killed before it finished
    target = tmp_path / "target"
    proc = run_cli("distill", DISTILL_SMOKE, "--from-run", half, "--run-dir", target, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "is not a finished run (it holds no report.json)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and not target.exists()


@pytest.mark.parametrize("from_source, overrides, message", [
    (True, ["task.train_per_class=50"],
     "was trained on another task split: task.train_per_class (run: 100, config: 50)"),
    (False, ["distill.ipc=[1, 101]"], "distill.ipc [101] is larger than the smallest class"),
    (False, ["committee.members=1"], "need a committee of at least two members, but it has 1"),
    (False, ["distill.student.init=scratch"], "distill.methods ['attention'] learn sets in the input-embedding space"),
    (False, ["distill.prior.ipc=101"], "distill.prior.ipc 101 is larger than the smallest class"),
    (False, ["distill.kd.unlabelled_texts=9000"], "distill.kd.unlabelled_texts is 9000, but the task's training file"),
    (True, ["distill.methods=[recover]"], "overlaps --from-run"),
])
def test_bad_requests_are_refused_before_anything_is_created(distill_run, tmp_path, from_source, overrides, message):
    from orchestrator.config.distill import load_distill_config
    from orchestrator.distill.driver import distill_experiment
    from workers.errors import CommitteeError

    source, _, _ = distill_run
    cfg = load_distill_config(DISTILL_SMOKE, overrides)
    target = (source / "inside") if "overlaps" in message else tmp_path / "target"
    with pytest.raises(CommitteeError, match=re.escape(message)):
        distill_experiment(cfg, target, from_run=source if from_source else None, echo=lambda *_: None)
    assert not target.exists()


def test_committee_run_refuses_a_distill_config(tmp_path):
    proc = run_cli("run", DISTILL_SMOKE, "--run-dir", tmp_path / "run", timeout=60)
    assert proc.returncode == 2 and "unknown config key 'distill'" in proc.stderr
    assert "committee distill" in proc.stderr and not (tmp_path / "run").exists()


def test_validate_checks_a_distill_file_and_its_request():
    from conftest import REPO, run_cli

    ok = run_cli("validate", REPO / "configs" / "distill_smoke.yaml")
    assert ok.returncode == 0 and "valid" in ok.stdout, ok.stderr
    bad = run_cli("validate", REPO / "configs" / "distill_smoke.yaml", "distill.ipc=[1,1000]")
    assert bad.returncode == 2 and "distill.ipc [1000]" in bad.stderr and "Traceback" not in bad.stderr
