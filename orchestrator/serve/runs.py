"""What `committee serve` reads from a finished run: the model to serve and the facts /metadata shows.

The committee is the run's pre-trained members (`orchestrator.run.finished.load_committee`, what
`committee predict` loads); the deep model (`deep.enabled`) is served as a committee of one, through the same packed
forward, so the two are served the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.errors import CommitteeError

RUN_HINT = "give the directory of a `committee run` that finished, e.g. runs/<name>"


def check_servable(run_dir: Path, model: str) -> None:
    """What a replica will load is there (read before Serve starts: a replica that cannot load its model would
    be restarted again and again): the committee's members, or the deep model's weights."""
    from orchestrator.run.rundir import read_finished

    run = read_finished(run_dir, RUN_HINT)
    if model == "deep":
        _deep_member(run, run_dir)


def _deep_member(run, run_dir) -> tuple:
    """(result, classifier dir) of the run's deep model, or a CommitteeError saying why there is none."""
    from orchestrator.run.rundir import RunLayout
    from workers.storage import checkpoint
    from workers.train.member import load_result

    if not run.config.deep.enabled:
        raise CommitteeError(f"{run_dir} has no deep model (its config has deep.enabled: false); serve its "
                             f"committee, or run the config with deep.enabled=true")
    member_dir = RunLayout.of(run.config, run.run_dir).member_dir("deep")
    result = load_result(member_dir)
    classifier = checkpoint.join(member_dir, "classifier")
    if result is None or not checkpoint.exists(checkpoint.join(classifier, checkpoint.MODEL_FILE)):
        raise CommitteeError(f"{run_dir}: the deep model has no result.npz or no classifier weights in {member_dir}")
    return result, classifier


def load_served(run_dir: str | Path, model: str):
    """The run's committee (`model` "committee") or its deep model as a committee of one ("deep")."""
    from orchestrator.run.finished import load_committee
    from orchestrator.run.rundir import read_finished
    from workers.committee.committee import Committee, load_members
    from workers.text.tokenizer import load_tokenizer

    run = read_finished(run_dir, RUN_HINT)
    if model == "committee":
        return load_committee(run)
    result, classifier = _deep_member(run, run_dir)
    tokenizer = load_tokenizer(run.tokenizer_dir)
    return Committee(load_members([classifier]), ["deep"], np.array([result.val_accuracy]), tokenizer.pad_token_id,
                     tokenizer=tokenizer, max_length=run.config.task.max_length, label_names=run.label_names)


def run_facts(run_dir: str | Path, committee) -> dict:
    """What /metadata says about the run: task, classes, members (validation and test accuracy, layers),
    tokenizer, and the run's config as it saved it."""
    import yaml

    from orchestrator.run.rundir import RunLayout, read_finished
    from workers.train.member import load_result

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config.pop("distill", None)
    layout = RunLayout.of(read_finished(run_dir, RUN_HINT).config, run_dir)
    test_accuracy = {}
    for name in committee.names:
        result = load_result(layout.member_dir(name))
        test_accuracy[name] = None if result is None else float(result.test_accuracy)
    first = committee.members[0].config
    task = config.get("task", {})
    return {
        "run_dir": str(run_dir),
        "task": {"name": task.get("name"), "max_length": committee.max_length,
                 "num_classes": int(first.num_labels)},
        "classes": committee.label_names(int(first.num_labels)),
        "members": [{"name": name, "val_accuracy": float(acc), "test_accuracy": test_accuracy[name],
                     "layers": int(m.config.num_hidden_layers), "hidden": int(m.config.hidden_size)}
                    for name, acc, m in zip(committee.names, committee.val_accuracy, committee.members)],
        "tokenizer": {"dir": str(run_dir / "tokenizer"), "vocab_size": len(committee.tokenizer),
                      "class": type(committee.tokenizer).__name__},
        "config": config,
    }
