"""Real datasets from a data root: the Wikipedia pre-training corpus and the classification tasks.

The data root holds the Hugging Face hub's schemas (see ../shared/data/README.md):
  wikipedia/train-*.parquet            id, url, title, text
  ag_news/{train,test}.parquet         text, label (4 classes)
  dbpedia_14/{train,test}.parquet      label, title, content (14 classes)
  few_rel/val_wiki.json                {relation: [{tokens, h, t}, ...]} (16 relations)
Every loader checks what it reads and raises `DataError` naming the file (and row) at fault.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.errors import DataError

DATA_ENV = "COMMITTEE_DATA"
PULL_HINT = "set COMMITTEE_DATA or data.root to a data root, or run `committee data pull --root DIR` online"

TASK_CLASSES = {"ag_news": 4, "dbpedia_14": 14, "few_rel": 16}
TASK_FILES = {
    "ag_news": ("ag_news/train.parquet", "ag_news/test.parquet"),
    "dbpedia_14": ("dbpedia_14/train.parquet", "dbpedia_14/test.parquet"),
    "few_rel": ("few_rel/val_wiki.json",),
}
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
    for rel in TASK_FILES[task]:
        _require(root, rel)


# ----------------------------------------------------------------------------------------------
# Wikipedia


def wikipedia_shards(root: Path) -> list[Path]:
    shards = sorted((root / "wikipedia").glob("train-*.parquet"))
    if not shards:
        raise DataError(f"no Wikipedia shards: looked for {root / 'wikipedia' / 'train-*.parquet'}; {PULL_HINT}")
    return shards


def load_wikipedia_texts(root: Path) -> list[str]:
    """All articles' texts, in shard order (the order the seeded permutation is applied to)."""
    import pyarrow.parquet as pq

    texts: list[str] = []
    for shard in wikipedia_shards(root):
        table = pq.read_table(shard)
        if "text" not in table.column_names:
            raise DataError(f"{shard} has no 'text' column (columns: {', '.join(table.column_names)})")
        for row, text in enumerate(table.column("text").to_pylist()):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{shard} row {row}: empty article text")
            texts.append(text)
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


def _read_parquet_task(path: Path, text_columns: tuple[str, ...], num_classes: int) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in (*text_columns, "label") if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path} is missing column(s) {', '.join(missing)} (has: {', '.join(table.column_names)})"
        )
    labels = table.column("label").to_pylist()
    columns = [table.column(c).to_pylist() for c in text_columns]
    texts = []
    for row, label in enumerate(labels):
        if not isinstance(label, int) or not 0 <= label < num_classes:
            raise DataError(f"{path} row {row}: label {label!r} is outside 0..{num_classes - 1}")
        text = " ".join(str(col[row]).strip() for col in columns if col[row]).strip()
        if not text:
            raise DataError(f"{path} row {row}: empty text")
        texts.append(text)
    return texts, np.asarray(labels, dtype=np.int64)


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


def _read_few_rel(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(relation ids, texts, labels) of FewRel's JSON; label i is the i-th relation id in sorted order."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not readable FewRel JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path} must map relation ids to lists of examples")
    relations = sorted(data)
    texts, labels = [], []
    for label, relation in enumerate(relations):
        for row, ex in enumerate(data[relation]):
            try:
                text = mark_entities(ex["tokens"], ex["h"], ex["t"])
            except (KeyError, IndexError, TypeError):
                raise DataError(f"{path} relation {relation} example {row}: needs tokens, h and t with positions") from None
            if not text.strip():
                raise DataError(f"{path} relation {relation} example {row}: empty text")
            texts.append(text)
            labels.append(label)
    return relations, texts, np.asarray(labels, dtype=np.int64)


def _per_class_sample(labels: np.ndarray, per_class: int | None, rng: np.random.Generator, what: str) -> np.ndarray:
    """Indices of `per_class` examples of each class (all if None), drawn with `rng`, sorted by class."""
    chosen = []
    for cls in np.unique(labels):
        pool = np.flatnonzero(labels == cls)
        if per_class is None:
            chosen.append(pool)
            continue
        if per_class > len(pool):
            raise DataError(f"{what}: class {cls} has {len(pool)} examples, fewer than the {per_class} asked for")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.concatenate(chosen)


def load_task(root: Path, name: str, train_per_class: int, val_per_class: int,
              test_per_class: int | None, sample_seed: int) -> TaskSplits:
    """Per-class samples of a task: train and validation from its train split, test from its test split."""
    num_classes = TASK_CLASSES[name]
    if name == "few_rel":
        path = _require(root, TASK_FILES[name][0])
        _, texts, labels = _read_few_rel(path)
        split_rng = np.random.default_rng(1_000_003)  # fixed: the train/test split never depends on a run
        test_idx = _per_class_sample(labels, FEW_REL_TEST_PER_RELATION, split_rng, f"{path} (test split)")
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[test_idx] = True
        train_texts = [t for t, m in zip(texts, is_test) if not m]
        train_labels = labels[~is_test]
        test_texts = [texts[i] for i in np.sort(test_idx)]
        test_labels = labels[np.sort(test_idx)]
        num_classes = len(np.unique(labels))
    else:
        columns = ("text",) if name == "ag_news" else ("title", "content")
        train_path, test_path = (_require(root, rel) for rel in TASK_FILES[name])
        train_texts, train_labels = _read_parquet_task(train_path, columns, num_classes)
        test_texts, test_labels = _read_parquet_task(test_path, columns, num_classes)

    rng = np.random.default_rng(sample_seed)
    picked = _per_class_sample(train_labels, train_per_class + val_per_class, rng, f"{name} train")
    picked = picked.reshape(-1, train_per_class + val_per_class)  # [classes, train+val]
    train_idx = rng.permutation(picked[:, :train_per_class].ravel())
    val_idx = picked[:, train_per_class:].ravel()
    test_idx = _per_class_sample(test_labels, test_per_class, rng, f"{name} test")
    return TaskSplits(
        name=name,
        num_classes=num_classes,
        train_texts=[train_texts[i] for i in train_idx],
        train_labels=train_labels[train_idx],
        val_texts=[train_texts[i] for i in val_idx],
        val_labels=train_labels[val_idx],
        test_texts=[test_texts[i] for i in test_idx],
        test_labels=test_labels[test_idx],
    )
