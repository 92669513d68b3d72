"""A classification task's labelled examples: parsed from its dataset, its classes fixed, its labels mapped to
ids, and per-class samples drawn.

A task's files are parsed part by part (text columns joined by a space; labels checked to be integers or
strings, one kind per part), then its classes are fixed (listed in task.label_names, a hub ClassLabel's own
order, or the train split's labels: integer ids as found, names in sorted order) and every split's labels
become ids. Every fault raises `DataError` naming the file, row and column: no rows, no label, an empty
text, a label outside the classes, a class without examples or with fewer than asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workers.data.cache import cached
from workers.data.datasets import Part
from workers.data.readers import read_columns
from workers.errors import DataError

if TYPE_CHECKING:
    from workers.data.specs import TaskSpec


def frozen_ids(labels) -> np.ndarray:
    """Labels as a read-only int64 array [n_examples]."""
    array = np.asarray(labels, dtype=np.int64)  # [n_examples]
    array.setflags(write=False)  # shared through the cache: indexing makes the caller's own copy
    return array


def parse_task_part(part: Part, text_columns: tuple[str, ...], label_column: str) -> tuple[tuple, tuple]:
    """(texts, raw labels) of one part; text columns are joined by a space (dbpedia_14: title + content).

    Labels are checked to be integers or strings, one kind per part; ids and ranges are checked later,
    when the task's classes are known."""
    columns = read_columns(part, text_columns, (label_column,))
    labels = columns[label_column]
    if not labels:
        raise DataError(f"{part.where} has no rows; {part.hint}")
    texts = []
    for row, label in enumerate(labels):
        if label is None or label == "":
            raise DataError(f"{part.where} row {row} column {label_column!r}: no label; every example needs one")
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise DataError(f"{part.where} row {row} column {label_column!r}: labels must be integers (class ids) "
                            f"or strings (class names), found {type(label).__name__} {label!r}")
        if type(label) is not type(labels[0]):
            raise DataError(f"{part.where} row {row} column {label_column!r}: labels must be all integers or all "
                            f"strings; row 0 has {labels[0]!r}, this row {label!r}")
        text = " ".join(columns[c][row].strip() for c in text_columns if columns[c][row]).strip()
        if not text:
            raise DataError(f"{part.where} row {row}: empty text (column(s) {', '.join(text_columns)})")
        texts.append(text)
    return tuple(texts), tuple(labels)


@dataclass(frozen=True)
class _Split:
    """One split's parsed parts: [(part, texts, raw labels)], and how errors name the split."""

    parts: list
    what: str  # e.g. "ag_news train split (/data/ag_news/train.parquet)"

    @property
    def raw_labels(self) -> list:
        return [label for _, _, labels in self.parts for label in labels]


def read_split(spec: TaskSpec, split: str, key: str) -> _Split:
    """The parsed parts of one split of a task's dataset (each part parsed once per process)."""
    parts = spec.source.parts(split, key)
    parsed = [(part, *cached(part.identity(), ("task", spec.text_columns, spec.label_column),
                             lambda: parse_task_part(part, spec.text_columns, spec.label_column)))
              for part in parts]
    where = parts[0].where if len(parts) == 1 else spec.source.describe()
    return _Split(parsed, f"{spec.name} {split} split ({where})")


@dataclass(frozen=True)
class _Classes:
    names: tuple[str, ...]
    order: str  # for the report
    origin: str  # for errors: where the names come from
    named: bool = True  # False when the names are only the ids written out


def _classes(spec: TaskSpec, train: _Split) -> _Classes:
    """The task's class names in id order: listed, from a ClassLabel feature, or from the train split."""
    if spec.label_names is not None:
        return _Classes(spec.label_names, spec.label_order or "as listed in task.label_names", "task.label_names")
    feature_names = spec.source.class_names(spec.train_split, spec.label_column)
    if feature_names is not None:
        return _Classes(feature_names, "the dataset's ClassLabel order", "the dataset's ClassLabel feature")
    raw = train.raw_labels
    if isinstance(raw[0], int):
        ids = [label for label in raw if isinstance(label, int)]
        count = max(ids) + 1 if ids else 0
        return _Classes(tuple(str(i) for i in range(count)), "integer class ids as found in the data",
                        f"the {train.what}", named=False)
    names = tuple(sorted({label for label in raw if isinstance(label, str)}))
    return _Classes(names, "class names sorted (Unicode code point order)", f"the {train.what}")


