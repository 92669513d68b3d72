"""The FewRel task preset's adapter: FewRel 1.0's JSON ({relation: [{tokens, h, t}]}) as labelled texts.

Each example becomes its sentence with the head entity inside '@ ... @' and the tail inside '# ... #';
label i is the i-th relation id in sorted order. The file is decoded strictly as UTF-8 and every bad field
names its relation, example and field. Train and test come from one file, split per relation with a fixed
seed (FEW_REL_TEST_PER_RELATION test examples each), so the split never depends on a run's seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workers.data.cache import cached
from workers.data.datasets import file_identity
from workers.data.root import FEW_REL_PRESETS, FEW_REL_TEST_PER_RELATION, REFETCH_HINT, TASK_CLASSES
from workers.data.task_examples import TaskSource, frozen_ids, per_class_sample
from workers.errors import DataError


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


def _parse_few_rel(path: Path, preset: str = "few_rel") -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(relation ids, marked texts, labels) of FewRel's JSON, checked field by field; `preset` says how many
    relations the file must hold."""
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
    if len(relations) != TASK_CLASSES[preset]:
        raise DataError(
            f"{path} holds {len(relations)} relations ({', '.join(relations[:20])}), but {preset} has "
            f"{TASK_CLASSES[preset]} ({FEW_REL_PRESETS[preset]}); {REFETCH_HINT}"
        )
    return tuple(relations), tuple(texts), frozen_ids(labels)


def read_few_rel(path: Path, preset: str = "few_rel") -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(relation ids, texts, labels) of FewRel's JSON; label i is the i-th relation id in sorted order."""
    return cached(file_identity(path, REFETCH_HINT), (preset,), lambda: _parse_few_rel(path, preset))


def few_rel_source(path: Path, preset: str = "few_rel") -> TaskSource:
    """FewRel's fixed per-relation train/test split (it never depends on a run's seeds)."""
    relations, texts, labels = read_few_rel(path, preset)
    split_rng = np.random.default_rng(1_000_003)
    test_idx = np.sort(per_class_sample(labels, len(relations), FEW_REL_TEST_PER_RELATION, split_rng,
                                        f"{path} (test split)", relations))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return TaskSource([t for t, held_out in zip(texts, is_test) if not held_out], labels[~is_test],
                      [texts[i] for i in test_idx], labels[test_idx],
                      f"{preset} train split ({path})", f"{preset} test split ({path})", relations,
                      relations, "relation ids sorted")
