"""Classification tasks and pre-training corpora: the paper's presets and the user's own data.

A task or a corpus is a dataset named the way Hugging Face `datasets` names one (a hub id, a
save_to_disk folder, local csv/tsv/json/jsonl/parquet files, or for a corpus text: a folder of .txt files,
WikiExtractor output, a text file; see workers/data/datasets.py and workers/data/text_documents.py). Data is
read as it is distributed: csv/tsv files without a header row (task.column_names), 1-based labels and a
classes.txt (task.first_label_id, task.classes_file), a train file only (task.test_from_train).
The paper's data are presets of the same mechanism, read from a data root in the hub's schemas
(workers/data/root.py, ../shared/data/README.md): ag_news and dbpedia_14 (parquet), the
Wikipedia corpus (parquet shards), and few_rel / few_rel_64 (FewRel JSON, 16 or 64 relations, through its own
adapter, workers/data/few_rel.py: entity marking, a per-relation split).
Labels are integer class ids or string class names; names become ids in sorted order (Python's `sorted`,
by Unicode code point) unless `task.label_names` lists them, and a hub ClassLabel keeps its own order
(workers/data/task_examples.py).

Every loader checks what it reads and raises `DataError` naming the file (and row and column) at fault:
a truncated or corrupt file, a file without rows, invalid UTF-8, a text that is not a string, a missing
column (naming those that exist), a label that is neither an integer nor a string or is out of range, a
class without examples or with fewer than asked for. The same checks apply to presets and to user data.
`check_task_data` runs them on everything a run reads, so a run fails before it creates or deletes
anything. Parsed files are cached per process, keyed by (path, mtime, size) (workers/data/cache.py), so
the check and the run that follows read each file once.

This module is the loading API (specs, `check_task_data`, corpora, `load_task`); `committee predict` reads
its INPUT with workers/data/predict_inputs.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

# the rest of the data API, re-exported: callers use these as workers.data.loading.<name>
from workers.data.cache import cached, clear_cache
from workers.data.datasets import (
    HEADERLESS_FORMATS,
    TEXT_KINDS,
    Part,
    Source,
    data_files_source,
    files_source,
    resolve_source,
    text_suffix,
)
from workers.data.few_rel import few_rel_source, mark_entities
from workers.data.readers import read_columns
from workers.data.root import (
    DATA_ENV,
    FEW_REL_PRESETS,
    FEW_REL_TEST_PER_RELATION,
    PRESETS,
    PULL_HINT,
    REFETCH_HINT,
    TASK_CLASSES,
    TASK_FILES,
    TASK_LABEL_NAMES,
    TASK_TEXT_COLUMNS,
    check_task_files,
    default_data_root,
    require_file,
    resolve_data_root,
    wikipedia_shards,
)
from workers.data.specs import CorpusSpec, TaskSpec
from workers.data.task_examples import carve_test, dataset_task_source, per_class_sample
from workers.data.text_documents import split_documents
from workers.errors import DataError

# ----------------------------------------------------------------------------------------------
# A task and a corpus (workers.data.specs): presets, or the config's dataset fields


def preset_task(root: Path, name: str) -> TaskSpec:
    """A paper task from the data root: a dataset spec like any other (FewRel through its adapter)."""
    if name not in PRESETS:
        raise DataError(f"{name!r} is not a task preset ({', '.join(PRESETS)})")
    if name in FEW_REL_PRESETS:
        return TaskSpec(name, None, few_rel_path=require_file(root, TASK_FILES[name][0]),
                        label_order="relation ids sorted")
    train, test = (require_file(root, rel) for rel in TASK_FILES[name])
    source = files_source({"train": [train], "test": [test]}, str(root / name), hint=REFETCH_HINT)
    return TaskSpec(name, source, TASK_TEXT_COLUMNS[name], label_names=TASK_LABEL_NAMES[name],
                    label_order="the hub dataset's class ids", names_in_errors=False)


def task_spec(task, data_root: str | None) -> TaskSpec:
    """The task of a config's `task` section: the preset `task.name` from the data root when it names no
    dataset, else the dataset it names (hub id, folder or data files) read with its columns and splits."""
    if task.dataset is None and task.data_files is None:
        return preset_task(resolve_data_root(data_root), task.name)
    if task.data_files is not None:
        source = data_files_source(task.data_files, "task.data_files")
    else:
        source = resolve_source(task.dataset, task.dataset_config, "task.dataset")
    if task.column_names is not None:
        source = _headerless(source, tuple(task.column_names))
    text = task.text_column
    names, keys, names_from, classes_file = _class_names(task)
    return TaskSpec(task.name, source, (text,) if isinstance(text, str) else tuple(text), task.label_column,
                    task.train_split, task.test_split, task.validation_split, names, label_keys=keys,
                    label_names_from=names_from, first_label_id=task.first_label_id, classes_file=classes_file,
                    test_from_train=task.test_from_train)


def _headerless(source: Source, column_names: tuple[str, ...]) -> Source:
    """`source` read with `task.column_names` as the columns of its csv/tsv files, which have no header row."""
    files = [p for _, paths in source.split_files for p in paths] if source.kind == "files" else []
    other = [p for p in files if p.suffix.lower() not in (".csv", ".tsv")]
    if source.kind != "files" or other:
        what = str(other[0]) if other else source.describe()
        raise DataError(f"task.column_names names the columns of csv and tsv files without a header row, but "
                        f"{what} is not one ({', '.join(f'.{f}' for f in HEADERLESS_FORMATS)}); its columns have "
                        f"names of their own: leave task.column_names out")
    return replace(source, column_names=column_names)


def _class_names(task) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None, str, Path | None]:
    """(class names in id order, the data's label of each when mapped, where the names come from, the classes
    file) of a task section: task.label_names as a list or a mapping, or the lines of task.classes_file."""
    if isinstance(task.label_names, dict):
        return tuple(task.label_names.values()), tuple(str(k) for k in task.label_names), "task.label_names", None
    if task.label_names:
        return tuple(task.label_names), None, "task.label_names", None
    if task.classes_file is None:
        return None, None, "task.label_names", None
    path = Path(task.classes_file).expanduser()
    return read_classes_file(path), None, f"task.classes_file ({task.classes_file})", path.resolve()


def read_classes_file(path: Path) -> tuple[str, ...]:
    """The class names of a classes file: one a line, in id order (trailing blank lines allowed); an empty line
    among them, a name given twice, or fewer than two names is a DataError naming the file and line."""
    if not path.is_file():
        raise DataError(f"task.classes_file: {path} is not a file (relative paths start at the working directory "
                        f"{Path.cwd()})")
    part = Part(str(path), "text", path=path)
    lines = read_columns(part, ("text",))["text"][0].splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise DataError(f"{path} line {number} is empty; a classes file holds one class name a line, in id order")
        if name in seen:
            raise DataError(f"{path} line {number}: class {name!r} is named twice (line {seen[name]} too)")
        seen[name] = number
    if len(seen) < 2:
        raise DataError(f"{path} names {len(seen)} class(es); a classification task needs at least two, one a line")
    return tuple(seen)


def wikipedia_corpus(root: Path) -> CorpusSpec:
    """The corpus preset: the data root's Wikipedia shards in name order, column `text`."""
    source = files_source({"train": wikipedia_shards(root)}, str(root / "wikipedia"), hint=REFETCH_HINT)
    return CorpusSpec(source, wikipedia_root=root)


