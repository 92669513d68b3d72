"""Classification tasks and pre-training corpora: the paper's presets and the user's own data.

A task or a corpus is a dataset named the way Hugging Face `datasets` names one (a hub id, a
save_to_disk folder, local csv/json/jsonl/parquet files, or for a corpus a folder of .txt files; see
workers/datasets.py). The paper's data are presets of the same mechanism, read from a data root in the
hub's schemas (see ../shared/data/README.md):
  wikipedia/train-*.parquet            id, url, title, text          the corpus preset (column text)
  ag_news/{train,test}.parquet         text, label (4 classes)       task preset ag_news
  dbpedia_14/{train,test}.parquet      label, title, content (14)    task preset dbpedia_14 (title + content)
  few_rel/val_wiki.json                {relation: [{tokens, h, t}]}  task preset few_rel (its own adapter:
                                                                     entity marking, a per-relation split)
Labels are integer class ids or string class names; names become ids in sorted order (Python's `sorted`,
by Unicode code point) unless `task.label_names` lists them, and a hub ClassLabel keeps its own order.

Every loader checks what it reads and raises `DataError` naming the file (and row and column) at fault:
a truncated or corrupt file, a file without rows, invalid UTF-8, a text that is not a string, a missing
column (naming those that exist), a label that is neither an integer nor a string or is out of range, a
class without examples or with fewer than asked for. The same checks apply to presets and to user data.
`check_task_data` runs them on everything a run reads, so a run fails before it creates or deletes
anything. Parsed files are cached per process, keyed by (path, mtime, size), so the check and the run
that follows read each file once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from workers.datasets import (
    DATA_SUFFIXES,
    Part,
    Source,
    data_files_source,
    file_identity,
    files_source,
    column_names,
    read_columns,
    resolve_source,
)
from workers.errors import DataError

DATA_ENV = "COMMITTEE_DATA"
PULL_HINT = "set COMMITTEE_DATA or data.root to a data root, or run `committee data pull --root DIR` online"
REFETCH_HINT = ("check the data root with `sha256sum -c SHA256SUMS` (where it has one) and copy or pull the file "
                "again (`committee data pull --root DIR`)")

TASK_CLASSES = {"ag_news": 4, "dbpedia_14": 14, "few_rel": 16}
TASK_FILES = {
    "ag_news": ("ag_news/train.parquet", "ag_news/test.parquet"),
    "dbpedia_14": ("dbpedia_14/train.parquet", "dbpedia_14/test.parquet"),
    "few_rel": ("few_rel/val_wiki.json",),
}
TASK_TEXT_COLUMNS = {"ag_news": ("text",), "dbpedia_14": ("title", "content")}
# the hub datasets' class names, in their id order
TASK_LABEL_NAMES = {
    "ag_news": ("World", "Sports", "Business", "Sci/Tech"),
    "dbpedia_14": ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
                   "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
}
PRESETS = tuple(TASK_CLASSES)
FEW_REL_TEST_PER_RELATION = 70  # per-relation split of FewRel's 700 examples: 630 train / 70 test (the paper's)
WIKIPEDIA = "Wikipedia"  # the corpus preset's name in reports


def default_data_root() -> Path | None:
    """$COMMITTEE_DATA, else ../shared/data beside the repository (or the working directory)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def resolve_data_root(root: str | None) -> Path:
    path = Path(root) if root else default_data_root()
    if path is None:
        raise DataError(f"no data root: ${DATA_ENV} is unset and ../shared/data does not exist; {PULL_HINT}")
    if not path.is_dir():
        raise DataError(f"data root {path} does not exist; {PULL_HINT}")
    return path.resolve()


