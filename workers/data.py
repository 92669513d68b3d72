"""Real datasets from a data root: the Wikipedia pre-training corpus and the classification tasks.

The data root holds the Hugging Face hub's schemas (see ../shared/data/README.md):
  wikipedia/train-*.parquet            id, url, title, text
  ag_news/{train,test}.parquet         text, label (4 classes)
  dbpedia_14/{train,test}.parquet      label, title, content (14 classes)
  few_rel/val_wiki.json                {relation: [{tokens, h, t}, ...]} (16 relations)
Every loader checks what it reads and raises `DataError` naming the file (and row and column) at fault:
a truncated or corrupt file, a file without rows, invalid UTF-8, a text that is not a string, a label out
of range, a declared class without examples. `check_task_data` runs all of these checks on everything a
run reads, so a run fails before it creates or deletes anything. Parsed files are cached per process,
keyed by (path, mtime, size), so the check and the run that follows read each file once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

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
FEW_REL_TEST_PER_RELATION = 70  # per-relation split of FewRel's 700 examples: 630 train / 70 test (the paper's)


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


def check_task_files(root: Path, task: str) -> None:
    """Cheap check that the task's files exist (reads nothing); `check_task_data` reads and checks them."""
    for rel in TASK_FILES[task]:
        _require(root, rel)


def check_task_data(root: Path, task: str, train_per_class: int, val_per_class: int,
                    test_per_class: int | None, sample_seed: int,
                    pretrain_articles: int | None = None, order_seed: int = 0) -> None:
    """Read and check every file a run with these settings reads, raising `DataError` on the first fault.

    The task's files are parsed and sampled exactly as `load_task` does (so a class short of examples
    fails here); with `pretrain_articles` (the larger of pretrain.articles and tokenizer.train_articles)
    every Wikipedia shard is read too, since the seeded article order spans all of them. A driver calls
    this before it creates or deletes anything; the parsed files stay cached, so the run reads none twice.
    """
    check_task_files(root, task)
    if pretrain_articles is not None:
        wikipedia_shards(root)
    load_task(root, task, train_per_class, val_per_class, test_per_class, sample_seed)
    if pretrain_articles is not None:
        pretraining_articles(root, pretrain_articles, order_seed)


# ----------------------------------------------------------------------------------------------
# Reading files: a per-process cache, and parquet columns checked cell by cell

_CACHE_MAX_ENTRIES = 32
_parsed_files: dict[tuple, object] = {}
_Parsed = TypeVar("_Parsed")


def _file_identity(path: Path) -> tuple[str, int, int]:
    """(resolved path, mtime in ns, size in bytes): a file rewritten in place gets a new identity."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}; {PULL_HINT}") from None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _cached(path: Path, how: tuple, parse: Callable[[], _Parsed]) -> _Parsed:
    """parse(), or its earlier result for the same file identity and the same `how` (columns, classes)."""
    key = (*_file_identity(path), *how)
    if key not in _parsed_files:
        parsed = parse()
        if len(_parsed_files) >= _CACHE_MAX_ENTRIES:
            _parsed_files.pop(next(iter(_parsed_files)))  # the oldest entry
        _parsed_files[key] = parsed
    return _parsed_files[key]


def clear_cache() -> None:
    """Forget every parsed file (the cache also notices a file that changed on disk by itself)."""
    _parsed_files.clear()


def _read_parquet(path: Path, columns: tuple[str, ...]):
    """The named columns of a parquet file; a truncated or corrupt file or a missing column is a DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path} is missing column(s) {', '.join(missing)} (has: {', '.join(names)})")
        return pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid for a lost footer, OSError for broken pages
        raise DataError(
            f"{path} is not a readable parquet file (truncated or corrupt?): {str(exc).rstrip('.')}; {REFETCH_HINT}"
        ) from None


def _decode_utf8_cells(path: Path, column: str, cells: list) -> list[str | None]:
    """Binary cells decoded as UTF-8 (nulls stay None); the first invalid cell names its row and byte."""
    texts: list[str | None] = []
    for row, cell in enumerate(cells):
        if cell is None:
            texts.append(None)
            continue
        try:
            texts.append(cell.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} row {row} column {column!r}: invalid UTF-8 at byte {exc.start} of the cell "
                f"({exc.reason}: {cell[max(0, exc.start - 20):exc.start + 4]!r}); {REFETCH_HINT}"
            ) from None
    return texts


