"""Data loaders on the real datasets in ../shared/data: subsets, sampling, splits, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.data import loading as wdata
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
    n = len(wdata.load_wikipedia_texts(data_root))  # counted from the data, whatever the root holds
    with pytest.raises(DataError, match=f"holds {n} Wikipedia articles"):
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


# ----------------------------------------------------------------------------------------------
# Unreadable or malformed files: each fault is a DataError naming the file (and row and column)


def _mirror(data_root, tmp_path):
    """A data root of symlinks to the real files; a test replaces the one file it breaks with `_own`."""
    root = tmp_path / "mirror"
    for folder in ("wikipedia", "ag_news", "dbpedia_14", "few_rel"):
        (root / folder).mkdir(parents=True)
        for real in (data_root / folder).iterdir():
            (root / folder / real.name).symlink_to(real)
    return root


def _own(path):
    """Replace a symlink into the real data by a writable copy of the file; returns the path."""
    real = path.resolve()
    path.unlink()
    shutil.copyfile(real, path)
    path.chmod(0o644)
    return path


def _shard(root, index):
    return root / "wikipedia" / f"train-{index:05d}-of-00005.parquet"


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # the footer (schema, row groups) is lost


def _zero_pages(path):
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4000] = bytes(4000)  # footer intact, compressed text pages broken
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_truncate, _zero_pages], ids=["truncated", "corrupt-pages"])
def test_damaged_task_parquet_names_the_file(data_root, tmp_path, damage):
    root = _mirror(data_root, tmp_path)
    damage(_own(root / "ag_news" / "train.parquet"))
    with pytest.raises(DataError, match=r"ag_news/train\.parquet is not a readable parquet file.*sha256sum"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)


@pytest.mark.parametrize("damage", [_truncate, _zero_pages], ids=["truncated", "corrupt-pages"])
def test_damaged_wikipedia_shard_names_the_shard(data_root, tmp_path, damage):
    root = _mirror(data_root, tmp_path)
    damage(_own(_shard(root, 2)))
    with pytest.raises(DataError, match=r"train-00002-of-00005\.parquet is not a readable parquet file"):
        wdata.pretraining_articles(root, 10, order_seed=0)


def test_task_file_without_rows(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "dbpedia_14" / "test.parquet")
    _rewrite(path, pq.read_table(path).slice(0, 0))
    with pytest.raises(DataError, match=r"dbpedia_14/test\.parquet has no rows"):
        wdata.load_task(root, "dbpedia_14", 5, 5, None, 0)


def test_invalid_utf8_in_a_binary_text_column(data_root, tmp_path):
    """A parquet writer that left out the UTF-8 annotation: the text column is binary, one cell is not UTF-8."""
    root = _mirror(data_root, tmp_path)
    path = _own(root / "ag_news" / "test.parquet")
    table = pq.read_table(path)
    cells = [text.encode() for text in table.column("text").to_pylist()]
    cells[41] = cells[41][:7] + b"\xff\xfe" + cells[41][7:]
    _rewrite(path, table.set_column(table.column_names.index("text"), "text", pa.array(cells, pa.binary())))
    with pytest.raises(DataError, match=r"test\.parquet row 41 column 'text': invalid UTF-8 at byte 7 of the cell"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)


def test_valid_binary_text_column_is_decoded(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "ag_news" / "test.parquet")
    table = pq.read_table(path)
    cells = [text.encode() for text in table.column("text").to_pylist()]
    _rewrite(path, table.set_column(table.column_names.index("text"), "text", pa.array(cells, pa.binary())))
    assert wdata.load_task(root, "ag_news", 5, 5, 5, 0).test_texts == \
        wdata.load_task(data_root, "ag_news", 5, 5, 5, 0).test_texts


def test_invalid_utf8_patched_into_a_string_column(data_root, tmp_path):
    """Bytes patched inside a string column (written uncompressed so the text lies in the file as is)."""
    root = _mirror(data_root, tmp_path)
    path = _own(root / "ag_news" / "train.parquet")
    table = pq.read_table(path)
    path.chmod(0o644)
    pq.write_table(table, path, compression="none")
    raw = bytearray(path.read_bytes())
    target = table.column("text")[5].as_py().encode()
    assert raw.count(target) == 1
    raw[raw.index(target) + 3] = 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train\.parquet row 5 column 'text': invalid UTF-8 at byte 3 of the cell"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)


def test_invalid_utf8_in_few_rel_json_names_the_byte(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "few_rel" / "val_wiki.json")
    raw = bytearray(path.read_bytes())
    offset = raw.index(b"Girardeau") + 2
    raw[offset] = 0xC3  # a UTF-8 lead byte followed by an ASCII letter
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"val_wiki\.json: invalid UTF-8 at byte {offset} \(line 1"):
        wdata.load_task(root, "few_rel", 5, 5, None, 0)


def test_non_string_text_column_names_row_and_column(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "dbpedia_14" / "train.parquet")
    table = pq.read_table(path)
    words = [None, None] + [text.split() for text in table.column("content").to_pylist()[2:]]  # tokens, not text
    _rewrite(path, table.set_column(table.column_names.index("content"), "content", pa.array(words)))
    with pytest.raises(DataError, match=r"train\.parquet row 2 column 'content': texts must be strings, found list"):
        wdata.load_task(root, "dbpedia_14", 5, 5, 5, 0)


def test_non_string_few_rel_token_names_relation_example_and_token(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "few_rel" / "val_wiki.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["P364"][12]["tokens"][3] = 1987
    path.write_text(json.dumps(data), encoding="utf-8")
    where = r"val_wiki\.json relation P364 example 12 tokens\[3\]"
    with pytest.raises(DataError, match=where + ": texts must be strings, found int 1987"):
        wdata.load_task(root, "few_rel", 5, 5, None, 0)


@pytest.mark.parametrize("name, split, missing", [("ag_news", "test", 3), ("dbpedia_14", "train", 7)])
def test_class_missing_from_a_split_names_split_and_class(data_root, tmp_path, name, split, missing):
    root = _mirror(data_root, tmp_path)
    path = _own(root / name / f"{split}.parquet")
    table = pq.read_table(path)
    keep = [label != missing for label in table.column("label").to_pylist()]
    _rewrite(path, table.filter(pa.array(keep)))
    where = rf"{name} {split} split \(.*/{name}/{split}\.parquet\)"
    with pytest.raises(DataError, match=rf"{where}: class {missing} has 0 examples"):
        wdata.load_task(root, name, 5, 5, None, 0)


def test_few_rel_relation_without_examples(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "few_rel" / "val_wiki.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["P364"] = []
    path.write_text(json.dumps(data), encoding="utf-8")
    label = sorted(data).index("P364")
    with pytest.raises(DataError, match=rf"val_wiki\.json \(test split\): class {label} \(P364\) has 0 examples"):
        wdata.load_task(root, "few_rel", 5, 5, None, 0)


def test_check_task_data_reads_every_file_of_the_run(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    n = len(wdata.load_wikipedia_texts(data_root))
    held = [name for name in wdata.TASK_CLASSES if all((data_root / rel).is_file() for rel in wdata.TASK_FILES[name])]
    assert {"ag_news", "dbpedia_14", "few_rel"} <= set(held)  # few_rel_64's train_wiki.json: a pulled root only
    for name in held:
        wdata.check_task_data(root, name, 20, 5, None, 0, pretrain_articles=n, order_seed=0)
    with pytest.raises(DataError, match=f"pretrain.articles={n + 1} but the data root .* holds {n}"):
        wdata.check_task_data(root, "ag_news", 20, 5, None, 0, pretrain_articles=n + 1)
    class_0 = pq.read_table(data_root / "dbpedia_14" / "train.parquet").column("label").to_pylist().count(0)
    short = rf"dbpedia_14 train split .*: class 0 has {class_0} examples, fewer than the 400 asked for"
    with pytest.raises(DataError, match=short):
        wdata.check_task_data(root, "dbpedia_14", 300, 100, None, 0)
    _truncate(_own(_shard(root, 4)))
    wdata.check_task_data(root, "ag_news", 20, 5, None, 0)  # no pre-training corpus asked for: shards unread
    with pytest.raises(DataError, match=r"train-00004-of-00005\.parquet is not a readable parquet file"):
        wdata.check_task_data(root, "ag_news", 20, 5, None, 0, pretrain_articles=100)


def test_cache_notices_a_file_rewritten_in_place(data_root, tmp_path):
    root = _mirror(data_root, tmp_path)
    path = _own(root / "ag_news" / "test.parquet")
    first = wdata.load_task(root, "ag_news", 5, 5, 5, 0)
    assert wdata.load_task(root, "ag_news", 5, 5, 5, 0).test_texts == first.test_texts
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[0] = 4
    _rewrite(path, table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int64())))
    with pytest.raises(DataError, match=r"test\.parquet row 0: label 4 is outside 0\.\.3"):
        wdata.load_task(root, "ag_news", 5, 5, 5, 0)