def _label_ids(split: _Split, classes: _Classes, label_column: str) -> np.ndarray:
    """Integer ids [n] of a split's raw labels; a label outside the classes names its file and row."""
    count = len(classes.names)
    index = {name: i for i, name in enumerate(classes.names)}
    ids = []
    for part, _, labels in split.parts:
        for row, label in enumerate(labels):
            if isinstance(label, int):
                if label < 0:
                    raise DataError(f"{part.where} row {row} column {label_column!r}: label {label} is negative; "
                                    f"integer labels are class ids 0, 1, 2, ...")
                if not 0 <= label < count:
                    raise DataError(f"{part.where} row {row}: label {label!r} is outside 0..{count - 1}")
                ids.append(label)
            elif label in index:
                ids.append(index[label])
            else:
                shown = ", ".join(classes.names[:12]) + (", ..." if count > 12 else "")
                raise DataError(f"{part.where} row {row} column {label_column!r}: label {label!r} is not one of "
                                f"the {count} classes of {classes.origin} ({shown})")
    return frozen_ids(ids)


@dataclass(frozen=True)
class TaskSource:
    """A task's labelled examples before sampling: its train split (train and validation come from it unless
    it has a validation split) and its test split, with the names errors about them use."""

    train_texts: list[str] | tuple[str, ...]
    train_labels: np.ndarray  # [n_train_split] int64
    test_texts: list[str] | tuple[str, ...]
    test_labels: np.ndarray  # [n_test_split] int64
    train_what: str  # e.g. "ag_news train split (/data/ag_news/train.parquet)"
    test_what: str
    class_names: tuple[str, ...] | None = None  # named in sampling errors
    label_names: tuple[str, ...] = ()
    label_order: str = ""
    val_texts: list[str] | tuple[str, ...] | None = None  # a validation split of its own, if any
    val_labels: np.ndarray | None = None
    val_what: str = ""


def _texts(split: _Split) -> list[str]:
    return [text for _, texts, _ in split.parts for text in texts]


def dataset_task_source(spec: TaskSpec) -> TaskSource:
    """A task read from its dataset: parse each split, fix the classes, map labels to ids."""
    train = read_split(spec, spec.train_split, "task.train_split")
    test = read_split(spec, spec.test_split, "task.test_split")
    val = read_split(spec, spec.validation_split, "task.validation_split") if spec.validation_split else None
    classes = _classes(spec, train)
    ids = {name: _label_ids(split, classes, spec.label_column)
           for name, split in (("train", train), ("test", test), ("val", val)) if split is not None}
    if len(classes.names) < 2:
        raise DataError(f"{train.what} has a single class ({', '.join(classes.names)}); a classification task "
                        f"needs at least two (check task.label_column)")
    return TaskSource(_texts(train), ids["train"], _texts(test), ids["test"], train.what, test.what,
                      classes.names if spec.names_in_errors and classes.named else None, classes.names, classes.order,
                      _texts(val) if val else None, ids.get("val"), val.what if val else "")


def per_class_sample(labels: np.ndarray, num_classes: int, per_class: int | None, rng: np.random.Generator,
                     what: str, class_names: tuple[str, ...] | None = None) -> np.ndarray:
    """Indices of `per_class` examples of each class 0..num_classes-1 (all if None), drawn with `rng`,
    grouped by class. Every declared class must have examples (unless none are asked for)."""
    chosen = []
    for cls in range(num_classes):
        if per_class == 0:
            continue
        pool = np.flatnonzero(labels == cls)  # [examples of cls]
        name = f"class {cls}" + (f" ({class_names[cls]})" if class_names else "")
        if len(pool) == 0:
            raise DataError(f"{what}: {name} has 0 examples; every one of the task's {num_classes} classes "
                            f"needs examples in train, validation and test (check the file's labels)")
        if per_class is None:
            chosen.append(pool)
            continue
        if per_class > len(pool):
            raise DataError(f"{what}: {name} has {len(pool)} examples, fewer than the {per_class} asked for")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