def corpus_spec(corpus, data_root: str | None) -> CorpusSpec:
    """The corpus of a config's `pretrain.corpus` section: Wikipedia from the data root when it names no
    dataset, else the dataset (a folder of .txt files, data files, a save_to_disk folder or a hub id)."""
    if corpus is None or corpus.dataset is None:
        return wikipedia_corpus(resolve_data_root(data_root))
    source = resolve_source(corpus.dataset, corpus.dataset_config, "pretrain.corpus.dataset", text_folder=True)
    documents = getattr(corpus, "documents", "per_file")
    if documents != "per_file" and source.kind not in TEXT_KINDS:
        raise DataError(f"pretrain.corpus.documents={documents} divides text files into documents, but "
                        f"{source.describe()} holds one document per row of its column pretrain.corpus.text_column; "
                        f"leave pretrain.corpus.documents out")
    return CorpusSpec(source, corpus.split, corpus.text_column, documents=documents)


def check_task_data(root: Path | None, task: str | TaskSpec, train_per_class: int, val_per_class: int,
                    test_per_class: int | None, sample_seed: int,
                    pretrain_articles: int | None = None, order_seed: int = 0,
                    corpus: CorpusSpec | None = None) -> None:
    """Read and check every file a run with these settings reads, raising `DataError` on the first fault.

    `task` is a preset name (read from `root`) or a TaskSpec. The task's files are parsed and sampled exactly
    as `load_task` does (so a class short of examples fails here); with `pretrain_articles` (the larger of
    pretrain.articles and tokenizer.train_articles) the whole corpus (`corpus`, default the Wikipedia preset of
    `root`) is read too, since the seeded article order spans all of it. A driver calls this before it creates
    or deletes anything; the parsed files stay cached, so the run reads none twice.
    """
    if isinstance(task, str):
        check_task_files(root, task)
        task = preset_task(root, task)
    if pretrain_articles is not None and corpus is None:
        corpus = wikipedia_corpus(root)
    load_task_from(task, train_per_class, val_per_class, test_per_class, sample_seed)
    if pretrain_articles is not None:
        pretraining_documents(corpus, pretrain_articles, order_seed)


