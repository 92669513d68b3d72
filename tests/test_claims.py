"""`committee claims`: every shipped suite and its plan validate, bad suites are refused naming the key, the
verdict rules on known intervals, and (slow) the smoke suite end to end on a real local Ray with the real data:
every claim's numbers reproduced from the steps' own files, and --resume reruns only what is missing."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

from orchestrator.claims import measure
from orchestrator.claims.plan import plan_steps
from orchestrator.config import commands
from orchestrator.config.claims import BLOCK_SEED_STRIDE, load_claims_config, suite_path
from orchestrator.config.loader import load_raw
from workers.errors import ConfigError

SUITES = sorted((REPO / "configs").glob("claims_*.yaml"))


# ----------------------------------------------------------------------------------------------
# suites and plans (fast)


def test_the_three_suites_ship():
    assert {p.stem for p in SUITES} >= {"claims_smoke", "claims_laptop", "claims_paper"}
    assert suite_path("laptop") == REPO / "configs" / "claims_laptop.yaml"


@pytest.mark.parametrize("path", SUITES, ids=[p.name for p in SUITES])
def test_every_suite_and_every_step_of_its_plan_validate(path, tmp_path):
    suite = load_claims_config(path)
    steps = plan_steps(suite)
    blocks = suite.claims.seed_blocks
    assert blocks >= 3
    tasks = [suite.experiment.task.name, *suite.other_tasks]
    runs = [s for s in steps if s.kind == "run"]
    assert len(runs) == blocks * len(tasks)
    assert sorted(s.id for s in steps if s.kind == "latency") == [f"b{b}-latency" for b in range(blocks)]
    assert sorted(s.id for s in steps if s.kind == "distill") == [f"b{b}-distill" for b in range(blocks)]
    assert [s.id for s in steps if s.kind == "sweep"] == ["data", "overlap"]
    seeds = set()
    for step in runs:
        cfg = step.config
        assert cfg.seed == suite.experiment.seed + BLOCK_SEED_STRIDE * step.block
        seeds |= {cfg.seed + i for i in range(cfg.committee.members)} | {cfg.seed + 10_000}
        assert cfg.deep.enabled and cfg.deep.token_budget == "committee" and cfg.committee.scratch
        assert cfg.task.max_length <= cfg.model.max_position
        if step.task == suite.experiment.task.name:
            assert step.source is None
        else:  # the same pre-training, fine-tuned on another task
            assert step.source == f"b{step.block}-{suite.experiment.task.name}"
            assert cfg.task.name == suite.other_tasks[step.task].name
    assert len(seeds) == blocks * (suite.experiment.committee.members + 1), "two blocks share a seed"
    for step in steps:
        index = steps.index(step)
        if step.source is not None:
            assert step.source in [s.id for s in steps[:index]], f"{step.id} reads a step that runs after it"
        if step.config is None:
            continue
        # each step's config, written as the suite writes it, is read back by its own command to the same config
        kind = {"run": "run", "sweep": "sweep", "distill": "distill"}[step.kind]
        written = tmp_path / f"{step.id}.yaml"
        written.write_text(commands.to_yaml(step.config))
        assert commands.load(kind, written) == step.config
        assert step.command().startswith(f"committee {kind} $SUITE/configs/{step.id}.yaml")
    for step in (s for s in steps if s.kind == "sweep"):
        assert step.config.sweep.seeds == blocks and not step.config.experiment.deep.enabled
        assert len(step.config.sweep.space) == 1


def test_the_plan_command_prints_every_step_and_runs_nothing(tmp_path):
    proc = run_cli("claims", "smoke", "--plan", "--run-dir", tmp_path / "suite")
    assert proc.returncode == 0, proc.stderr
    for step in plan_steps(load_claims_config("smoke")):
        assert step.id in proc.stdout
    assert "--pretrained-from $SUITE/b0-ag_news" in proc.stdout and "--from-run $SUITE/b1-ag_news" in proc.stdout
    assert not (tmp_path / "suite").exists()


@pytest.mark.parametrize("override, message", [
    ("claims.seed_block=4", "unknown config key 'claims.seed_block' (did you mean 'claims.seed_blocks'?)"),
    ("claims.other_tasks.dbpedia_14.train_per_clas=5",
     "unknown config key 'claims.other_tasks.dbpedia_14.train_per_clas' (did you mean "
     "'claims.other_tasks.dbpedia_14.train_per_class'?)"),
    ("claims.data.spac={}", "unknown config key 'claims.data.spac' (did you mean 'claims.data.space'?)"),
    ("claims.distill.student.step=3", "did you mean 'claims.distill.student.steps'?"),
    ("claims.latency.request=3", "did you mean 'claims.latency.requests'?"),
    ("claims.seed_blocks=2", "claims.seed_blocks: Input should be greater than or equal to 3"),
    ("deep.token_budget=member", "deep.token_budget is 'member'; a claims suite needs 'committee'"),
    ("deep.enabled=false", "deep.enabled is False; a claims suite needs True"),
    ("claims.data.seeds=5", "claims.data.seeds is 5, but a claim's sweep has one seed per block"),
    ("claims.distill.methods=[random_hard,random_prior]", "claims.distill.methods lacks random_single, random_equal"),
    ("claims.overlap.corpus.source=seeded", "claims.overlap must vary the overlap at a fixed corpus size"),
    ("claims.other_tasks.ag_news={}", "claims.other_tasks.ag_news repeats the task the blocks pre-train on"),
    ("claims.other_tasks.few_rel.max_length=100", "task.max_length (100) exceeds model.max_position (64)"),
])
def test_a_bad_suite_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_claims_config("smoke", [override])
    assert message in str(info.value)


def test_bad_suites_exit_2_with_one_message_and_no_traceback(tmp_path):
    proc = run_cli("claims", "smok", "--plan")
    assert proc.returncode == 2 and "claims suite 'smok' is neither a file nor a built-in suite (did you mean " \
        "'smoke'?)" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("claims", "smoke", "claims.seed_blocks=2", "--plan")
    assert proc.returncode == 2 and "claims.seed_blocks" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("claims", "--resume", tmp_path)
    assert proc.returncode == 2 and "holds no suite.yaml" in proc.stderr
    proc = run_cli("run", REPO / "configs" / "claims_smoke.yaml")
    assert proc.returncode == 2 and "a claims: section is read by `committee claims SUITE`" in proc.stderr


def test_a_suite_without_its_claims_section_is_refused(tmp_path):
    path = tmp_path / "claims_x.yaml"
    raw = load_raw(REPO / "configs" / "claims_smoke.yaml")
    raw.pop("claims")
    import yaml

    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="has no 'claims:' section"):
        load_claims_config(path)


# ----------------------------------------------------------------------------------------------
# verdicts on known intervals (fast)


def test_direction_equivalence_and_latency_verdicts_follow_their_intervals():
    def effect(low, high):
        return {"mean": (low + high) / 2, "ci95": [low, high]}

    assert measure.direction_verdict(effect(0.5, 3.0)) == "holds"
    assert measure.direction_verdict(effect(-3.0, -0.1)) == "does not hold"
    assert measure.direction_verdict(effect(-1.0, 4.0)) == "inconclusive"
    assert measure.direction_verdict({"mean": 2.0, "ci95": None}) == "inconclusive"  # one block: no interval
    margin = 2.0
    assert measure.equivalence_verdict(effect(-1.5, 1.9), margin) == "holds"  # within +-margin
    assert measure.equivalence_verdict(effect(0.3, 6.0), margin) == "holds"  # wholly above 0: matches or beats
    assert measure.equivalence_verdict(effect(-1.0, 3.0), margin) == "inconclusive"  # wider than the margin
    assert measure.equivalence_verdict(effect(-2.5, 1.0), margin) == "inconclusive"
    assert measure.equivalence_verdict(effect(-6.0, -2.1), margin) == "does not hold"
    assert measure.latency_verdict(effect(0.2, 0.9)) == "holds"
    assert measure.latency_verdict(effect(1.1, 1.4)) == "does not hold"
    assert measure.latency_verdict(effect(0.8, 1.2)) == "inconclusive"
    assert measure.combined(["holds", "holds"]) == "holds"
    assert measure.combined(["holds", "inconclusive"]) == "inconclusive"
    assert measure.combined(["inconclusive", "does not hold", "holds"]) == "does not hold"


def test_over_blocks_is_the_t_interval_of_the_blocks():
    out = measure.over_blocks([1.0, 2.0, 6.0])
    half = 4.303 * np.std([1.0, 2.0, 6.0], ddof=1) / math.sqrt(3)
    assert out["mean"] == pytest.approx(3.0) and out["ci95"] == pytest.approx([3.0 - half, 3.0 + half])
    assert out["blocks"] == [1.0, 2.0, 6.0] and out["n"] == 3


def test_matched_parameters_is_the_largest_committee_within_bert6s_parameters():
    # the paper's counts (masked LM): BERT-6 66,692,154; BERT-1 (hidden 768) 31,252,794 -> two BERT-1s
    assert measure.matched_parameters_size(31_252_794, 66_692_154, 6) == 2
    assert measure.matched_parameters_size(1_000, 5_999, 4) == 4  # never more than the committee
    assert measure.matched_parameters_size(1_000, 999, 4) == 0


# ----------------------------------------------------------------------------------------------
# the smoke suite end to end (slow)


@pytest.fixture(scope="module")
def smoke_suite(tmp_path_factory):
    suite_dir = tmp_path_factory.mktemp("claims") / "smoke"
    proc = run_cli("claims", "smoke", "--run-dir", suite_dir, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return suite_dir, proc


def _labels(suite_dir: Path, step_id: str) -> np.ndarray:
    from orchestrator.run.prepare import load_cfg_task

    return load_cfg_task(commands.load("run", suite_dir / "configs" / f"{step_id}.yaml")).test_labels


def _result(run_dir: Path, name: str):
    from workers.train.member import load_result

    return load_result(run_dir / "members" / name)


@pytest.mark.slow  # three blocks of runs, two sweeps, three distillations: a few minutes here
def test_the_smoke_suite_reports_every_claim_from_its_steps_files(smoke_suite):
    suite_dir, proc = smoke_suite
    out = json.loads((suite_dir / "claims.json").read_text())
    for name in ("claims.md", "claims_effects.png", "claims_latency.png", "suite.yaml", "steps.json"):
        assert (suite_dir / name).is_file(), name
    assert [c["claim"] for c in out["claims"]] == [1, 2, 3, 4, 5]
    assert set(json.loads((suite_dir / "steps.json").read_text())) == {s["id"] for s in out["steps"]}
    assert all(s["wall_s"] > 0 and len(s["load_average_before"]) == 3 for s in out["steps"])
    assert out["hardware"]["cpu"] and out["hardware"]["cpu_cores"] >= 1 and out["hardware"]["precision"]
    c1, c2, c3, c4, c5 = out["claims"]

    # claim 1: each block's difference is its run's own paired test, and the interval is over the blocks
    for t in c1["tasks"].values():
        assert [b["block"] for b in t["blocks"]] == [0, 1, 2]
        diffs = []
        for b in t["blocks"]:
            report = json.loads((suite_dir / b["step"] / "report.json").read_text())
            test = next(c for c in report["statistics"]["comparisons"]
                        if (c["a"], c["b"]) == ("committee/soft", "scratch_committee/soft"))
            assert b["difference"] == pytest.approx(100 * test["difference"])
            assert b["mcnemar_p"] == test["mcnemar_p"]
            diffs.append(100 * (report["committee"]["soft"]["test_accuracy"]
                                - report["scratch_committee"]["soft"]["test_accuracy"]))
        assert t["effect"]["blocks"] == pytest.approx(diffs)
        assert t["effect"]["mean"] == pytest.approx(np.mean(diffs))
        assert t["verdict"] == measure.direction_verdict(t["effect"])

    # claims 2 and 3: per seed, the change of the gap, and the members' paired test recomputed from the trials
    from orchestrator.claims.measure import _trial_result
    from orchestrator.sweep.driver import trial_root  # noqa: F401 (where trials keep their members)
    from workers.stats import compare_paired
    from workers.train.member import Role

    for c, step_id in ((c2, "data"), (c3, "overlap")):
        sweep = json.loads((suite_dir / step_id / "sweep.json").read_text())
        cfg = commands.load("sweep", suite_dir / "configs" / f"{step_id}.yaml")
        levels = [lv["point_id"] for lv in c["levels"]]
        assert {c["low"], c["high"]} == {levels[0], levels[-1]} and len(c["blocks"]) == 3
        from orchestrator.run.prepare import load_cfg_task

        labels = load_cfg_task(cfg.experiment).test_labels
        rows = {(r["point_id"], r["member_index"]): r for r in sweep["rows"]}
        for b in c["blocks"]:
            low, high = rows[(c["low"], b["block"])], rows[(c["high"], b["block"])]
            assert b["change"] == pytest.approx(100 * (high["gap"] - low["gap"]))
            assert b["shared_twin"], "the twin does not depend on the corpus: both levels share it"
            pre = [_trial_result(suite_dir / step_id, cfg, r["trial_id"], Role.PRETRAINED, b["block"])
                   for r in (high, low)]
            again = compare_paired(*(p.test_logits.argmax(1) == labels for p in pre), sweep["seed"],
                                   f"{step_id} seed {b['block']}: high vs low")
            assert b["mcnemar_p"] == again["mcnemar_p"] and b["ci95"] == pytest.approx([100 * x for x in again["ci95"]])
            assert b["change"] == pytest.approx(100 * again["difference"])  # the same twin cancels
        assert c["verdict"] == measure.direction_verdict(c["effect"])
    assert [lv["corpus_tokens"] for lv in c2["levels"]] == sorted(lv["corpus_tokens"] for lv in c2["levels"])
    assert [lv["type_overlap"] for lv in c3["levels"]] == sorted(lv["type_overlap"] for lv in c3["levels"])
    assert all(lv["committee"]["ambiguity"] >= 0 for lv in c2["levels"])

    # claim 4: matched tokens from the run's test; matched parameters recomputed from the members' logits
    from workers.committee.voting import aggregate

    for t in c4["tasks"].values():
        for b in t["blocks"]:
            run_dir = suite_dir / b["step"]
            report = json.loads((run_dir / "report.json").read_text())
            assert b["tokens"]["deep"] == 2 * b["tokens"]["member"]  # deep.token_budget: committee, 2 members
            m = b["matched_parameters"]["members"]
            assert m >= 2 and m * b["parameters"]["member"] <= b["parameters"]["deep"]
            labels = _labels(suite_dir, b["step"])
            logits = np.stack([_result(run_dir, f"member-{i:02d}").test_logits for i in range(m)])
            votes = aggregate(logits, "soft").argmax(1) == labels
            deep = _result(run_dir, "deep").test_logits.argmax(1) == labels
            assert 100 * deep.mean() == pytest.approx(b["deep"]) == pytest.approx(100 * report["deep"]["test_accuracy"])
            again = compare_paired(votes, deep, report["seed"], f"committee of {m} vs deep")
            assert b["matched_parameters"]["difference"] == pytest.approx(100 * again["difference"])
            assert b["matched_parameters"]["mcnemar_p"] == again["mcnemar_p"]
        for matching in ("matched_tokens", "matched_parameters"):
            assert t[matching]["verdict"] == measure.equivalence_verdict(t[matching]["effect"], c4["margin_points"])
    latency = c4["latency"]
    assert [b["block"] for b in latency["blocks"]] == [0, 1, 2] and set(latency["batches"]) == {"1", "8"}
    for b in latency["blocks"]:
        for r in b["batches"].values():
            ms = r["latency"]
            assert r["ratio_p50"] == pytest.approx(ms["committee_packed"]["p50_ms"] / min(
                ms["deep_packed_kernels"]["p50_ms"], ms["deep_hf"]["p50_ms"]))

    # claim 5: student seeds paired within each block, read from distill.json
    assert {(c["a"], c["b"]) for c in c5["comparisons"]} == {("random_prior", "random_single"),
                                                             ("random_prior", "random_equal")}
    for comp in c5["comparisons"]:
        for b in comp["blocks"]:
            rows = json.loads((suite_dir / b["step"] / "distill.json").read_text())["rows"]
            acc = {(r["method"], r["seed"]): r["test_accuracy"] for r in rows if r["ipc"] == comp["ipc"]}
            seeds = sorted(s for (m, s) in acc if m == comp["a"])
            assert b["by_seed"] == pytest.approx([100 * (acc[(comp["a"], s)] - acc[(comp["b"], s)]) for s in seeds])
            assert b["students"] == 3

    # the markdown says every verdict, the commands and the machine
    md = (suite_dir / "claims.md").read_text()
    for c in out["claims"]:
        assert f"## Claim {c['claim']}:" in md and c["verdict"] in md
    assert "committee run $SUITE/configs/b1-dbpedia_14.yaml --run-dir $SUITE/b1-dbpedia_14 --pretrained-from " \
           "$SUITE/b1-ag_news" in md
    assert out["hardware"]["cpu"] in md and "load average" in md
    assert str(suite_dir) not in md, "claims.md names no path of the machine it ran on"
    for c in out["claims"]:
        assert f"  claim {c['claim']}: {c['verdict']}" in proc.stdout


@pytest.mark.slow
def test_resume_reruns_only_the_missing_step_and_reports_the_same_claims(smoke_suite):
    suite_dir, _ = smoke_suite
    before = json.loads((suite_dir / "claims.json").read_text())
    shutil.rmtree(suite_dir / "b2-latency")
    (suite_dir / "claims.json").unlink()
    proc = run_cli("claims", "--resume", suite_dir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("finished before, kept") == len(before["steps"]) - 1
    assert "b2-latency: committee claims" in proc.stdout
    after = json.loads((suite_dir / "claims.json").read_text())
    for old, new in zip(before["claims"], after["claims"]):
        if old["claim"] != 4:
            assert new == old  # every number but the new latency measurement is a function of the files
    assert after["claims"][3]["tasks"] == before["claims"][3]["tasks"]
    proc = run_cli("claims", "smoke", "--run-dir", suite_dir)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr  # an existing suite directory is not replaced


# ----------------------------------------------------------------------------------------------
# the committed laptop suite: docs/claims.md and the README say what its claims.json says (fast)

LAPTOP = REPO / "docs" / "claims" / "laptop"
TABLE_BEGIN = ("<!-- BEGIN tables generated from docs/claims/laptop/claims.json by "
               "`python -m orchestrator.claims.report docs/claims/laptop/claims.json` -->")
TABLE_END = "<!-- END tables -->"
DECIMAL = re.compile(r"(?<![\w.])[+\-−]?\d[\d,]*\.\d+")
README_CLAIMS = "## What holds and what does not"


def _numbers(value) -> set[str]:
    """Every way a claims.json number is written in the docs: 1 or 2 decimals, signed or not, and minus as '-'."""
    out: set[str] = set()
    if isinstance(value, dict):
        for v in value.values():
            out |= _numbers(v)
    elif isinstance(value, list):
        for v in value:
            out |= _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for digits in (1, 2):
            out |= {f"{value:.{digits}f}", f"{value:+.{digits}f}", f"{abs(value):.{digits}f}"}
        if isinstance(value, int):
            out |= {str(value), f"{value:,}"}
        if 0 < abs(value) < 1:  # a share written in percent
            out |= {f"{100 * value:.1f}"}
    return out


def _cited(text: str) -> list[str]:
    return [n.replace("−", "-") for n in DECIMAL.findall(text)]


def _laptop() -> dict:
    return json.loads((LAPTOP / "claims.json").read_text())


def test_the_laptop_suites_claims_are_committed_whole():
    out = _laptop()
    assert out["suite"] == "claims-laptop" and out["setup"]["seed_blocks"] == 3
    assert [c["claim"] for c in out["claims"]] == [1, 2, 3, 4, 5]
    assert all(s.get("wall_s", 0) > 0 for s in out["steps"]), "every step ran"
    assert not list(LAPTOP.rglob("*.safetensors")) and not list(LAPTOP.rglob("*.npz")), "never weights"
    from orchestrator.claims.report import markdown

    assert (LAPTOP / "claims.md").read_text() == markdown(out), "claims.md is what claims.json renders"


def test_docs_claims_holds_the_verdict_table_of_the_committed_json():
    from orchestrator.claims.report import verdict_table

    text = (REPO / "docs" / "claims.md").read_text()
    assert TABLE_BEGIN in text and TABLE_END in text
    table = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == "\n".join(verdict_table(_laptop())).strip()


@pytest.mark.parametrize("where", ["docs/claims.md", "README.md"])
def test_every_number_the_claims_text_cites_is_in_the_committed_json(where):
    text = (REPO / where).read_text()
    if where == "README.md":
        assert README_CLAIMS in text
        text = text.split(README_CLAIMS, 1)[1].split("\n## ", 1)[0]
    else:
        text = text.split("## Measured: the laptop suite", 1)[1]
    known = _numbers(_laptop())
    cited = _cited(text)
    assert cited, f"{where} cites no number of the suite"
    missing = sorted({n for n in cited if n not in known})
    assert not missing, f"{where} cites numbers that docs/claims/laptop/claims.json does not hold: {missing}"
