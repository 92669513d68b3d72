"""The evidence stage: what the report's comparisons rest on, computed by the voting actor.

Runs after `score` on the same members' logits (their `MemberResult`s): intervals, paired tests against
the scratch committee, the deep model and each member's scratch twin, chance warnings, diversity and
calibration (workers.committee.evidence). Sweeps call it per point, with that point's members.
"""

from __future__ import annotations

from orchestrator.run import cluster
from workers.train.member import MemberResult, MemberSpec


def member_logits(specs: list[MemberSpec], results: dict[str, MemberResult]) -> list[dict]:
    """What the voting actor needs of each member: name, role, index and its validation and test logits."""
    return [{"name": s.name, "role": s.role.value, "index": results[s.name].index,
             "val_logits": results[s.name].val_logits, "test_logits": results[s.name].test_logits}
            for s in specs if s.name in results]


def evidence(ray, specs: list[MemberSpec], results: dict[str, MemberResult], arrays, temperature: float,
             seed: int) -> dict:
    """workers.committee.evidence.committee_evidence of these members, run by a voting actor."""
    from workers.train.actors import VoterActor

    voter = VoterActor.options(**cluster.on_this_node()).remote()
    try:
        return ray.get(voter.evidence.remote(member_logits(specs, results), arrays.val_labels, arrays.test_labels,
                                             temperature, seed))
    finally:
        ray.kill(voter)


# ----------------------------------------------------------------------------------------------
# words and table cells for the reports (run and sweep)


def p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def accuracy_cell(accuracy: float | None, ci95: list | None) -> str:
    """'54.0 [47.1, 60.8]' (percent), or the bare accuracy without an interval."""
    if accuracy is None:
        return "–"
    if not ci95:
        return f"{100 * accuracy:.1f}"
    return f"{100 * accuracy:.1f} [{100 * ci95[0]:.1f}, {100 * ci95[1]:.1f}]"


def difference_cell(comparison: dict | None) -> str:
    """'+3.5 [-1.0, +8.0]': a - b in points with its bootstrap interval."""
    if comparison is None:
        return "–"
    lo, hi = comparison["ci95"]
    return f"{100 * comparison['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def verdict_text(comparison: dict | None, a_word: str, b_word: str) -> str:
    """'<a_word> better', '<b_word> better' or 'inconclusive'."""
    if comparison is None:
        return "–"
    return {"a better": f"{a_word} better", "b better": f"{b_word} better"}.get(comparison["verdict"], "inconclusive")


def find_comparison(statistics: dict | None, a: str, b: str) -> dict | None:
    for c in (statistics or {}).get("comparisons", []):
        if c["a"] == a and c["b"] == b:
            return c
    return None


def warning_lines(statistics: dict | None) -> list[str]:
    """A report's "Warnings" section: one line per model not above chance (nothing when there is none)."""
    warnings = (statistics or {}).get("warnings") or []
    if not warnings:
        return []
    return ["## Warnings", "", *[f"- **not above chance**: {w['message']}" for w in warnings], ""]


def methods_lines(statistics: dict | None) -> list[str]:
    """How every interval, test and score in the report was computed."""
    if not statistics:
        return []
    m = statistics["methods"]
    return ["## How the numbers were tested", "",
            f"- accuracy intervals: {m['interval']} ({statistics['test_examples']} examples)",
            f"- paired tests: {m['paired_test']}; differences: {m['difference_interval']}",
            f"- verdicts: {m['verdict']}",
            f"- {m['chance']}",
            f"- calibration: {m['calibration']}",
            f"- diversity: {m['diversity']}", ""]