# ----------------------------------------------------------------------------------------------
# Corpora


def _parse_documents(part: Part, text_column: str, noun: str, documents: str = "per_file") -> tuple[str, ...]:
    """The documents of one part; an empty one names its file (and row). A text file divides into documents as
    `documents` says, or into its WikiExtractor articles."""
    if part.fmt == "text":
        (text,) = read_columns(part, ("text",))["text"]
        texts = split_documents(part.where, text, documents, text_column, json_lines=text_suffix(part.path) == "")
        if any(not t.strip() for t in texts):  # per_file: the whole file is the document
            raise DataError(f"{part.path}: empty document (a corpus folder holds one document per .txt file); "
                            f"remove the file or give it text")
        return texts
    texts = read_columns(part, (text_column,))[text_column]
    for row, text in enumerate(texts):
        if text is None or not text.strip():
            raise DataError(f"{part.where} row {row} column {text_column!r}: empty {noun} text; {part.hint}")
    return tuple(texts)


def corpus_documents(corpus: CorpusSpec) -> list[str]:
    """All documents of a corpus, in source order (the order the seeded permutation is applied to)."""
    noun = "article" if corpus.wikipedia_root is not None else "document"
    texts: list[str] = []
    for part in corpus.source.parts(corpus.split, "pretrain.corpus.split"):
        texts.extend(cached(part.identity(), ("corpus", corpus.text_column, corpus.documents),
                            lambda: _parse_documents(part, corpus.text_column, noun, corpus.documents)))
    if not texts:
        raise DataError(f"the corpus {corpus.describe()} holds no documents; give pretrain.corpus.dataset some text")
    return texts


def article_order(n_total: int, order_seed: int) -> np.ndarray:
    """A fixed permutation of all article indices; the first N of it is the N-article corpus."""
    return np.random.default_rng(order_seed).permutation(n_total)  # [n_total] int64


def pretraining_documents(corpus: CorpusSpec, n_documents: int, order_seed: int) -> list[str]:
    """The first `n_documents` of the seeded order: a smaller corpus is always a prefix of a larger one."""
    texts = corpus_documents(corpus)
    if n_documents > len(texts):
        if corpus.wikipedia_root is not None:
            raise DataError(f"pretrain.articles={n_documents} but the data root {corpus.wikipedia_root} holds "
                            f"{len(texts)} Wikipedia articles")
        one_file = (" (a text file is one document unless pretrain.corpus.documents is per_line or per_block)"
                    if corpus.source.kind == "text_file" and corpus.documents == "per_file" else "")
        raise DataError(f"pretrain.articles={n_documents} but the corpus {corpus.describe()} holds {len(texts)} "
                        f"documents{one_file}; lower pretrain.articles (and tokenizer.train_articles) or add documents")
    return [texts[i] for i in article_order(len(texts), order_seed)[:n_documents]]


