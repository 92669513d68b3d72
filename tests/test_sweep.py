"""`committee sweep`: the space and its checks, the statistics, and sweeps end to end on a real local Ray
and Tune (the smoke sweep, a stopped and resumed sweep, ASHA stopping a trial, a search's best config)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from orchestrator.config.reference import describe_fields
from orchestrator.config.sweep import SweepSection, load_sweep_config
from orchestrator.run.plan import trial_members
from orchestrator.sweep.driver import best_point, chance_level, check_search_package, check_sweep
from orchestrator.sweep.report import chance_line, mean_interval, paired_effects, paired_lines, spearman, twin_line
from orchestrator.sweep.space import point_config, with_reference_tokenizer
from workers.errors import CommitteeError, ConfigError
from workers.train.member import Role
from workers.train.trial import twin_key

SMOKE = REPO / "configs" / "sweep_smoke.yaml"
SWEEP_CONFIGS = sorted((REPO / "configs").glob("sweep_*.yaml")) + [REPO / "configs" / "search_quickstart.yaml",
                                                                  REPO / "configs" / "paper_sweep.yaml"]
# a space built for ASHA: the second learning rate learns nothing, so its trial is stopped at the first rung
# (the first, the smoke config's own rate, reaches 35% validation accuracy after 2 epochs; runs go one at a time)
ASHA_SEARCH = ["sweep.search=random", "sweep.scheduler=asha", "sweep.metric=val_accuracy", "sweep.seeds=1",
               "sweep.grace_epochs=2", "sweep.max_concurrent_trials=1",
               "sweep.space={finetune.lr: {grid: [3.0e-3, 1.0e-7]}}"]


def committee(*args, timeout=400):
    return run_cli(*args, timeout=timeout)


def rows_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "sweep.csv") as fh:
        return list(csv.DictReader(fh))


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == kind]


# ----------------------------------------------------------------------------------------------
# configs and checks (no Ray)


@pytest.mark.parametrize("path", SWEEP_CONFIGS, ids=[p.name for p in SWEEP_CONFIGS])
def test_shipped_sweep_configs_pass_every_check_before_a_trial(path):
    # the paper sweep's 20k-90k articles need a pulled data root: here its sizes are cut to the local 6,417
    local = ["sweep.space.pretrain.articles.grid=[2500,6417]", "tokenizer.train_articles=6417"]
    cfg = with_reference_tokenizer(load_sweep_config(path, local if path.name == "paper_sweep.yaml" else []))
    assert path.read_text().startswith(f"# committee sweep configs/{path.name}")
    assert check_sweep(cfg), "at least one data configuration"


def test_unknown_space_key_exits_2_naming_the_closest_key(tmp_path):
    proc = committee("sweep", SMOKE, "sweep.space.pretrain.artcles.grid=[20,60]", "--run-dir", tmp_path / "s")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pretrain.artcles" in proc.stderr and "did you mean 'pretrain.articles'" in proc.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("overrides, message", [
    (["sweep.space.pretrain.articles.grid=[20,100000]"], r"pretrain.articles=100000 but the data root .* holds 6417"),
    (["sweep.space={}"], r"sweep.space is empty"),
    (["sweep.search=optuna"], r"optuna .*cannot take grid entries \(pretrain.articles \(grid\)\); use choice"),
    (["sweep.search=random", "sweep.space.tokenizer.vocab_size.uniform=[500,2000]"],
     r"tokenizer.vocab_size changes the prepared data.*got uniform"),
    (["sweep.space.finetune.lr.choice=[1e-3,2e-3]"], r"search: grid takes grid entries only.*finetune.lr \(choice\)"),
    (["sweep.space.model.num_heads.grid=[2,3]"], r"(?s)sweep point \(.*model.num_heads=3.*\).*multiple of num_heads"),
    (["sweep.space.committee.members.grid=[2,4]"], r"'committee.members' cannot vary in a sweep"),
    (["sweep.space.pretrain.grid=[1]"], r"'pretrain' is a section"),
    (["sweep.space.sweep.corpus.rank_quantil.grid=[0]"], r"did you mean 'sweep.corpus.rank_quantile'"),
    (["sweep.space.pretrain.lr.grid=[1e-3]", "sweep.space.pretrain.lr.choice=[1e-3]"], None),
    (["sweep.metrc=val_gap"], r"unknown config key 'sweep.metrc' \(did you mean 'sweep.metric'\?\); valid keys in sweep: "),
])
def test_bad_sweeps_are_refused_before_any_trial(overrides, message):
    if message is None:  # the later override of one key replaces the earlier: a valid sweep
        cfg = load_sweep_config(SMOKE, overrides)
        assert cfg.sweep.space["pretrain.lr"].kind == "choice"
        return
    with pytest.raises(CommitteeError, match=message):
        check_sweep(with_reference_tokenizer(load_sweep_config(SMOKE, overrides)))


def test_unreachable_overlap_level_names_the_reachable_range_and_creates_nothing(tmp_path):
    proc = committee("sweep", SMOKE, "sweep.corpus.source=task_mix", "sweep.corpus.tokens=400000",
                     "sweep.space={sweep.corpus.task_share: {grid: [0.0, 0.5]}}", "--run-dir", tmp_path / "s")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"task_share=0.5 needs .*reachable task_share at 400,000 tokens is 0 to 0\.\d+", proc.stderr)
    assert "Traceback" not in proc.stderr and not (tmp_path / "s").exists()


def test_a_search_whose_package_is_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if optuna were not installed
    with pytest.raises(ConfigError, match=r"needs the 'optuna' package.*pip install optuna"):
        check_search_package("optuna")
    check_search_package("random")


def test_committee_run_refuses_a_sweep_file():
    proc = committee("run", SMOKE)
    assert proc.returncode == 2 and "unknown config key 'sweep'" in proc.stderr and "committee sweep" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_trial_pairs_a_pretrained_member_with_its_scratch_twin():
    cfg = with_reference_tokenizer(load_sweep_config(SMOKE))
    point = point_config(cfg, {"pretrain.articles": 60})
    members = trial_members(point.experiment, point.point_id, 1, 77, "/tmp/x")
    scratch, pre = members.scratch, members.pretrained
    assert members.point_id == point.point_id
    assert (scratch.role, pre.role) == (Role.SCRATCH, Role.PRETRAINED)
    assert scratch.seed == pre.seed == cfg.experiment.seed + 1 and scratch.finetune == pre.finetune
    assert pre.pretrain.max_steps == 77 and scratch.pretrain is None
    assert cfg.experiment.tokenizer.train_articles == 60, "one tokenizer, learned on the largest corpus"


def _task_arrays(train_ids):
    """Small task arrays (4 training sequences of 3 tokens, 2 val, 2 test) around the given training ids."""
    import numpy as np

    from workers.text.corpus import Ragged
    from workers.train.member import SharedArrays
    from workers.train.pretrain import SpecialIds

    def ragged(ids):
        return Ragged(np.asarray(ids, dtype=np.int32), np.arange(0, len(ids) + 1, 3, dtype=np.int64))

    return SharedArrays(blocks=np.zeros((2, 8), dtype=np.int32), train=ragged(train_ids),
                        train_labels=np.array([0, 1, 0, 1]), val=ragged([2, 5, 3, 2, 6, 3]),
                        val_labels=np.array([0, 1]), test=ragged([2, 7, 3, 2, 8, 3]), test_labels=np.array([1, 0]),
                        num_classes=2, special=SpecialIds(pad=0, cls=2, sep=3, mask=4, unk=1, vocab_size=20))


def test_the_twin_key_changes_with_what_the_scratch_twin_learns_from_and_only_with_that():
    import numpy as np

    cfg = with_reference_tokenizer(load_sweep_config(SMOKE))
    arrays = _task_arrays([2, 9, 3, 2, 10, 3, 2, 11, 3, 2, 12, 3])

    def key(values=None, index=0, task=arrays, out_root="/tmp/a"):
        point = point_config(cfg, values or {})
        return twin_key(trial_members(point.experiment, point.point_id, index, 40, out_root).scratch, task)

    base = key()
    # pre-training only (corpus size, its settings, the steps the budget gives it), where it is written,
    # and the pre-training blocks: the same twin
    assert key({"pretrain.articles": 60}) == key({"pretrain.lr": 1e-4, "pretrain.max_steps": 7}) == base
    assert key({"sweep.corpus.source": "ranked", "sweep.corpus.tokens": 5000}) == key(out_root="s3://bucket/x") == base
    assert key(task=replace(arrays, blocks=np.ones((3, 8), np.int32))) == base
    # what it learns from: another twin
    changed = [key({"finetune.lr": 1e-3}), key({"finetune.epochs": 2}), key({"finetune.precision": "bf16"}),
               key({"model.hidden_size": 32}), key({"seed": 5}), key(index=1),
               key(task=_task_arrays([2, 9, 3, 2, 10, 3, 2, 11, 3, 2, 13, 3])),  # one training token
               key(task=replace(arrays, val_labels=np.array([1, 1])))]
    assert len({base, *changed}) == len(changed) + 1, "every change makes another twin"
    with pytest.raises(ValueError, match="scratch"):
        twin_key(trial_members(cfg.experiment, "p", 0, 40, "/tmp/a").pretrained, arrays)


@pytest.mark.parametrize("uri", [False, True], ids=["path", "file-uri"])
def test_the_twin_store_hands_a_finished_twin_to_another_trial(tmp_path, uri):
    """publish -> fetch copies the twin's result and curve into another trial's scratch directory (as files
    that trial's readers load); a store without the twin, or with an unreadable one, hands over nothing."""
    import numpy as np

    from workers.storage import checkpoint
    from workers.train.member import MemberResult, load_result, save_result
    from workers.train.trial import (
        CURVE_FILE,
        fetch_twin,
        has_finished_member,
        publish_twin,
        read_twin_record,
        twin_path,
    )

    root = f"file://{tmp_path}" if uri else tmp_path
    trained, other, store = (checkpoint.join(root, name) for name in ("t1/scratch-00", "t2/scratch-00", "twins"))
    result = MemberResult("scratch-00", "scratch", 0, 0, 1, 1234, 0.5, 0.25, np.eye(2, dtype=np.float32),
                          np.ones((3, 2), dtype=np.float32), finetune_stats={"steps": 8})
    save_result(result, trained)
    checkpoint.write_bytes(checkpoint.join(trained, CURVE_FILE), b"[0.25, 0.5]")
    assert not fetch_twin(store, "t-k", other) and not has_finished_member(other)
    publish_twin(store, "t-k", trained)
    assert fetch_twin(store, "t-k", other) and has_finished_member(other)
    copy = load_result(other)
    assert (copy.val_accuracy, copy.finetune_stats) == (0.5, {"steps": 8})
    assert np.array_equal(copy.test_logits, result.test_logits)
    assert checkpoint.read_bytes(checkpoint.join(other, CURVE_FILE)) == b"[0.25, 0.5]"
    assert read_twin_record(other) == {"key": "t-k", "reused": True, "trained_in": str(trained)}
    checkpoint.write_bytes(twin_path(store, "t-k"), b"not a twin")
    assert not fetch_twin(store, "t-k", checkpoint.join(root, "t3/scratch-00"))


def test_a_trial_loads_its_own_finished_twin_before_the_stores(tmp_path):
    """A retried or resumed trial whose scratch member finished keeps it; a new trial takes the store's."""
    import numpy as np

    from workers.storage import checkpoint
    from workers.train.member import MemberResult, save_result
    from workers.train.trial import CURVE_FILE, publish_twin, scratch_twin

    cfg = with_reference_tokenizer(load_sweep_config(SMOKE))
    arrays = _task_arrays([2, 9, 3, 2, 10, 3, 2, 11, 3, 2, 12, 3])
    own, fresh = (trial_members(cfg.experiment, "p", 0, 40, tmp_path / t).scratch for t in ("t1", "t2"))
    key = twin_key(own, arrays)
    for out_dir, val_accuracy in ((own.out_dir, 0.5), (tmp_path / "elsewhere", 1.0)):
        save_result(MemberResult("scratch-00", "scratch", 0, 0, 1, 10, val_accuracy, 0.5, np.zeros((2, 2), np.float32),
                                 np.zeros((2, 2), np.float32)), out_dir)
        checkpoint.write_bytes(checkpoint.join(out_dir, CURVE_FILE), json.dumps([val_accuracy]).encode())
    publish_twin(tmp_path / "twins", key, tmp_path / "elsewhere")
    result, curve, record = scratch_twin(own, arrays, tmp_path / "twins")
    assert (result.val_accuracy, curve, record["reused"]) == (0.5, [0.5], False)
    result, curve, record = scratch_twin(fresh, arrays, tmp_path / "twins")
    assert (result.val_accuracy, curve, record["reused"], record["key"]) == (1.0, [1.0], True, key)


def test_the_report_counts_twins_and_quotes_each_left_out_points_chance_bar():
    import numpy as np

    from orchestrator.sweep.report import twin_counts

    rows = [{"trial_id": "a", "scratch_reused": False, "twin_key": "t-0"},
            {"trial_id": "b", "scratch_reused": False, "twin_key": "t-1"},
            {"trial_id": "c", "scratch_reused": True, "twin_key": "t-0"},
            {"trial_id": "d", "scratch_reused": False, "twin_key": "t-1"},  # trained at the same time as b
            {"trial_id": "e", "scratch_reused": None, "twin_key": None}]  # failed before its twin was ready
    twins = twin_counts(rows)
    assert twins == {"trials": 4, "trained": 3, "reused": 1, "distinct": 2}
    assert twin_line(twins).startswith("Scratch twins: 3 trained (2 distinct) for 4 trial(s); 1 trial(s) reused")
    four = chance_level(np.repeat(np.arange(4), 20))  # 25% chance on 80 examples
    two = chance_level(np.repeat(np.arange(2), 50))  # 50% chance on 100 examples
    one_bar = chance_line({"best_at_chance": ["p1", "p2"], "chance": {"p1": four, "p2": four, "p3": two}})
    assert one_bar.count("at most") == 1 and "25.0%" in one_bar and one_bar.endswith(": p1, p2.")
    two_bars = chance_line({"best_at_chance": ["p1", "p3"], "chance": {"p1": four, "p2": four, "p3": two}})
    assert "p1 (mean validation accuracy at most 34.7%: the most frequent class's 25.0%" in two_bars
    assert "p3 (mean validation accuracy at most 60.0%: the most frequent class's 50.0% plus two standard errors " \
           "on 100 examples)" in two_bars


def test_mean_interval_and_spearman_on_known_values():
    stat = mean_interval([1.0, 2.0, 3.0])  # sd 1, t(2) = 4.303
    assert stat["mean"] == 2.0 and stat["ci95"] == pytest.approx([2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5])
    assert mean_interval([0.5])["ci95"] is None
    assert spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])["rho"] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])["rho"] == pytest.approx(-1.0)
    # ties share their mean rank: x ranks 1.5 1.5 3 4, y ranks 1 2 3 4 -> Pearson of the ranks
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4])["rho"] == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 1, 1, 1], [1, 2, 3, 4])["rho"] is None
    # corpora of one size (a few tokens apart where the last article is cut) do not vary: no correlation
    assert spearman([1_000_000, 999_998, 1_000_000, 999_998], [0.1, 0.2, 0.3, 0.4])["rho"] is None
    assert spearman([0.811, 0.812, 0.813, 0.814], [0.1, 0.2, 0.3, 0.4])["rho"] == pytest.approx(1.0)


