"""The served benchmark's statistics and verdicts, and the docs' serving tables against the committed JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.serve.http_load import LoadResult, throughput_windows
from bench.serve.report import (
    PROFILE_KEYS,
    paired_accuracy_difference,
    percentile_ratio,
    profile_rows,
    tail_ratio,
    throughput_ratio,
    verdict,
)

REPO = Path(__file__).resolve().parents[1]
SERVE_JSON = sorted((REPO / "docs").glob("serve_bench_*.json"))


def test_verdict_reads_the_whole_interval():
    assert verdict([0.2, 0.35], "<=", 0.4) == "met"
    assert verdict([0.3, 0.5], "<=", 0.4) == "inconclusive"
    assert verdict([0.45, 0.6], "<=", 0.4) == "NOT met"
    assert verdict([2.6, 3.0], ">=", 2.5) == "met"
    assert verdict([2.0, 2.7], ">=", 2.5) == "inconclusive"
    assert verdict([1.0, 2.0], ">=", 2.5) == "NOT met"


def test_ratios_and_their_intervals_cover_known_values():
    rng = np.random.default_rng(0)
    fast, slow = rng.normal(10, 1, 500), rng.normal(40, 4, 500)
    ratio = percentile_ratio(fast, slow, 50)
    assert ratio["value"] == pytest.approx(0.25, abs=0.02) and ratio["ci95"][0] < ratio["value"] < ratio["ci95"][1]
    assert ratio["ci95"][1] - ratio["ci95"][0] < 0.05
    windows = throughput_ratio(np.full(20, 90.0) + rng.normal(0, 3, 20), np.full(20, 30.0) + rng.normal(0, 3, 20))
    assert windows["ci95"][0] < 3.0 < windows["ci95"][1]
    tail = tail_ratio(np.r_[np.full(980, 10.0), np.full(20, 100.0)])
    assert tail["value"] == pytest.approx(np.percentile(np.r_[np.full(980, 10.0), np.full(20, 100.0)], 99) / 10.0)


def test_paired_accuracy_difference_counts_discordant_texts():
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1, 1, 1], dtype=bool)
    b = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1, 0], dtype=bool)
    diff = paired_accuracy_difference(a, b)
    assert diff["value"] == pytest.approx(20.0) and diff["discordant"] == 2 and diff["n"] == 10
    assert diff["ci95"][0] <= 20.0 <= diff["ci95"][1]
    same = paired_accuracy_difference(a, a)
    assert same["value"] == 0.0 and same["ci95"] == [0.0, 0.0]


def test_throughput_windows_count_answers_per_second():
    result = LoadResult(latencies_s=[0.01] * 7, completed_at_s=[0.1, 0.5, 0.9, 1.2, 1.3, 2.5, 2.99], window_s=3.0)
    assert throughput_windows(result).tolist() == [3.0, 2.0, 2.0]
    assert result.throughput == pytest.approx(7 / 3)


# ----------------------------------------------------------------------------------------------
# docs: every number of the serving tables comes from the committed JSON


def _rows(doc: str, marker: str) -> list[list[str]]:
    """The rows of the markdown table that follows `marker` in `doc` (cells stripped, header and rule dropped)."""
    block = doc.split(marker, 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in block.splitlines() if line.startswith("|")]
    return rows[2:]


def _num(cell: str) -> float:
    return float(re.sub(r"[*,x%]", "", cell.split()[0]))


@pytest.mark.parametrize("path", SERVE_JSON, ids=[p.name for p in SERVE_JSON])
def test_performance_doc_holds_the_served_tables_of_the_json(path):
    result = json.loads(path.read_text())
    doc = (REPO / "docs" / "performance.md").read_text()
    marker = f"<!-- serve table: {path.name} -->"
    assert marker in doc, f"docs/performance.md has no table for {path.name}"
    rows = _rows(doc, marker)
    expected = [(level["label"], name, level["models"][name])
                for level in result["levels"] for name in result["models"]]
    assert len(rows) == len(expected)
    for row, (label, name, s) in zip(rows, expected):
        assert row[0] == label and row[1] == name
        for cell, key in zip(row[2:6], ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")):
            assert _num(cell) == pytest.approx(s[key], abs=0.051), (label, name, key)
        assert int(row[6]) == s["rejected"] + s["failed"]
        assert _num(row[7]) == pytest.approx(s["replica"]["mean_batch_texts"], abs=0.051)
        assert _num(row[8]) == pytest.approx(s["replica"]["compute_ms_per_batch"], abs=0.051)
    profile = _rows(doc, f"<!-- serve profile: {path.name} -->")
    expected_profile = profile_rows(result)
    assert len(profile) == len(expected_profile) > 0
    for row, (label, name, cpu) in zip(profile, expected_profile):
        assert row[:2] == [label, name]
        for cell, key in zip(row[2:], PROFILE_KEYS):
            assert _num(cell) == pytest.approx(cpu[key], abs=0.051), (label, name, key)
    targets = _rows(doc, f"<!-- serve targets: {path.name} -->")
    assert len(targets) == len(result["targets"])
    for row, (name, t) in zip(targets, result["targets"].items()):
        assert (row[0], row[1], row[4]) == (name, t["target"], t["verdict"])
        assert _num(row[2]) == pytest.approx(t["value"], abs=0.0051)
        if t["ci95"] is not None:
            assert [float(x) for x in row[3].strip("[]").split(",")] == pytest.approx(t["ci95"], abs=0.0051)


def test_a_served_benchmark_is_committed():
    assert SERVE_JSON, "docs/ holds no serve_bench_*.json: run committee serve RUN_DIR --bench --json ..."
    for path in SERVE_JSON:
        result = json.loads(path.read_text())
        assert result["machine"]["cpu"] and result["machine"]["hardware"], "every measurement names its hardware"
        assert "latencies_ms" not in json.dumps(result["levels"][0]), "per-request latencies stay out of the file"
