#!/usr/bin/env bash
# bash scripts/same_reports.sh BEFORE OUT    from the repository root, with .venv installed (make install)
#
# Shows that a change keeps behaviour: runs the smoke, own-data, sweep-smoke and distill-smoke configs of this
# checkout with the code of commit BEFORE (a git worktree in OUT/before-code) and with this checkout's code,
# into OUT/before and OUT/after, then compares their reports all but timing (scripts/compare_reports.py).
# About 10 minutes on 2 CPU cores. Exit 0 when all four reports are identical.
set -euo pipefail
BEFORE=${1:?usage: scripts/same_reports.sh BEFORE_COMMIT OUT}
OUT=$(mkdir -p "${2:?usage: scripts/same_reports.sh BEFORE_COMMIT OUT}" && cd "$2" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=$REPO/.venv/bin/python
export RAY_USAGE_STATS_ENABLED=0 RAY_TMPDIR=${RAY_TMPDIR:-/tmp/ray-same}
[ -d "$OUT/before-code" ] || git -C "$REPO" worktree add --detach "$OUT/before-code" "$BEFORE" > /dev/null
# the data root as this checkout resolves it (the worktree lies elsewhere)
export COMMITTEE_DATA=${COMMITTEE_DATA:-$(cd "$REPO" && $PY -c 'from workers.data.root import resolve_data_root; print(resolve_data_root(None))')}

run_all() {  # CODE DEST: the four configs of this checkout, with the code in CODE
    local code=$1 dest=$2
    rm -rf "$dest"; mkdir -p "$dest"
    cp -r "$REPO/configs" "$REPO/docs" "$dest/"  # the configs' relative paths (docs/examples) resolve here
    (cd "$dest" && export PYTHONPATH=$code &&
     $PY -m orchestrator.cli run configs/smoke.yaml --run-dir smoke > smoke.log 2>&1 &&
     $PY -m orchestrator.cli run configs/own_data.yaml --run-dir own_data > own_data.log 2>&1 &&
     $PY -m orchestrator.cli sweep configs/sweep_smoke.yaml --run-dir sweep_smoke > sweep_smoke.log 2>&1 &&
     $PY -m orchestrator.cli distill configs/distill_smoke.yaml --run-dir distill_smoke > distill_smoke.log 2>&1)
}
echo "before: $(git -C "$OUT/before-code" log --oneline -1)"; run_all "$OUT/before-code" "$OUT/before"
echo "after:  $(git -C "$REPO" log --oneline -1) + working tree"; run_all "$REPO" "$OUT/after"
$PY "$REPO/scripts/compare_reports.py" "$OUT/before" "$OUT/after"
