"""A finished run's committee, loaded: for `committee predict`, `committee distill` and Python users.

`orchestrator.run.rundir.read_finished` (`RunDir.finished`) checks that a directory holds a finished run and
reads what it says about its committee without loading weights; `load_committee` turns that into a
`workers.committee.committee.Committee` (weights loaded, on the CPU):

    from orchestrator.run.finished import load_committee
    load_committee("runs/own_data").predict(["a text to label"])
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.run.rundir import FinishedRun, read_finished
from workers.errors import CommitteeError


def load_committee(run: str | Path | FinishedRun):
    """The committee of a finished run (a directory, or what `read_finished` read): its pre-trained members on
    the CPU, their validation accuracies, the run's tokenizer, class names and vote weights."""
    from workers.committee.committee import Committee, load_members
    from workers.text.tokenizer import load_tokenizer

    run = run if isinstance(run, FinishedRun) else read_finished(run)
    tokenizer = load_tokenizer(run.tokenizer_dir)
    return Committee(load_members(run.classifier_dirs), list(run.names), run.val_accuracy, tokenizer.pad_token_id,
                     tokenizer=tokenizer, max_length=run.config.task.max_length, label_names=run.label_names,
                     vote_weights=run.vote_weights)


def predict_command(run_dir: Path, input_path: Path, rule: str, out: Path | None, echo) -> None:
    """`committee predict RUN_DIR INPUT`: one JSON line per example (to `out`, else through `echo`); with labels in
    INPUT, the committee's accuracy on them. INPUT is read and checked before any weight is loaded."""
    from workers.committee.voting import RULES
    from workers.data.predict_inputs import label_ids_for, predict_inputs

    if rule not in RULES:
        raise CommitteeError(f"--rule {rule!r} is not a voting rule; choose from {', '.join(RULES)}")
    run = read_finished(run_dir)
    task = run.config.task
    texts, raw_labels = predict_inputs(input_path, task)
    committee = load_committee(run)
    predictions = committee.predict(texts, rule=rule)
    lines = "".join(json.dumps(record) + "\n" for record in predictions.records())
    if out is None:
        echo(lines, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(lines)
        echo(f"wrote {len(texts)} predictions to {out}", err=True)
    if raw_labels is not None:
        truth = label_ids_for(raw_labels, committee.label_names(predictions.soft_labels.shape[1]), str(input_path),
                              task)
        echo(f"committee accuracy ({rule} vote) on {len(truth)} labelled examples of {input_path}: "
             f"{float((predictions.labels == truth).mean()):.4f}", err=True)