def _text_cells(path: Path, table, column: str) -> list[str | None]:
    """A text column's cells as Python strings, None for nulls.

    Binary columns (BYTE_ARRAY written without the UTF-8 annotation) are decoded as UTF-8; a string column
    whose bytes are not UTF-8 and a column of another type (numbers, lists) fail naming row and column.
    """
    import pyarrow as pa

    values = table.column(column)
    kind = values.type
    if str(kind) in ("string", "large_string", "string_view"):
        try:
            return values.to_pylist()
        except UnicodeDecodeError:  # the reader does not validate UTF-8: find the cell at fault
            return _decode_utf8_cells(path, column, values.cast(pa.large_binary()).to_pylist())
    if str(kind) in ("binary", "large_binary", "binary_view"):
        return _decode_utf8_cells(path, column, values.to_pylist())
    if values.null_count == len(values):
        return [None] * len(values)
    row = next(i for i, valid in enumerate(values.is_valid().to_pylist()) if valid)
    found = values[row].as_py()
    shown = repr(found) if len(repr(found)) <= 60 else repr(found)[:57] + "..."
    raise DataError(
        f"{path} row {row} column {column!r}: texts must be strings, found {type(found).__name__} "
        f"{shown} (column type {kind}); {REFETCH_HINT}"
    )


# ----------------------------------------------------------------------------------------------
# Wikipedia


def wikipedia_shards(root: Path) -> list[Path]:
    shards = sorted((root / "wikipedia").glob("train-*.parquet"))
    if not shards:
        raise DataError(f"no Wikipedia shards: looked for {root / 'wikipedia' / 'train-*.parquet'}; {PULL_HINT}")
    return shards


def _parse_wikipedia_shard(shard: Path) -> tuple[str, ...]:
    texts = _text_cells(shard, _read_parquet(shard, ("text",)), "text")
    for row, text in enumerate(texts):
        if text is None or not text.strip():
            raise DataError(f"{shard} row {row} column 'text': empty article text; {REFETCH_HINT}")
    return tuple(texts)


def load_wikipedia_texts(root: Path) -> list[str]:
    """All articles' texts, in shard order (the order the seeded permutation is applied to)."""
    texts: list[str] = []
    for shard in wikipedia_shards(root):
        texts.extend(_cached(shard, ("wikipedia",), lambda: _parse_wikipedia_shard(shard)))
    return texts


def article_order(n_total: int, order_seed: int) -> np.ndarray:
    """A fixed permutation of all article indices; the first N of it is the N-article corpus."""
    return np.random.default_rng(order_seed).permutation(n_total)  # [n_total] int64


def pretraining_articles(root: Path, n_articles: int, order_seed: int) -> list[str]:
    """The first `n_articles` of the seeded order: a smaller corpus is always a prefix of a larger one."""
    texts = load_wikipedia_texts(root)
    if n_articles > len(texts):
        raise DataError(
            f"pretrain.articles={n_articles} but the data root {root} holds {len(texts)} Wikipedia articles"
        )
    return [texts[i] for i in article_order(len(texts), order_seed)[:n_articles]]


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


def _frozen(labels: list[int]) -> np.ndarray:
    array = np.asarray(labels, dtype=np.int64)  # [n_examples]
    array.setflags(write=False)  # shared through the cache: indexing makes the caller's own copy
    return array


_TaskColumns = tuple[tuple[str, ...], np.ndarray]  # (texts, labels [n_rows] int64) of one task file


def _parse_parquet_task(path: Path, text_columns: tuple[str, ...], num_classes: int) -> _TaskColumns:
    """(texts, labels) of a task file; text columns are joined by a space (dbpedia_14: title + content)."""
    table = _read_parquet(path, (*text_columns, "label"))
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows; {REFETCH_HINT}")
    columns = [_text_cells(path, table, c) for c in text_columns]
    labels = table.column("label").to_pylist()
    texts = []
    for row, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
            raise DataError(f"{path} row {row}: label {label!r} is outside 0..{num_classes - 1}")
        text = " ".join(col[row].strip() for col in columns if col[row]).strip()
        if not text:
            raise DataError(f"{path} row {row}: empty text (column(s) {', '.join(text_columns)})")
        texts.append(text)
    return tuple(texts), _frozen(labels)