def load_wikipedia_texts(root: Path) -> list[str]:
    """All articles' texts, in shard order (the order the seeded permutation is applied to)."""
    return corpus_documents(wikipedia_corpus(root))


def pretraining_articles(root: Path, n_articles: int, order_seed: int) -> list[str]:
    """The first `n_articles` Wikipedia articles of the seeded order (the corpus preset)."""
    return pretraining_documents(wikipedia_corpus(root), n_articles, order_seed)


# ----------------------------------------------------------------------------------------------
# Classification tasks


@dataclass(frozen=True)
class TaskSplits:
    """Texts and integer labels of one task's train / validation / test examples."""

    name: str
    num_classes: int
    train_texts: list[str]
    train_labels: np.ndarray  # [n_train] int64
    val_texts: list[str]
    val_labels: np.ndarray  # [n_val] int64
    test_texts: list[str]
    test_labels: np.ndarray  # [n_test] int64
    label_names: tuple[str, ...] = ()  # class i is label_names[i]
    label_order: str = ""  # how the names became ids (for the report)
    source: str = ""  # where the examples came from (for the report)
    data_labels: list | None = None  # class i is label data_labels[i] in the data, when that is not i
    test_carved: dict | None = None  # test examples carved from train: the setting and the count per class


def load_task(root: Path, name: str, train_per_class: int, val_per_class: int,
              test_per_class: int | None, sample_seed: int) -> TaskSplits:
    """Per-class samples of a preset task from the data root (see `load_task_from`)."""
    return load_task_from(preset_task(root, name), train_per_class, val_per_class, test_per_class, sample_seed)


def load_task_from(spec: TaskSpec, train_per_class: int, val_per_class: int,
                   test_per_class: int | None, sample_seed: int) -> TaskSplits:
    """Per-class samples of a task: train and validation from its train split (validation from its own
    split when the task has one), test from its test split.

    Every class gets `train_per_class`, `val_per_class` and `test_per_class` (all when None) examples;
    a class the data lacks, or has too few of, fails naming the split, the file and the class.
    """
    src = few_rel_source(spec.few_rel_path, spec.name) if spec.few_rel_path is not None else dataset_task_source(spec)
    if spec.test_from_train is not None:
        src = carve_test(src, spec.test_from_train, sample_seed)
    num_classes = len(src.label_names)
    rng = np.random.default_rng(sample_seed)
    if src.val_labels is None:
        train_val_per_class = train_per_class + val_per_class
        picked = per_class_sample(src.train_labels, num_classes, train_val_per_class, rng, src.train_what,
                                  src.class_names)
        picked = picked.reshape(num_classes, train_val_per_class)  # [classes, train+val]
        train_idx = rng.permutation(picked[:, :train_per_class].ravel())
        val_idx = picked[:, train_per_class:].ravel()
        val_texts, val_labels = src.train_texts, src.train_labels
    else:
        train_idx = rng.permutation(per_class_sample(src.train_labels, num_classes, train_per_class, rng,
                                                     src.train_what, src.class_names))
        val_idx = per_class_sample(src.val_labels, num_classes, val_per_class, rng, src.val_what, src.class_names)
        val_texts, val_labels = src.val_texts, src.val_labels
    test_idx = per_class_sample(src.test_labels, num_classes, test_per_class, rng, src.test_what, src.class_names)
    return TaskSplits(
        name=spec.name,
        num_classes=num_classes,
        train_texts=[src.train_texts[i] for i in train_idx],
        train_labels=src.train_labels[train_idx],
        val_texts=[val_texts[i] for i in val_idx],
        val_labels=val_labels[val_idx],
        test_texts=[src.test_texts[i] for i in test_idx],
        test_labels=src.test_labels[test_idx],
        label_names=tuple(src.label_names),
        label_order=src.label_order,
        source=spec.describe(),
        data_labels=src.data_labels,
        test_carved=None if src.test_carved_per_class is None else {
            "test_from_train": spec.test_from_train, "per_class": list(src.test_carved_per_class),
            "seed": sample_seed},
    )
