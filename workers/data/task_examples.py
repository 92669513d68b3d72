"""A classification task's labelled examples: parsed from its dataset, its classes fixed, its labels mapped to
ids, and per-class samples drawn.

A task's files are parsed part by part (text columns joined by a space; labels checked to be integers or
strings, one kind per part), then its classes are fixed (listed in task.label_names or task.classes_file, mapped
from the data's labels by task.label_names, a hub ClassLabel's own order, or the train split's labels: integer
ids as found, names in sorted order) and every split's labels become ids 0..n-1 (`Classes.id_of`; integer labels
count from task.first_label_id, so 1-based data reads as it comes). A task without a test split may carve its
test examples from train (`carve_test`). Every fault raises `DataError` naming the file, row and column: no rows,
no label, an empty text, a label outside the classes (saying so when the labels look 1-based), a class without
examples or with fewer than asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
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
    try:
        parts = spec.source.parts(split, key)
    except DataError as exc:
        if key != "task.test_split":
            raise
        raise DataError(f"{exc}; or, for data with a train file only, carve test examples from it with "
                        f"task.test_from_train (e.g. 0.1: a tenth of each class)") from None
    namespace = ("task", spec.text_columns, spec.label_column, spec.source.column_names)
    parsed = [(part, *cached(part.identity(), namespace,
                             lambda: parse_task_part(part, spec.text_columns, spec.label_column)))
              for part in parts]
    where = parts[0].where if len(parts) == 1 else spec.source.describe()
    return _Split(parsed, f"{spec.name} {split} split ({where})")


@dataclass(frozen=True)
class Classes:
    """A task's classes and how its labels, as the data has them, become class ids 0..n-1.

    Class names come in id order. A label maps to an id by `keys` when the classes came from a mapping (the
    label written as text: 1 and "1" are the same label), else an integer label counts from `first_label_id`
    (1-based data: label 1 is class 0) and a string label is a name."""

    names: tuple[str, ...]
    order: str = ""  # for the report
    origin: str = ""  # for errors: where the names come from
    named: bool = True  # False when the names are only the ids written out
    first_label_id: int = 0  # the integer label of class 0
    keys: tuple[str, ...] | None = None  # a mapping's labels, as text: class i is the label keys[i]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.keys if self.keys is not None else self.names)}

    def id_of(self, label) -> int | None:
        """The class id of a raw label, or None when it is no class of the task."""
        if self.keys is not None:
            return self._index.get(str(label))
        if isinstance(label, int):
            i = label - self.first_label_id
            return i if 0 <= i < len(self.names) else None
        return self._index.get(label)

    def data_labels(self) -> list | None:
        """The label each class has in the data, when it is not the class id itself (the report lists both)."""
        if self.keys is not None:
            return list(self.keys)
        if self.first_label_id:
            return [self.first_label_id + i for i in range(len(self.names))]
        return None

    def unknown(self, where: str, row: int, label, label_column: str) -> DataError:
        """The error for a label that is no class of the task, naming the file and row."""
        count = len(self.names)
        if self.keys is not None:
            shown = ", ".join(self.keys[:12]) + (", ..." if count > 12 else "")
            return DataError(f"{where} row {row} column {label_column!r}: label {label!r} is not one of the {count} "
                             f"labels task.label_names maps ({shown})")
        if isinstance(label, int):
            if label < 0 and self.first_label_id == 0:
                return DataError(f"{where} row {row} column {label_column!r}: label {label} is negative; integer "
                                 f"labels are class ids 0, 1, 2, ... (labels such as -1 / 1 need a mapping: "
                                 f"task.label_names: {{-1: negative, 1: positive}})")
            first = self.first_label_id
            return DataError(f"{where} row {row}: label {label!r} is outside {first}..{first + count - 1}")
        shown = ", ".join(self.names[:12]) + (", ..." if count > 12 else "")
        return DataError(f"{where} row {row} column {label_column!r}: label {label!r} is not one of the {count} "
                         f"classes of {self.origin} ({shown})")


def _classes(spec: TaskSpec, train: _Split) -> Classes:
    """The task's classes: listed, mapped, from a ClassLabel feature, or from the train split's labels."""
    first = spec.first_label_id
    if spec.label_keys is not None:
        return Classes(spec.label_names, spec.label_order or "as listed in task.label_names (label in the data: "
                       "name)", "task.label_names", keys=spec.label_keys)
    if spec.label_names is not None:
        counted = f"; integer label {first} is class 0" if first else ""
        return Classes(spec.label_names, spec.label_order or f"as listed in {spec.label_names_from}{counted}",
                       spec.label_names_from, first_label_id=first)
    feature_names = spec.source.class_names(spec.train_split, spec.label_column)
    if feature_names is not None:
        return Classes(feature_names, "the dataset's ClassLabel order", "the dataset's ClassLabel feature",
                       first_label_id=first)
    raw = train.raw_labels
    if isinstance(raw[0], int):
        ids = [label for label in raw if isinstance(label, int)]
        count = max(ids) + 1 - first if ids else 0
        order = "integer class ids as found in the data" + (f", counted from {first}" if first else "")
        return Classes(tuple(str(first + i) for i in range(count)), order, f"the {train.what}", named=False,
                       first_label_id=first)
    names = tuple(sorted({label for label in raw if isinstance(label, str)}))
    return Classes(names, "class names sorted (Unicode code point order)", f"the {train.what}")


def _check_not_one_based(classes: Classes, train: _Split, splits: list[_Split]) -> None:
    """Integer labels that run from 1 read as 0-based would leave class 0 empty (or the last label out of range):
    say they look 1-based, and what to set, before a message about class 0 or label N would puzzle. `splits`:
    every split read (train, test, validation)."""
    raw = train.raw_labels
    if classes.keys is not None or classes.first_label_id != 0 or not isinstance(raw[0], int):
        return
    every = [label for split in splits for label in split.raw_labels if isinstance(label, int)]
    lowest, highest = min(every), max(every)
    if lowest != 1:
        return
    listed = classes.named and classes.origin.startswith("task.")
    if listed and highest == len(classes.names):
        raise DataError(f"{train.what}: the labels run from 1 to {highest} and {classes.origin} names {highest} "
                        f"classes, so label {highest} would be outside 0..{highest - 1}: the labels are 1-based (as "
                        f"AG News, DBpedia and Yelp are distributed); set task.first_label_id: 1")
    if not classes.named:
        raise DataError(f"{train.what}: its integer labels run from 1 to {highest} and no example has label 0, so "
                        f"class 0 would have no examples: if the labels are 1-based (as AG News, DBpedia and Yelp "
                        f"are distributed), set task.first_label_id: 1, and name the classes with task.classes_file "
                        f"or task.label_names")


def _label_ids(split: _Split, classes: Classes, label_column: str) -> np.ndarray:
    """Integer ids [n] of a split's raw labels; a label outside the classes names its file and row."""
    ids = []
    for part, _, labels in split.parts:
        for row, label in enumerate(labels):
            class_id = classes.id_of(label)
            if class_id is None:
                raise classes.unknown(part.where, row, label, label_column)
            ids.append(class_id)
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
    data_labels: list | None = None  # each class's label in the data, when it is not the class id
    test_carved_per_class: tuple[int, ...] | None = None  # test examples carved from train, per class