def test_paired_comparisons_move_one_key_within_blocks_of_seed_and_other_keys():
    def row(size, window, index, gap, status="done"):
        return {"values": {"size": size, "window": window}, "member_index": index, "status": status, "gap": gap}

    # gap = 0.1 * size index + 0.02 * window + a seed effect that pairing removes
    rows = [row(s, w, i, 0.1 * s + 0.02 * w + 0.3 * i) for s in (0, 1) for w in (0, 1, 2, 3, 4, 5) for i in (0, 1, 2)]
    rows[0] = row(0, 0, 0, None, status="error")  # a failed trial: its blocks lose that pair only
    effects = paired_effects(rows, ["size", "window"])
    size = [e for e in effects if e["key"] == "size"]
    assert [(e["a"], e["b"], e["blocks"]) for e in size] == [(0, 1, 17)]
    assert size[0]["delta"]["mean"] == pytest.approx(0.1) and size[0]["b_better"] == 17
    assert size[0]["delta"]["ci95"] == pytest.approx([0.1, 0.1])  # the seed effect cancels: no spread
    window = [(e["a"], e["b"], e["blocks"]) for e in effects if e["key"] == "window"]
    assert window == [(w, w + 1, 5 if w == 0 else 6) for w in range(5)], "six values: neighbours only"
    assert all(e["delta"]["mean"] == pytest.approx(0.02) for e in effects if e["key"] == "window")
    # four values or fewer: every pair; a search whose other keys never repeat gives no block
    few = paired_effects([r for r in rows if r["values"]["window"] < 3], ["size", "window"])
    assert [(e["a"], e["b"]) for e in few if e["key"] == "window"] == [(0, 1), (0, 2), (1, 2)]
    searched = [{"values": {"lr": lr, "epochs": e}, "member_index": 0, "status": "done", "gap": 0.1}
                for lr, e in ((1e-3, 2), (2e-3, 3), (3e-3, 4))]
    assert paired_effects(searched, ["lr", "epochs"]) == []
    assert paired_lines([]) == []