def _read_parquet_task(path: Path, text_columns: tuple[str, ...], num_classes: int) -> _TaskColumns:
    """The checked (texts, labels) of a task file, parsed once per file version."""
    return _cached(path, ("task", text_columns, num_classes),
                   lambda: _parse_parquet_task(path, text_columns, num_classes))


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
    return _cached(path, ("few_rel",), lambda: _parse_few_rel(path))


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


@dataclass(frozen=True)
class _TaskSource:
    """A task's labelled examples before sampling: its train split (train + validation come from it) and
    its test split, with the names that errors about them use."""

    train_texts: list[str] | tuple[str, ...]
    train_labels: np.ndarray  # [n_train_split] int64
    test_texts: list[str] | tuple[str, ...]
    test_labels: np.ndarray  # [n_test_split] int64
    train_what: str  # e.g. "ag_news train split (/data/ag_news/train.parquet)"
    test_what: str
    class_names: tuple[str, ...] | None = None  # FewRel's relation ids


def _parquet_source(root: Path, name: str) -> _TaskSource:
    train_path, test_path = (_require(root, rel) for rel in TASK_FILES[name])
    columns, num_classes = TASK_TEXT_COLUMNS[name], TASK_CLASSES[name]
    train_texts, train_labels = _read_parquet_task(train_path, columns, num_classes)
    test_texts, test_labels = _read_parquet_task(test_path, columns, num_classes)
    return _TaskSource(train_texts, train_labels, test_texts, test_labels,
                       f"{name} train split ({train_path})", f"{name} test split ({test_path})")


def _few_rel_source(root: Path) -> _TaskSource:
    """FewRel's fixed per-relation train/test split (it never depends on a run's seeds)."""
    path = _require(root, TASK_FILES["few_rel"][0])
    relations, texts, labels = _read_few_rel(path)
    split_rng = np.random.default_rng(1_000_003)
    test_idx = np.sort(_per_class_sample(labels, len(relations), FEW_REL_TEST_PER_RELATION, split_rng,
                                         f"{path} (test split)", relations))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return _TaskSource([t for t, held_out in zip(texts, is_test) if not held_out], labels[~is_test],
                       [texts[i] for i in test_idx], labels[test_idx],
                       f"few_rel train split ({path})", f"few_rel test split ({path})", relations)


def load_task(root: Path, name: str, train_per_class: int, val_per_class: int,
              test_per_class: int | None, sample_seed: int) -> TaskSplits:
    """Per-class samples of a task: train and validation from its train split, test from its test split.

    Every class the task declares gets `train_per_class`, `val_per_class` and `test_per_class` (all
    when None) examples; a class the data lacks fails naming the split and file.
    """
    num_classes = TASK_CLASSES[name]
    src = _few_rel_source(root) if name == "few_rel" else _parquet_source(root, name)
    rng = np.random.default_rng(sample_seed)
    train_val_per_class = train_per_class + val_per_class
    picked = _per_class_sample(src.train_labels, num_classes, train_val_per_class, rng, src.train_what,
                               src.class_names)
    picked = picked.reshape(num_classes, train_val_per_class)  # [classes, train+val]
    train_idx = rng.permutation(picked[:, :train_per_class].ravel())
    val_idx = picked[:, train_per_class:].ravel()
    test_idx = _per_class_sample(src.test_labels, num_classes, test_per_class, rng, src.test_what, src.class_names)
    return TaskSplits(
        name=name,
        num_classes=num_classes,
        train_texts=[src.train_texts[i] for i in train_idx],
        train_labels=src.train_labels[train_idx],
        val_texts=[src.train_texts[i] for i in val_idx],
        val_labels=src.train_labels[val_idx],
        test_texts=[src.test_texts[i] for i in test_idx],
        test_labels=src.test_labels[test_idx],
    )