def _texts(split: _Split) -> list[str]:
    return [text for _, texts, _ in split.parts for text in texts]


def dataset_task_source(spec: TaskSpec) -> TaskSource:
    """A task read from its dataset: parse each split, fix the classes, map labels to ids. With
    `spec.test_from_train` the test split is not read (the caller carves test examples from train)."""
    train = read_split(spec, spec.train_split, "task.train_split")
    test = read_split(spec, spec.test_split, "task.test_split") if spec.test_from_train is None else None
    val = read_split(spec, spec.validation_split, "task.validation_split") if spec.validation_split else None
    classes = _classes(spec, train)
    _check_not_one_based(classes, train, [split for split in (train, test, val) if split is not None])
    ids = {name: _label_ids(split, classes, spec.label_column)
           for name, split in (("train", train), ("test", test), ("val", val)) if split is not None}
    if len(classes.names) < 2:
        raise DataError(f"{train.what} has a single class ({', '.join(classes.names)}); a classification task "
                        f"needs at least two (check task.label_column)")
    test_texts, test_labels = (_texts(test), ids["test"]) if test else ((), frozen_ids([]))
    return TaskSource(_texts(train), ids["train"], test_texts, test_labels, train.what, test.what if test else "",
                      classes.names if spec.names_in_errors and classes.named else None, classes.names, classes.order,
                      _texts(val) if val else None, ids.get("val"), val.what if val else "", classes.data_labels())


# the random stream test examples are carved with: its own, so the test set does not move when
# task.train_per_class or task.val_per_class change
TEST_CARVE_STREAM = 0x7E57


def carve_test(src: TaskSource, test_from_train: int | float, sample_seed: int) -> TaskSource:
    """`src` with test examples carved from its train split: `test_from_train` examples of every class (an int),
    or that share of each class (a float in (0, 1), rounded half up), drawn with a stream of `sample_seed` of
    their own. The rest stays the train split (train and validation are drawn from it), so the three are
    disjoint; the carved examples keep their file order."""
    rng = np.random.default_rng([sample_seed, TEST_CARVE_STREAM])
    setting = f"task.test_from_train={test_from_train}"
    carved, counts = [], []
    for cls, name in enumerate(src.label_names):
        pool = np.flatnonzero(src.train_labels == cls)  # [examples of cls]
        words = f"class {cls}" + (f" ({name})" if src.class_names else "")
        count = test_from_train if isinstance(test_from_train, int) else math.floor(test_from_train * len(pool) + 0.5)
        if len(pool) == 0:
            raise DataError(f"{src.train_what}: {words} has 0 examples; every one of the task's "
                            f"{len(src.label_names)} classes needs examples (check the file's labels)")
        if count == 0:
            raise DataError(f"{src.train_what}: {setting} carves 0 of the {len(pool)} examples of {words}; give a "
                            f"larger share or a number of examples per class")
        if count >= len(pool):
            raise DataError(f"{src.train_what}: {words} has {len(pool)} examples; {setting} would carve {count} "
                            f"as test examples and leave none for training and validation")
        carved.append(rng.choice(pool, size=count, replace=False))
        counts.append(int(count))
    test_idx = np.sort(np.concatenate(carved))  # [n_test] in file order
    keep = np.ones(len(src.train_labels), dtype=bool)
    keep[test_idx] = False
    train_idx = np.flatnonzero(keep)  # [n_train_left]
    share = (f"{test_from_train} examples of every class" if isinstance(test_from_train, int)
             else f"{test_from_train:g} of every class")
    return replace(src, train_what=f"{src.train_what} without the {len(test_idx)} examples carved off as test",
                   train_texts=[src.train_texts[i] for i in train_idx],
                   train_labels=frozen_ids(src.train_labels[train_idx]),
                   test_texts=[src.train_texts[i] for i in test_idx], test_labels=frozen_ids(src.train_labels[test_idx]),
                   test_what=f"test examples carved from the {src.train_what} ({share})",
                   test_carved_per_class=tuple(counts))


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
