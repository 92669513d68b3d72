"""Data loaders on the real datasets in ../shared/data: subsets, sampling, splits, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers import data as wdata
from workers.errors import DataError


def test_pretraining_subsets_nest_and_are_deterministic(data_root):
    small = wdata.pretraining_articles(data_root, 50, order_seed=0)
    large = wdata.pretraining_articles(data_root, 200, order_seed=0)
    assert large[:50] == small
    assert wdata.pretraining_articles(data_root, 50, order_seed=0) == small
    other = wdata.pretraining_articles(data_root, 50, order_seed=1)
    assert other != small
    assert all(isinstance(t, str) and t.strip() for t in large)


def test_too_many_articles_is_a_clear_error(data_root):
    n = len(wdata.load_wikipedia_texts(data_root))
    assert n == 6417  # the documented size of the local corpus
    with pytest.raises(DataError, match="holds 6417 Wikipedia articles"):
        wdata.pretraining_articles(data_root, n + 1, order_seed=0)


@pytest.mark.parametrize("name, classes", [("ag_news", 4), ("dbpedia_14", 14), ("few_rel", 16)])
def test_task_sampling_per_class(data_root, name, classes):
    task = wdata.load_task(data_root, name, train_per_class=20, val_per_class=5, test_per_class=10, sample_seed=0)
    assert task.num_classes == classes
    for labels, per_class in ((task.train_labels, 20), (task.val_labels, 5), (task.test_labels, 10)):
        assert np.bincount(labels, minlength=classes).tolist() == [per_class] * classes
    assert not set(task.train_texts) & set(task.val_texts), "validation is carved from train, disjoint from it"
    again = wdata.load_task(data_root, name, 20, 5, 10, sample_seed=0)
    assert again.train_texts == task.train_texts and again.test_texts == task.test_texts
    reseeded = wdata.load_task(data_root, name, 20, 5, 10, sample_seed=1)
    assert reseeded.train_texts != task.train_texts


def test_test_split_defaults_to_everything(data_root):
    task = wdata.load_task(data_root, "ag_news", 5, 5, None, sample_seed=0)
    assert len(task.test_labels) == 7600  # the complete official AG News test set


def test_few_rel_split_is_per_relation_and_marks_entities(data_root):
    task = wdata.load_task(data_root, "few_rel", 560, 70, None, sample_seed=0)
    assert np.bincount(task.test_labels).tolist() == [wdata.FEW_REL_TEST_PER_RELATION] * 16
    assert not set(task.test_texts) & (set(task.train_texts) | set(task.val_texts))
    text = task.train_texts[0]
    assert text.count("@") >= 2 and text.count("#") >= 2
    with pytest.raises(DataError, match="fewer than the 640"):
        wdata.load_task(data_root, "few_rel", 600, 40, None, sample_seed=0)


def test_mark_entities():
    tokens = ["Paris", "is", "the", "capital", "of", "France", "."]
    assert wdata.mark_entities(tokens, ["Paris", "Q90", [[0]]], ["France", "Q142", [[5]]]) == \
        "@ Paris @ is the capital of # France # ."


def _copy_task(data_root, tmp_path, name="ag_news"):
    root = tmp_path / "root"
    shutil.copytree(data_root / name, root / name)
    return root


def _rewrite(path, table):
    path.chmod(0o644)
    pq.write_table(table, path)


def test_missing_column_names_the_file(data_root, tmp_path):
    root = _copy_task(data_root, tmp_path)
    path = root / "ag_news" / "train.parquet"
    _rewrite(path, pq.read_table(path).drop(["label"]))
    with pytest.raises(DataError, match=r"train\.parquet is missing column\(s\) label"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)


def test_label_out_of_range_names_file_and_row(data_root, tmp_path):
    root = _copy_task(data_root, tmp_path)
    path = root / "ag_news" / "test.parquet"
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[17] = 9
    _rewrite(path, table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int64())))
    with pytest.raises(DataError, match=r"test\.parquet row 17: label 9 is outside 0\.\.3"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)


def test_empty_text_names_file_and_row(data_root, tmp_path):
    root = _copy_task(data_root, tmp_path)
    path = root / "ag_news" / "train.parquet"
    table = pq.read_table(path)
    texts = table.column("text").to_pylist()
    texts[3] = "   "
    _rewrite(path, table.set_column(table.column_names.index("text"), "text", pa.array(texts)))
    with pytest.raises(DataError, match=r"train\.parquet row 3: empty text"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)


def test_missing_dataset_says_where_it_looked(tmp_path):
    (tmp_path / "wikipedia").mkdir()
    with pytest.raises(DataError, match="dbpedia_14/train.parquet.*committee data pull"):
        wdata.check_task_files(tmp_path, "dbpedia_14")
    with pytest.raises(DataError, match="no Wikipedia shards"):
        wdata.wikipedia_shards(tmp_path)


def test_broken_few_rel_json(tmp_path):
    (tmp_path / "few_rel").mkdir()
    (tmp_path / "few_rel" / "val_wiki.json").write_text(json.dumps({"P1": [{"tokens": ["a"]}]}))
    with pytest.raises(DataError, match="relation P1 example 0"):
        wdata.load_task(tmp_path, "few_rel", 1, 1, None, 0)


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(wdata.DATA_ENV, str(tmp_path))
    assert wdata.resolve_data_root(None) == tmp_path.resolve()
    monkeypatch.setenv(wdata.DATA_ENV, str(tmp_path / "absent"))
    with pytest.raises(DataError, match="absent.*does not exist"):
        wdata.resolve_data_root(None)