def _require(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise DataError(f"dataset file missing: looked for {path}; {PULL_HINT}")
    return path


# ----------------------------------------------------------------------------------------------
# What a task and a corpus are: presets, or the config's dataset fields


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

    def identity(self) -> list:
        """What a cache key needs to notice changed task data."""
        if self.few_rel_path is not None:
            return ["few_rel", list(file_identity(self.few_rel_path, REFETCH_HINT))]
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

    def identity(self) -> list:
        return [self.split, self.text_column, self.source.identity()]

    def describe(self) -> str:
        if self.wikipedia_root is not None:
            return f"{WIKIPEDIA} (data root {self.wikipedia_root})"
        return self.source.describe()


def check_task_files(root: Path, task: str) -> None:
    """Cheap check that a preset's files exist (reads nothing); `check_task_data` reads and checks them."""
    for rel in TASK_FILES[task]:
        _require(root, rel)


def preset_task(root: Path, name: str) -> TaskSpec:
    """A paper task from the data root: a dataset spec like any other (FewRel through its adapter)."""
    if name not in PRESETS:
        raise DataError(f"{name!r} is not a task preset ({', '.join(PRESETS)})")
    if name == "few_rel":
        return TaskSpec(name, None, few_rel_path=_require(root, TASK_FILES["few_rel"][0]),
                        label_order="relation ids sorted")
    train, test = (_require(root, rel) for rel in TASK_FILES[name])
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
    text = task.text_column
    return TaskSpec(task.name, source, (text,) if isinstance(text, str) else tuple(text), task.label_column,
                    task.train_split, task.test_split, task.validation_split,
                    tuple(task.label_names) if task.label_names else None)


def wikipedia_shards(root: Path) -> list[Path]:
    shards = sorted((root / "wikipedia").glob("train-*.parquet"))
    if not shards:
        raise DataError(f"no Wikipedia shards: looked for {root / 'wikipedia' / 'train-*.parquet'}; {PULL_HINT}")
    return shards


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
    return CorpusSpec(source, corpus.split, corpus.text_column)


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
# A per-process cache of parsed files

_CACHE_MAX_ENTRIES = 64
_parsed_files: dict[tuple, object] = {}
_Parsed = TypeVar("_Parsed")


def _cached(identity: tuple, how: tuple, parse: Callable[[], _Parsed]) -> _Parsed:
    """parse(), or its earlier result for the same file identity and the same `how` (columns, classes)."""
    key = (*identity, *how)
    if key not in _parsed_files:
        parsed = parse()
        if len(_parsed_files) >= _CACHE_MAX_ENTRIES:
            _parsed_files.pop(next(iter(_parsed_files)))  # the oldest entry
        _parsed_files[key] = parsed
    return _parsed_files[key]


def clear_cache() -> None:
    """Forget every parsed file (the cache also notices a file that changed on disk by itself)."""
    _parsed_files.clear()


# ----------------------------------------------------------------------------------------------
# Corpora


def _parse_documents(part: Part, text_column: str, noun: str) -> tuple[str, ...]:
    """The documents of one part; an empty one names its file (and row)."""
    if part.fmt == "text":
        (text,) = read_columns(part, ("text",))["text"]
        if not text.strip():
            raise DataError(f"{part.path}: empty document (a corpus folder holds one document per .txt file); "
                            f"remove the file or give it text")
        return (text,)
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
        texts.extend(_cached(part.identity(), ("corpus", corpus.text_column),
                             lambda: _parse_documents(part, corpus.text_column, noun)))
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
        raise DataError(f"pretrain.articles={n_documents} but the corpus {corpus.describe()} holds {len(texts)} "
                        f"documents; lower pretrain.articles (and tokenizer.train_articles) or add documents")
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


def _frozen(labels) -> np.ndarray:
    array = np.asarray(labels, dtype=np.int64)  # [n_examples]
    array.setflags(write=False)  # shared through the cache: indexing makes the caller's own copy
    return array


def _parse_task_part(part: Part, text_columns: tuple[str, ...], label_column: str) -> tuple[tuple, tuple]:
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


def _read_split(spec: TaskSpec, split: str, key: str) -> _Split:
    parts = spec.source.parts(split, key)
    parsed = [(part, *_cached(part.identity(), ("task", spec.text_columns, spec.label_column),
                              lambda: _parse_task_part(part, spec.text_columns, spec.label_column)))
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
    return _frozen(ids)


@dataclass(frozen=True)
class _TaskSource:
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


def _dataset_task_source(spec: TaskSpec) -> _TaskSource:
    """A task read from its dataset: parse each split, fix the classes, map labels to ids."""
    train = _read_split(spec, spec.train_split, "task.train_split")
    test = _read_split(spec, spec.test_split, "task.test_split")
    val = _read_split(spec, spec.validation_split, "task.validation_split") if spec.validation_split else None
    classes = _classes(spec, train)
    ids = {name: _label_ids(split, classes, spec.label_column)
           for name, split in (("train", train), ("test", test), ("val", val)) if split is not None}
    if len(classes.names) < 2:
        raise DataError(f"{train.what} has a single class ({', '.join(classes.names)}); a classification task "
                        f"needs at least two (check task.label_column)")
    return _TaskSource(_texts(train), ids["train"], _texts(test), ids["test"], train.what, test.what,
                       classes.names if spec.names_in_errors and classes.named else None, classes.names, classes.order,
                       _texts(val) if val else None, ids.get("val"), val.what if val else "")


def mark_entities(tokens: list[str], head: list, tail: list) -> str:
    """FewRel sentence with the head entity inside '@ ... @' and the tail inside '# ... #'."""
    head_pos = head[2][0]
    tail_pos = tail[2][0]
    opens = {head_pos[0]: "@", tail_pos[0]: "#"}
    closes = {head_pos[-1]: "@", tail_pos[-1]: "#"}
    out = []
    for i, token in enumerate(tokens):
        if i in opens:
            out.append(opens[i])
        out.append(token)
        if i in closes:
            out.append(closes[i])
    return " ".join(out)


def _load_json_utf8(path: Path):
    """A JSON file decoded strictly as UTF-8: invalid bytes and syntax errors name their byte offset."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: invalid UTF-8 at byte {exc.start} (line {line}; {exc.reason}: "
            f"{raw[max(0, exc.start - 30):exc.start + 4]!r}); {REFETCH_HINT}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not readable FewRel JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(character {exc.pos}); {REFETCH_HINT}"
        ) from None


def _few_rel_text(path: Path, relation: str, row: int, example) -> str:
    """One FewRel example as marked text; bad fields name relation, example and field."""
    where = f"{path} relation {relation} example {row}"
    tokens = example.get("tokens") if isinstance(example, dict) else None
    if not isinstance(tokens, list):
        raise DataError(f"{where}: needs tokens, h and t with positions")
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise DataError(f"{where} tokens[{i}]: texts must be strings, found {type(token).__name__} {token!r}")
    try:
        text = mark_entities(tokens, example["h"], example["t"])
    except (KeyError, IndexError, TypeError):
        raise DataError(f"{where}: needs tokens, h and t with positions") from None
    if not text.strip():
        raise DataError(f"{where}: empty text")
    return text


def _parse_few_rel(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    data = _load_json_utf8(path)
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path} must map relation ids to lists of examples")
    relations = sorted(data)
    texts, labels = [], []
    for label, relation in enumerate(relations):
        examples = data[relation]
        if not isinstance(examples, list):
            raise DataError(f"{path} relation {relation}: must be a list of examples, found {type(examples).__name__}")
        for row, example in enumerate(examples):
            texts.append(_few_rel_text(path, relation, row, example))
            labels.append(label)
    if len(relations) != TASK_CLASSES["few_rel"]:
        raise DataError(
            f"{path} holds {len(relations)} relations ({', '.join(relations[:20])}), but few_rel has "
            f"{TASK_CLASSES['few_rel']} (FewRel 1.0's validation relations); {REFETCH_HINT}"
        )
    return tuple(relations), tuple(texts), _frozen(labels)


def _read_few_rel(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(relation ids, texts, labels) of FewRel's JSON; label i is the i-th relation id in sorted order."""
    return _cached(file_identity(path, REFETCH_HINT), ("few_rel",), lambda: _parse_few_rel(path))


def _per_class_sample(labels: np.ndarray, num_classes: int, per_class: int | None, rng: np.random.Generator,
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


def _few_rel_source(path: Path) -> _TaskSource:
    """FewRel's fixed per-relation train/test split (it never depends on a run's seeds)."""
    relations, texts, labels = _read_few_rel(path)
    split_rng = np.random.default_rng(1_000_003)
    test_idx = np.sort(_per_class_sample(labels, len(relations), FEW_REL_TEST_PER_RELATION, split_rng,
                                         f"{path} (test split)", relations))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return _TaskSource([t for t, held_out in zip(texts, is_test) if not held_out], labels[~is_test],
                       [texts[i] for i in test_idx], labels[test_idx],
                       f"few_rel train split ({path})", f"few_rel test split ({path})", relations,
                       relations, "relation ids sorted")


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
    src = _few_rel_source(spec.few_rel_path) if spec.few_rel_path is not None else _dataset_task_source(spec)
    num_classes = len(src.label_names)
    rng = np.random.default_rng(sample_seed)
    if src.val_labels is None:
        train_val_per_class = train_per_class + val_per_class
        picked = _per_class_sample(src.train_labels, num_classes, train_val_per_class, rng, src.train_what,
                                   src.class_names)
        picked = picked.reshape(num_classes, train_val_per_class)  # [classes, train+val]
        train_idx = rng.permutation(picked[:, :train_per_class].ravel())
        val_idx = picked[:, train_per_class:].ravel()
        val_texts, val_labels = src.train_texts, src.train_labels
    else:
        train_idx = rng.permutation(_per_class_sample(src.train_labels, num_classes, train_per_class, rng,
                                                      src.train_what, src.class_names))
        val_idx = _per_class_sample(src.val_labels, num_classes, val_per_class, rng, src.val_what, src.class_names)
        val_texts, val_labels = src.val_texts, src.val_labels
    test_idx = _per_class_sample(src.test_labels, num_classes, test_per_class, rng, src.test_what, src.class_names)
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
    )


def read_examples(path: Path, text_columns: tuple[str, ...], label_column: str) -> tuple[list[str], list | None]:
    """The examples of one data file (csv, json, jsonl, parquet) in file order: texts (the text columns
    joined as a task joins them) and the raw labels, or None when the file has no label column.
    `committee predict` reads a dataset file with it; an empty text names its row."""
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise DataError(f"{path} is not a data file this reads ({', '.join(DATA_SUFFIXES)}) nor a .txt file")
    part = Part(str(path), DATA_SUFFIXES[suffix], path=path)
    if label_column in column_names(part):
        texts, labels = _parse_task_part(part, text_columns, label_column)
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
    if task.name == "few_rel" and task.dataset is None and task.data_files is None and path.suffix == ".json":
        _, texts, labels = _read_few_rel(path)
        return list(texts), [int(label) for label in labels]
    text_columns, label_column = task_columns(task)
    return read_examples(path, text_columns, label_column)


def label_ids_for(raw_labels: list, label_names: list[str], where: str) -> np.ndarray:
    """Raw labels (integer ids or class names) as ids [n] of a run's classes; an unknown one names its row."""
    index = {name: i for i, name in enumerate(label_names)}
    ids = []
    for row, label in enumerate(raw_labels):
        if isinstance(label, int) and 0 <= label < len(label_names):
            ids.append(label)
        elif isinstance(label, str) and label in index:
            ids.append(index[label])
        else:
            raise DataError(f"{where} row {row}: label {label!r} is not one of the run's {len(label_names)} classes "
                            f"({', '.join(label_names[:12])})")
    return _frozen(ids)
