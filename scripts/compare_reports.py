"""Compare the reports of two sets of runs, all but timing: `python scripts/compare_reports.py DIR_A DIR_B`.

Each DIR holds run directories made by `scripts/same_reports.sh` (smoke, own_data, sweep_smoke,
distill_smoke). Their report.json, sweep.json and distill.json are compared with what varies between two
runs of the same config taken out: timing (any key named `timing` or ending in `_s`), Tune's trial ids
(random per sweep), the run directories' own paths and the prepare cache's keys (they digest the source
files of the code that prepares data, so a moved file changes them). Exit 0 when every report is equal, else 1, naming
the first differences.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPORTS = {"smoke": "report.json", "own_data": "report.json", "sweep_smoke": "sweep.json",
           "distill_smoke": "distill.json"}
TRIAL_ID = re.compile(r"\b[0-9a-f]{5}_[0-9]{5}\b")  # Tune's trial ids: a random prefix per experiment
CACHE_KEY = re.compile(r"(/tokenizers/)[0-9a-f]{20}\b")  # the prepare cache's keys digest the code's source files
SPEEDS = ("tokens_per_s", "examples_per_s", "seconds_per_iteration", "task_seconds")


def varies(key: str) -> bool:
    """Keys that differ between two runs of one config on one machine: time taken and speed."""
    return key == "timing" or key.endswith("_s") or key in SPEEDS or key == "trial_id"


def normal(value, run_dir: str):
    if isinstance(value, dict):
        return {k: normal(v, run_dir) for k, v in value.items() if not varies(k)}
    if isinstance(value, list):
        return [normal(v, run_dir) for v in value]
    if isinstance(value, str):
        return CACHE_KEY.sub(r"\1KEY", TRIAL_ID.sub("TRIAL", value.replace(run_dir, "RUN_DIR")))
    return value


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'first' if k in a else 'second'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}"]


def main(first: Path, second: Path) -> int:
    failed = False
    for name, file in REPORTS.items():
        reports = []
        for root in (first, second):
            run_dir = (root / name).resolve()
            path = run_dir / file
            if not path.is_file():
                print(f"{name}: {path} missing")
                return 1
            reports.append(normal(json.loads(path.read_text()), str(run_dir)))
        diffs = differences(*reports)
        print(f"{name} ({file}): " + ("identical, all but timing" if not diffs else f"{len(diffs)} difference(s)"))
        for line in diffs[:20]:
            print("   ", line)
        failed |= bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