def test_a_sweep_saved_before_a_key_existed_resumes_and_a_changed_key_is_still_refused(tmp_path):
    """A sweep's config.yaml lists every key of the version that wrote it: a key added since (with its default)
    is no change, as for `committee run --resume`; a changed value still is."""
    from orchestrator.config.commands import to_yaml
    from orchestrator.run.rundir import RunDir

    cfg = load_sweep_config(SMOKE)
    text = to_yaml(cfg)
    assert "  compile: false\n" in text
    (tmp_path / "config.yaml").write_text(text.replace("  compile: false\n", ""))  # as an older version wrote it
    RunDir(tmp_path, "sweep").check_resume(cfg)
    with pytest.raises(CommitteeError, match=r"cannot change finetune.epochs \(saved: 4, now: 5\)"):
        RunDir(tmp_path, "sweep").check_resume(load_sweep_config(SMOKE, ["finetune.epochs=5"]))


def test_a_trial_that_ended_counts_as_ended_without_tunes_done_flag():
    """A trial whose function returned just before Ctrl-C can come back from Tune's saved state TERMINATED but
    without `done` on its last result (Tune sets it in place after saving): its `final` report says it ended.
    Seen in a full test run, where the resumed smoke sweep then reported itself stopped again."""
    from types import SimpleNamespace as Result

    from orchestrator.sweep.driver import unfinished_trials

    ended = Result(error=None, metrics={"final": True, "done": False})  # returned; state saved before `done`
    stopped = Result(error=None, metrics={"final": False, "done": True})  # ASHA's stop
    running = Result(error=None, metrics={"final": False, "done": False, "epoch": 2})  # interrupted
    waiting = Result(error=None, metrics=None)  # never started
    failed = Result(error=RuntimeError("x"), metrics={})
    assert unfinished_trials([ended, stopped, failed]) == 0
    assert unfinished_trials([ended, running, waiting, stopped]) == 2


