"""The examples of a `committee predict` INPUT: a .txt file (one example per line), a data file read as the
run's task section reads its data (its text columns; a csv/tsv without a header row with task.column_names), or
FewRel JSON for a FewRel run; and their labels as the run's class ids (1-based labels and mapped labels as the
task section says: workers.data.task_examples.Classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.data.datasets import DATA_SUFFIXES, HEADERLESS_FORMATS, Part
from workers.data.few_rel import read_few_rel
from workers.data.readers import column_names, read_columns
from workers.data.root import FEW_REL_PRESETS, TASK_TEXT_COLUMNS
from workers.data.task_examples import Classes, frozen_ids, parse_task_part
from workers.errors import DataError


def read_examples(path: Path, text_columns: tuple[str, ...], label_column: str,
                  headerless_columns: tuple[str, ...] | None = None) -> tuple[list[str], list | None]:
    """The examples of one data file (csv, tsv, json, jsonl, parquet) in file order: texts (the text columns
    joined as a task joins them) and the raw labels, or None when the file has no label column.
    `headerless_columns`: a csv / tsv file has no header row and these columns (task.column_names).
    `committee predict` reads a dataset file with it; an empty text names its row."""
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise DataError(f"{path} is not a data file this reads ({', '.join(DATA_SUFFIXES)}) nor a .txt file")
    fmt = DATA_SUFFIXES[suffix]
    part = Part(str(path), fmt, path=path, column_names=headerless_columns if fmt in HEADERLESS_FORMATS else None)
    if label_column in column_names(part):
        texts, labels = parse_task_part(part, text_columns, label_column)
        return list(texts), list(labels)
    columns = read_columns(part, text_columns)
    texts = []
    for row in range(len(columns[text_columns[0]])):
        text = " ".join(columns[c][row].strip() for c in text_columns if columns[c][row]).strip()
        if not text:
            raise DataError(f"{path} row {row}: empty text (column(s) {', '.join(text_columns)})")
        texts.append(text)
    if not texts:
        raise DataError(f"{path} has no rows")
    return texts, None


def task_columns(task) -> tuple[tuple[str, ...], str]:
    """(text columns, label column) a config's task section reads, for a preset or the user's own data."""
    if task.dataset is None and task.data_files is None:
        return TASK_TEXT_COLUMNS.get(task.name, ("text",)), "label"
    text = task.text_column
    return ((text,) if isinstance(text, str) else tuple(text)), task.label_column


def predict_inputs(path: Path, task) -> tuple[list[str], list | None]:
    """The examples of a `committee predict` INPUT, in file order: (texts, raw labels or None).

    A `.txt` file holds one example per line (an empty line is an error naming it); any other file is read
    as the run's task section reads its data (its text columns, joined; labels when the file has the label
    column); a FewRel run reads FewRel JSON through its adapter."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"INPUT {path} is not a file; give a .txt file (one example per line) or a data file "
                        f"({', '.join(DATA_SUFFIXES)})")
    if path.suffix.lower() == ".txt":
        text = Part(str(path), "text", path=path)
        lines = read_columns(text, ("text",))["text"][0].splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{path} line {number} is empty; a .txt INPUT holds one example per line")
        if not lines:
            raise DataError(f"{path} is empty; a .txt INPUT holds one example per line")
        return lines, None
    if task.name in FEW_REL_PRESETS and task.dataset is None and task.data_files is None and path.suffix == ".json":
        _, texts, labels = read_few_rel(path, task.name)
        return list(texts), [int(label) for label in labels]
    text_columns, label_column = task_columns(task)
    headerless = getattr(task, "column_names", None)
    return read_examples(path, text_columns, label_column, tuple(headerless) if headerless else None)


def label_ids_for(raw_labels: list, label_names: list[str], where: str, task=None) -> np.ndarray:
    """Raw labels (integer ids or class names) as ids [n] of a run's classes, read as the run's task section
    `task` reads its labels (integer labels from task.first_label_id, or mapped by task.label_names); an unknown
    one names its row."""
    mapped = getattr(task, "label_names", None)
    classes = Classes(tuple(label_names), first_label_id=getattr(task, "first_label_id", 0),
                      keys=tuple(str(k) for k in mapped) if isinstance(mapped, dict) else None)
    ids = []
    for row, label in enumerate(raw_labels):
        class_id = classes.id_of(label)
        if class_id is None:
            raise DataError(f"{where} row {row}: label {label!r} is not one of the run's {len(label_names)} classes "
                            f"({', '.join(label_names[:12])})")
        ids.append(class_id)
    return frozen_ids(ids)
