"""The quickstart's members at a larger pre-training budget, on a GPU machine without Ray.

One process per member index runs the pre-trained member and its scratch twin through the same code a
`committee run` actor runs (workers.train.member.run_member); `vote` then scores both committees with
workers.committee.voting. scripts/gpu_budget.sh starts four of them side by side on one GPU.

python scripts/gpu_budget.py INDEX OUT KEY=VALUE...  -> OUT/member-INDEX.log, OUT/results/<name>/result.npz
python scripts/gpu_budget.py vote OUT KEY=VALUE...   -> OUT/summary.json (members, rules, curve), printed
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestrator.config.experiment import load_config  # noqa: E402
from orchestrator.run.plan import member_specs  # noqa: E402
from orchestrator.run.prepare import check_data, prepare  # noqa: E402
from orchestrator.run.rundir import RunLayout  # noqa: E402
from workers.committee import voting  # noqa: E402
from workers.data.loading import load_task  # noqa: E402
from workers.train.member import Role, load_result, run_member, save_result  # noqa: E402


def run_index(cfg, index: int, out: Path) -> None:
    """Member `index` (pre-trained) and scratch twin `index`; results copied to out/results/<name>/."""
    torch.set_num_threads(2)
    run_dir = Path(f"/tmp/budget-{index}")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with open(out / f"member-{index:02d}.log", "a", buffering=1) as log:
        _run_index(cfg, index, out, run_dir, log)


def _run_index(cfg, index: int, out: Path, run_dir: Path, log) -> None:
    prepared = prepare(cfg, echo=lambda s: log.write(s + "\n"))
    log.write(json.dumps(prepared.corpus) + "\n")
    t0 = time.perf_counter()

    def on_log(rec: dict) -> None:
        if rec.get("phase") == "pretrain" and (rec["step"] % 500 == 0 or rec["step"] == rec["max_steps"]):
            log.write(f"[{time.perf_counter() - t0:6.1f}s] step {rec['step']} loss {rec['loss']:.3f} "
                      f"{rec['tokens_per_s']:.0f} tok/s\n")

    for spec in member_specs(cfg, RunLayout.of(cfg, run_dir)):
        if spec.index == index and spec.role is not Role.DEEP:
            result = run_member(spec, prepared.arrays, on_log=on_log)
            save_result(result, out / "results" / spec.name)
            log.write(f"[{time.perf_counter() - t0:6.1f}s] {spec.name} val {result.val_accuracy:.3f} "
                      f"test {result.test_accuracy:.3f}\n")


def vote(cfg, out: Path) -> dict:
    """Both committees (pre-trained members, scratch twins) scored from the saved results."""
    t = cfg.task  # the labels only: no tokenizing
    task = load_task(check_data(cfg), t.name, t.train_per_class, t.val_per_class, t.test_per_class, t.sample_seed)
    summary: dict = {}
    for kind in ("member", "scratch"):
        results = [load_result(out / "results" / f"{kind}-{i:02d}") for i in range(cfg.committee.members)]
        results = [r for r in results if r is not None]
        if not results:
            continue
        rep = voting.committee_report(np.stack([r.val_logits for r in results]),
                                      np.stack([r.test_logits for r in results]),
                                      task.val_labels, task.test_labels, cfg.committee.weight_temperature)
        summary[kind] = {
            "members_test": [round(r.test_accuracy, 4) for r in results],
            "members_val": [round(r.val_accuracy, 4) for r in results],
            "rules": {k: round(v["test_accuracy"], 4) for k, v in rep["rules"].items()},
            "curve": [round(c, 4) for c in rep["curve"]],
            "final_mlm_loss": [r.pretrain_stats.get("final_loss") for r in results],
            "pretrain_tokens": [r.pretrain_stats.get("tokens") for r in results],
            "tokens_per_s": [r.pretrain_stats.get("tokens_per_s") for r in results],
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def main(argv: list[str]) -> None:
    which, out, overrides = argv[0], Path(argv[1]), argv[2:]
    cfg = load_config(Path("configs/quickstart.yaml"), overrides)
    (out / "results").mkdir(parents=True, exist_ok=True)
    if which == "vote":
        print(json.dumps(vote(cfg, out), indent=1, default=float))
    else:
        run_index(cfg, int(which), out)


if __name__ == "__main__":
    main(sys.argv[1:])