def test_best_point_passes_over_points_whose_models_sit_at_chance():
    """A search on the gap must not pick a point where both models learned nothing (gap 0) over points
    where both learned and pre-training lost; with no point above chance there is no best point."""
    import numpy as np

    level = chance_level(np.repeat(np.arange(4), 20))  # balanced, 80 validation examples
    assert level["chance"] == 0.25 and level["val_examples"] == 80
    assert abs(level["bar"] - (0.25 + 2 * (0.25 * 0.75 / 80) ** 0.5)) < 1e-12
    assert chance_level(np.array([0, 0, 0, 1]))["chance"] == 0.75  # the most frequent class, not 1/classes
    cfg = load_sweep_config(SMOKE, ["sweep.search=random", "sweep.metric=val_gap",
                                    "sweep.space={finetune.lr: {choice: [1.0e-3, 1.0e-7, 3.0e-3]}}"])
    points = [{"point_id": p, "values": {"finetune.lr": lr}} for p, lr in (("p0", 1e-3), ("p1", 1e-7), ("p2", 3e-3))]

    def row(point, val, scratch, status="done"):
        return {"point_id": point, "status": status, "val_accuracy": val, "scratch_val_accuracy": scratch,
                "val_gap": val - scratch}

    rows = [row("p0", 0.60, 0.66), row("p0", 0.62, 0.66),  # learned; pre-training loses 5 points
            row("p1", 0.25, 0.25), row("p1", 0.26, 0.25),  # nothing learned: gap about 0
            row("p2", 0.55, 0.70), row("p2", 0.99, 0.10, status="error")]  # learned, loses 15; errors ignored
    chance = {p["point_id"]: level for p in points}
    chosen = best_point(cfg, points, rows, chance)
    assert chosen["point"]["point_id"] == "p0" and chosen["at_chance"] == ["p1"]
    assert abs(chosen["point"]["metric_mean"] - (-0.05)) < 1e-9 and chosen["point"]["seeds_done"] == 2
    nothing = best_point(cfg, points, [row("p1", 0.25, 0.25), row("p0", 0.3, 0.5)], chance)
    assert nothing == {"point": None, "at_chance": ["p0", "p1"]}
    scratch_cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"metric": "scratch_val_accuracy"})})
    by_scratch = best_point(scratch_cfg, points, [row("p1", 0.25, 0.60), row("p2", 0.55, 0.50)], chance)
    assert by_scratch["point"]["point_id"] == "p1", "the scratch metric rests on the scratch model having learned"


