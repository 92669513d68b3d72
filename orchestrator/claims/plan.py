"""A suite's plan: the steps `committee claims` runs, in order, each a command the project already has.

Per seed block b (base seed seed + 20000 x b):
- `b<b>-<task>`: `committee run` on the suite's task: K pre-trained BERT-1s, their K scratch twins and BERT-6
  pre-trained with the whole committee's tokens (`deep.token_budget: committee`);
- `b<b>-<other task>`: `committee run --pretrained-from b<b>-<task>`: the same pre-training (members and
  BERT-6) fine-tuned on each other task, as the paper pre-trains once and fine-tunes on every task;
- `b<b>-latency`: the packed committee `committee predict` uses and BERT-6, timed side by side on the block's
  own checkpoints (orchestrator/claims/latency.py);
- `b<b>-distill`: `committee distill --from-run b<b>-<task>` (CV-DD on the block's committee).
Then the two sweeps, whose seeds are their blocks: `data` (claim 2) and `overlap` (claim 3).

A step's directory is `<suite dir>/<step id>`; its config is written to `<suite dir>/configs/<step id>.yaml`,
so every step can be rerun on its own with the command `Step.command` names.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from orchestrator.config.claims import ClaimsConfig, with_task
from orchestrator.config.distill import DistillExperimentConfig
from orchestrator.config.experiment import ExperimentConfig, validate_dict

SUITE = "$SUITE"  # the suite's run directory in the commands a report prints (default runs/<suite name>)
KINDS = ("run", "sweep", "distill", "latency")


@dataclass(frozen=True)
class Step:
    """One command of a suite. `source`: the step whose run it reads (--pretrained-from, --from-run, latency)."""

    id: str
    kind: str  # one of KINDS
    claims: tuple[int, ...]  # the claims its results serve
    block: int | None  # the seed block (None for a sweep: its seeds are its blocks)
    config: object | None  # ExperimentConfig, SweepConfig or DistillExperimentConfig; None for latency
    source: str | None = None
    task: str | None = None  # run steps: the task label

    def command(self) -> str:
        """The command that reruns this step alone, paths under $SUITE (the suite's run directory)."""
        cfg = f"{SUITE}/configs/{self.id}.yaml"
        out = f"--run-dir {SUITE}/{self.id}"
        if self.kind == "run":
            extra = f" --pretrained-from {SUITE}/{self.source}" if self.source else ""
            return f"committee run {cfg} {out}{extra}"
        if self.kind == "sweep":
            return f"committee sweep {cfg} {out}"
        if self.kind == "distill":
            return f"committee distill {cfg} --from-run {SUITE}/{self.source} {out}"
        return (f"committee claims (latency: the packed committee of committee predict and BERT-6, side by side on "
                f"{SUITE}/{self.source}'s checkpoints)")


def block_experiment(suite: ClaimsConfig, block: int, task_label: str | None = None) -> ExperimentConfig:
    """The experiment of block `block` on the suite's task, or on `task_label` of claims.other_tasks."""
    base = suite.experiment
    label = task_label or base.task.name
    task = suite.other_tasks[task_label] if task_label is not None else base.task
    return with_task(base, task, f"{suite.path} (block {block}, task {label})", seed=suite.block_seed(block),
                     name=f"{suite.name}-b{block}-{label}")


def plan_steps(suite: ClaimsConfig) -> list[Step]:
    """Every step of the suite, in the order they run (a step's source always runs before it)."""
    steps = []
    main_label = suite.experiment.task.name
    for block in range(suite.claims.seed_blocks):
        main = f"b{block}-{main_label}"
        experiment = block_experiment(suite, block)
        steps.append(Step(main, "run", (1, 4), block, experiment, task=main_label))
        for label in suite.other_tasks:
            steps.append(Step(f"b{block}-{label}", "run", (1, 4), block, block_experiment(suite, block, label),
                              source=main, task=label))
        steps.append(Step(f"b{block}-latency", "latency", (4,), block, None, source=main))
        distill = validate_dict({**experiment.model_dump(mode="json"), "name": f"{suite.name}-b{block}-distill",
                                 "distill": suite.claims.distill.model_dump(mode="json")},
                                source=f"{suite.path} (claims.distill)", model=DistillExperimentConfig)
        steps.append(Step(f"b{block}-distill", "distill", (5,), block, distill, source=main))
    steps.append(Step("data", "sweep", (2,), None, suite.data_sweep))
    steps.append(Step("overlap", "sweep", (3,), None, suite.overlap_sweep))
    return steps


def describe(suite: ClaimsConfig, steps: list[Step]) -> str:
    """`committee claims SUITE --plan`: what would run, step by step, with each step's command."""
    e = suite.experiment
    lines = [f"claims suite {suite.name} ({suite.path}): {suite.claims.seed_blocks} seed blocks, "
             f"{e.committee.members} BERT-1 members + scratch twins + BERT-{e.deep.num_layers} (committee's tokens) "
             f"per block, tasks {', '.join([e.task.name, *suite.other_tasks])}; {len(steps)} steps:"]
    for step in steps:
        lines.append(f"  {step.id:<24} claims {','.join(map(str, step.claims)):<4} {step.command()}")
    lines.append(f"(rerun the whole suite: committee claims {shlex.quote(str(suite.path))})")
    return "\n".join(lines)
