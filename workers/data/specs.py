"""What a task and a corpus are: where their examples come from and how to read them (presets, or the config's
dataset fields). `workers.data.loading` makes them; the readers and samplers take them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.data.datasets import Source, file_identity
from workers.data.root import REFETCH_HINT, WIKIPEDIA


@dataclass(frozen=True)
class TaskSpec:
    """Where a classification task's examples come from and how to read them."""

    name: str
    source: Source | None  # None for FewRel (its adapter reads `few_rel_path`)
    text_columns: tuple[str, ...] = ("text",)  # joined by a space
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"
    validation_split: str | None = None  # None: validation examples are carved from train
    label_names: tuple[str, ...] | None = None  # class names in id order; None: from the data
    label_order: str = ""  # how names map to ids, for the report (set for presets)
    names_in_errors: bool = True  # name classes in sampling errors ("class 2 (Sports) has ...")
    few_rel_path: Path | None = None
    label_keys: tuple[str, ...] | None = None  # task.label_names as a mapping: class i is the data's label keys[i]
    label_names_from: str = "task.label_names"  # where label_names came from, for errors and the report
    first_label_id: int = 0  # the integer label of class 0 (1 for 1-based data)
    classes_file: Path | None = None  # task.classes_file, whose lines are label_names
    test_from_train: int | float | None = None  # test examples carved from train (per class, or a share)

    def identity(self) -> list:
        """What a cache key needs to notice changed task data."""
        if self.few_rel_path is not None:
            return ["few_rel", list(file_identity(self.few_rel_path, REFETCH_HINT))]
        if self.classes_file is not None:  # class names from a file: an edited file changes the ids
            return [self.source.identity(), list(file_identity(self.classes_file))]
        return self.source.identity()

    def describe(self) -> str:
        return f"FewRel JSON {self.few_rel_path}" if self.few_rel_path is not None else self.source.describe()


@dataclass(frozen=True)
class CorpusSpec:
    """Where the pre-training documents come from: the Wikipedia preset or the config's dataset."""

    source: Source
    split: str = "train"
    text_column: str = "text"
    wikipedia_root: Path | None = None  # set for the preset (its messages name the data root)
    documents: str = "per_file"  # how a plain text file divides into documents (workers/data/text_documents.py)

    def identity(self) -> list:
        divided = [] if self.documents == "per_file" else [self.documents]
        return [self.split, self.text_column, self.source.identity(), *divided]

    def describe(self) -> str:
        if self.wikipedia_root is not None:
            return f"{WIKIPEDIA} (data root {self.wikipedia_root})"
        return self.source.describe()