def test_docs_hold_the_sweep_section_reference():
    doc = (REPO / "docs" / "sweep.md").read_text()
    for key, default, _ in describe_fields(SweepSection, "sweep."):
        assert f"| `{key}` | `{default}` |" in doc, f"docs/sweep.md lacks the row of {key}"


# ----------------------------------------------------------------------------------------------
# end to end on a real local Ray and Tune


def _start_sweep(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))


def _wait_for(predicate, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, "the sweep ended before it could be stopped:\n" + proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """The smoke sweep, one trial at a time, stopped with Ctrl-C once a trial has finished, then resumed."""
    run_dir = tmp_path_factory.mktemp("sweeps") / "smoke"
    args = [SMOKE, "sweep.max_concurrent_trials=1", "--run-dir", run_dir]
    proc = _start_sweep(*args)
    _wait_for(lambda: (run_dir / "metrics.jsonl").is_file() and events(run_dir, "trial_end"), proc, 300)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune ends the sweep and saves its state
    stopped_output, _ = proc.communicate(timeout=120)
    stopped = {"returncode": proc.returncode, "output": stopped_output,
               "finished": {e["trial_id"] for e in events(run_dir, "trial_end")},
               "starts": len(events(run_dir, "trial_start"))}
    resumed = committee("sweep", "--resume", run_dir)  # the form run and distill take: the sweep's directory
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    return run_dir, stopped, resumed


def test_a_stopped_sweep_resumes_running_only_the_missing_trials(smoke_sweep):
    run_dir, stopped, _ = smoke_sweep
    assert stopped["returncode"] == 130, stopped["output"][-3000:]
    assert "continue it with: committee sweep" in stopped["output"] and "--resume" in stopped["output"]
    assert 1 <= len(stopped["finished"]) < 4
    starts_after = events(run_dir, "trial_start")[stopped["starts"]:]
    assert not stopped["finished"] & {s["trial_id"] for s in starts_after}, "a finished trial ran again"
    assert {s["trial_id"] for s in events(run_dir, "trial_start")} == {r["trial_id"] for r in rows_of(run_dir)}
    assert [r["status"] for r in rows_of(run_dir)] == ["done"] * 4


def test_smoke_sweep_writes_rows_points_committees_and_plots(smoke_sweep):
    run_dir, _, proc = smoke_sweep
    assert f"sweep report: {run_dir / 'sweep.md'}" in proc.stdout
    for name in ("config.yaml", "sweep.csv", "sweep.json", "sweep.md", "gap_vs_size.png", "gap_vs_overlap.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "best_config.yaml").exists(), "a grid sweep is not a search"
    report = json.loads((run_dir / "sweep.json").read_text())
    rows = report["rows"]
    assert sorted((r["values"]["pretrain.articles"], r["member_index"], r["seed"]) for r in rows) == \
        [(20, 0, 0), (20, 1, 1), (60, 0, 0), (60, 1, 1)]
    for r in rows:
        assert r["status"] == "done"
        assert r["gap"] == pytest.approx(r["test_accuracy"] - r["scratch_test_accuracy"])
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["scratch_test_accuracy"] <= 1
    small, large = report["points"]
    assert (small["values"], large["values"]) == ({"pretrain.articles": 20}, {"pretrain.articles": 60})
    # budget epochs: one pass over a larger corpus is more tokens; more articles share more of the task's words
    assert large["corpus_tokens"] > 2 * small["corpus_tokens"] and large["pretrain_tokens"] > 2 * small["pretrain_tokens"]
    assert large["type_overlap"] > small["type_overlap"] and large["occurrence_overlap"] > small["occurrence_overlap"]
    for p in report["points"]:
        assert p["seeds_done"] == 2 and p["gap"]["n"] == 2 and p["gap"]["ci95"][0] <= p["gap"]["mean"]
        assert p["committee"]["members"] == 2 and len(p["committee"]["scratch_curve"]) == 2
        assert p["committee"]["pretrained_curve"][0] == next(
            r["test_accuracy"] for r in rows if r["point_id"] == p["point_id"] and r["member_index"] == 0)
    assert set(report["correlations"]) == {"corpus_tokens", "pretrain_tokens", "type_overlap", "occurrence_overlap",
                                           "token_type_overlap", "token_occurrence_overlap"}
    for p in report["points"]:  # token overlap on the sweep's vocabulary (learned here: near 100%, docs/sweep.md)
        assert 0.9 < p["token_occurrence_overlap"] <= 1 and 0 < p["token_type_overlap"] <= 1
    md = (run_dir / "sweep.md").read_text()
    assert "gap [95% CI]" in md and "Spearman" in md and "pretrain.articles=60" in md
    # the resumed sweep's command only continues it; the report also gives the resolved config, which reruns it
    assert f"# continued with: committee sweep --resume {run_dir}\n" in md
    assert f"committee sweep {run_dir / 'config.yaml'} --run-dir {run_dir}-again" in md
    from orchestrator.config.commands import to_yaml

    assert to_yaml(load_sweep_config(run_dir / "config.yaml")) == \
        to_yaml(with_reference_tokenizer(load_sweep_config(SMOKE, ["sweep.max_concurrent_trials=1"])))


def test_smoke_sweep_tests_committees_and_twins_on_the_test_examples(smoke_sweep):
    """Each point's committees carry 95% intervals over the test examples and their paired test; each trial its
    accuracies' intervals and the paired test of its member against its scratch twin; models at chance are named."""
    from workers.stats import wilson_interval

    run_dir, _, _ = smoke_sweep
    report = json.loads((run_dir / "sweep.json").read_text())
    md = (run_dir / "sweep.md").read_text()
    assert "## Committees on the test examples (paired)" in md and "members vs twins" in md
    for p in report["points"]:
        c = p["committee"]
        stats = c["statistics"]
        n = stats["test_examples"]
        assert n == 160  # 40 per class, 4 classes
        assert c["pretrained_ci95"] == stats["models"]["committee/soft"]["ci95"]
        assert c["pretrained_ci95"][0] < c["pretrained_accuracy"] < c["pretrained_ci95"][1]
        assert (c["comparison"]["a"], c["comparison"]["b"]) == ("committee/soft", "scratch_committee/soft")
        assert c["comparison"]["difference"] == pytest.approx(c["gap"])
        rows = [r for r in report["rows"] if r["point_id"] == p["point_id"]]
        assert c["trials"] == {str(r["member_index"]): r["trial_id"] for r in rows}
        for r in rows:
            for key in ("test_accuracy", "scratch_test_accuracy"):
                assert r[f"{key}_ci95"] == pytest.approx(list(wilson_interval(round(r[key] * n), n)))
            assert r["twin_test"]["difference"] == pytest.approx(r["gap"])
            assert r["twin_test"]["verdict"] in ("a better", "b better", "inconclusive")
        for w in stats["warnings"]:
            assert stats["models"][w["model"]]["ci95"][0] <= stats["chance"]["rate"]
            assert w["message"] in md


def test_trials_report_every_epoch_and_keep_their_members(smoke_sweep):
    run_dir, _, _ = smoke_sweep
    per_epoch = [r for r in events(run_dir, "result") if not r["final"]]
    assert {r["epoch"] for r in per_epoch} == {1, 2, 3, 4}, "validation accuracy after every fine-tuning epoch"
    for row in rows_of(run_dir):
        index = int(row["member_index"])
        members = {p.name for p in (run_dir / "trials" / row["trial_id"]).iterdir()}
        assert members == {f"member-{index:02d}", f"scratch-{index:02d}"}
    from transformers import AutoTokenizer

    (tokenizer_dir,) = (run_dir / "tokenizers").iterdir()
    assert len(AutoTokenizer.from_pretrained(str(tokenizer_dir))) == 1000


def test_points_that_differ_only_in_their_corpus_share_scratch_twins(smoke_sweep):
    """2 corpus sizes x 2 seeds: 2 scratch twins are trained, not 4; the second trial of a seed copies the
    first one's twin, so the seed's scratch accuracies are equal at both points."""
    run_dir, _, _ = smoke_sweep
    report = json.loads((run_dir / "sweep.json").read_text())
    assert report["twins"] == {"trials": 4, "trained": 2, "reused": 2, "distinct": 2}
    for index in (0, 1):
        pair = [r for r in report["rows"] if r["member_index"] == index]
        assert {r["values"]["pretrain.articles"] for r in pair} == {20, 60} and len({r["twin_key"] for r in pair}) == 1
        assert len({(r["scratch_val_accuracy"], r["scratch_test_accuracy"]) for r in pair}) == 1
        (trained,), (reused,) = ([r for r in pair if r["scratch_reused"] is flag] for flag in (False, True))
        scratch = f"scratch-{index:02d}"
        record = json.loads((run_dir / "trials" / reused["trial_id"] / scratch / "twin.json").read_text())
        assert Path(record["trained_in"]) == run_dir / "trials" / trained["trial_id"] / scratch
    trained_dirs = [d for d in (run_dir / "trials").glob("*/scratch-*") if (d / "classifier").is_dir()]
    assert len(trained_dirs) == 2 and len(list((run_dir / "twins").iterdir())) == 2
    for scratch_dir in trained_dirs:  # no twin was ready: the trial pre-trained its member first, then trained it
        mlm = scratch_dir.parent / scratch_dir.name.replace("scratch", "member") / "mlm"
        assert max(f.stat().st_mtime for f in mlm.iterdir()) <= (scratch_dir / "result.npz").stat().st_mtime
    assert sorted(r["scratch_reused"] for r in rows_of(run_dir)) == ["False", "False", "True", "True"]
    md = (run_dir / "sweep.md").read_text()
    assert "Scratch twins: 2 trained for 4 trial(s); 2 trial(s) reused" in md
    # paired within seed: the shared twin cancels, so a block's difference of gaps is that of pre-trained accuracies
    (paired,) = report["paired"]
    assert (paired["key"], paired["a"], paired["b"], paired["blocks"]) == ("pretrain.articles", 20, 60, 2)
    accuracy = {(r["member_index"], r["values"]["pretrain.articles"]): r["test_accuracy"] for r in report["rows"]}
    assert sorted(paired["diffs"]) == pytest.approx(sorted(accuracy[(i, 60)] - accuracy[(i, 20)] for i in (0, 1)))
    assert "## Paired comparisons (within seed)" in md and "| `pretrain.articles` | 20 → 60 | 2 |" in md


def test_an_existing_sweep_directory_is_refused(smoke_sweep):
    run_dir, _, _ = smoke_sweep
    proc = committee("sweep", SMOKE, "--run-dir", run_dir)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # end to end, over a minute here: make test-all
def test_asha_stops_a_poor_trial_and_a_search_writes_a_config_committee_validates(tmp_path):
    run_dir = tmp_path / "asha"
    proc = committee("sweep", SMOKE, *ASHA_SEARCH, "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {float(r["finetune.lr"]): r for r in rows_of(run_dir)}
    assert rows[3e-3]["status"] == "done" and rows[3e-3]["iterations"] == "5"
    assert rows[1e-7]["status"] == "stopped early" and int(rows[1e-7]["iterations"]) < 5
    best = run_dir / "best_config.yaml"
    assert "finetune.lr=0.003" in (run_dir / "sweep.md").read_text().split("## Best point")[1]
    checked = committee("validate", best)
    assert checked.returncode == 0, checked.stderr
    assert best.read_text().startswith("# committee run ")
    assert "lr: 0.003" in best.read_text()


@pytest.mark.slow
def test_an_optuna_search_runs_each_suggestion_once_per_seed(tmp_path):
    pytest.importorskip("optuna", reason="the search extra: pip install -e .[search]")
    run_dir = tmp_path / "optuna"
    proc = committee("sweep", SMOKE, "sweep.search=optuna", "sweep.num_samples=2", "sweep.seeds=2",
                     "sweep.metric=val_accuracy", "pretrain.max_steps=10", "sweep.budget=steps",
                     "sweep.space={finetune.lr: {loguniform: [1.0e-3, 1.0e-2]}}", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = rows_of(run_dir)
    assert len(rows) == 4 and sorted(r["member_index"] for r in rows) == ["0", "0", "1", "1"]
    assert len({r["finetune.lr"] for r in rows}) == 2, "the seeds of a suggestion share its values"
    assert committee("validate", run_dir / "best_config.yaml").returncode == 0
