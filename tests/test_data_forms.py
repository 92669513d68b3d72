"""Data as researchers have it: text-classification CSVs without a header row, 1-based labels with a classes.txt,
TSV files, a train file only (test examples carved from it), Wikipedia as WikiExtractor writes it, plain text
with one document per line or per blank-line block; and config loading that is bounded before any work.

Every file is written here from the real data root: AG News rows as the classic distribution lays them out
(`"3","title","description"`, labels 1..4, classes.txt beside), Wikipedia articles as WikiExtractor files."""

from __future__ import annotations

import bz2
import csv
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import run_cli
from orchestrator.config.commands import to_yaml
from orchestrator.config.experiment import MAX_RUN_NAME_LENGTH, load_config, validate_dict
from orchestrator.config.sweep import MAX_SWEEP_NAME_LENGTH, load_sweep_config
from orchestrator.config.loader import MAX_CONFIG_BYTES, MAX_NESTING_DEPTH, apply_overrides, load_raw
from orchestrator.run.prepare import _arrays_key, check_data, data_sources, load_cfg_task, task_and_corpus
from orchestrator.run.report import _classes_lines
from workers.data import loading as wdata
from workers.data.predict_inputs import label_ids_for, predict_inputs
from workers.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
OWN = REPO / "configs" / "own_data.yaml"
AG_NAMES = ["World", "Sports", "Business", "Sci/Tech"]
PER_CLASS = ("task.train_per_class=20", "task.val_per_class=5")
ARTICLES = 30


# ----------------------------------------------------------------------------------------------
# AG News as distributed: headerless CSV, labels 1..4, classes.txt


def ag_news_rows(data_root: Path, split: str) -> list[dict]:
    return pq.read_table(data_root / "ag_news" / f"{split}.parquet").to_pylist()


def write_classic_csv(path: Path, rows: list[dict], delimiter: str = ",") -> None:
    """AG News rows laid out as Zhang et al. 2015 distribute them: no header, every field quoted, the class
    1-based, then title and description (the local sample has no titles: that field is empty)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        quoting = csv.QUOTE_ALL if delimiter == "," else csv.QUOTE_NONE
        writer = csv.writer(f, delimiter=delimiter, quoting=quoting, escapechar=None if delimiter == "," else "\\")
        for row in rows:
            writer.writerow([row["label"] + 1, "", row["text"]])


@pytest.fixture(scope="module")
def ag_csv(data_root, tmp_path_factory) -> Path:
    """ag_news_csv/{train,test}.csv (headerless, 1-based) and classes.txt, from the data root's AG News."""
    folder = tmp_path_factory.mktemp("ag_news_csv")
    for split in ("train", "test"):
        write_classic_csv(folder / f"{split}.csv", ag_news_rows(data_root, split))
    (folder / "classes.txt").write_text("\n".join(AG_NAMES) + "\n", encoding="utf-8")
    return folder


def ag_cfg(folder: Path, *overrides: str, splits=("train", "test")):
    files = {split: str(folder / f"{split}.csv") for split in splits}
    return load_config(OWN, ["task.name=ag_news_csv", f"task.data_files={json.dumps(files)}",
                             "task.text_column=[title, description]", "task.label_column=label", *PER_CLASS,
                             "task.test_per_class=10", *overrides])


HEADERLESS = "task.column_names=[label, title, description]"


def test_first_row_that_looks_like_data_gets_a_hint(ag_csv):
    with pytest.raises(DataError, match=r"train\.csv is missing column\(s\) title, description, label \(has: 1, , "
                                        r".*its first row looks like data, not a header: .*name its 3 columns in file "
                                        r"order with task\.column_names"):
        load_cfg_task(ag_cfg(ag_csv))


def test_headerless_one_based_csv_with_classes_file_reads_as_the_preset(ag_csv, data_root):
    """Headerless, 1-based, class names from classes.txt: the same examples and ids as the ag_news preset."""
    preset = wdata.load_task(data_root, "ag_news", 20, 5, 10, 0)
    for names in (f"task.classes_file={ag_csv / 'classes.txt'}", f"task.label_names={json.dumps(AG_NAMES)}"):
        task = load_cfg_task(ag_cfg(ag_csv, HEADERLESS, names, "task.first_label_id=1"))
        assert task.label_names == tuple(AG_NAMES) and task.data_labels == [1, 2, 3, 4]
        for split in ("train", "val", "test"):
            assert getattr(task, f"{split}_texts") == getattr(preset, f"{split}_texts"), split
            assert np.array_equal(getattr(task, f"{split}_labels"), getattr(preset, f"{split}_labels")), split
    mapped = load_cfg_task(ag_cfg(ag_csv, HEADERLESS, "task.label_names={1: World, 2: Sports, 3: Business, 4: Sci/Tech}"))
    assert mapped.train_texts == preset.train_texts and np.array_equal(mapped.test_labels, preset.test_labels)
    assert mapped.data_labels == ["1", "2", "3", "4"] and "label in the data" in mapped.label_order
    ids_only = load_cfg_task(ag_cfg(ag_csv, HEADERLESS, "task.first_label_id=1"))
    assert ids_only.label_names == ("1", "2", "3", "4") and np.array_equal(ids_only.train_labels, preset.train_labels)


def test_a_mapping_serves_labels_that_are_not_ids(data_root, tmp_path):
    """-1 / 1 labels (World / Sports rows of AG News written so): mapped by task.label_names in the order listed."""
    sign = {0: -1, 1: 1}
    for split in ("train", "test"):
        rows = [r for r in ag_news_rows(data_root, split) if r["label"] in sign]
        with open(tmp_path / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([[sign[r["label"]], r["text"]] for r in rows])
    preset = wdata.load_task(data_root, "ag_news", 20, 5, None, 0)
    files = {split: str(tmp_path / f"{split}.csv") for split in ("train", "test")}
    task = load_cfg_task(load_config(OWN, ["task.name=signs", f"task.data_files={json.dumps(files)}",
                                           "task.column_names=[label, text]", "task.text_column=text",
                                           "task.label_column=label", "task.label_names={-1: World, 1: Sports}",
                                           *PER_CLASS]))
    assert task.label_names == ("World", "Sports") and task.data_labels == ["-1", "1"]
    world_sports = [t for t, label in zip(preset.test_texts, preset.test_labels) if label < 2]
    assert sorted(task.test_texts) == sorted(world_sports)
    by_text = dict(zip(preset.test_texts, preset.test_labels.tolist()))
    assert [by_text[t] for t in task.test_texts] == task.test_labels.tolist(), "World is class 0, Sports class 1"


def test_one_based_labels_read_as_zero_based_say_so(ag_csv, tmp_path):
    with pytest.raises(DataError, match=r"the labels run from 1 to 4 and task\.classes_file \(.*classes\.txt\) names 4 "
                                        r"classes, so label 4 would be outside 0\.\.3: the labels are 1-based .*set "
                                        r"task\.first_label_id: 1"):
        load_cfg_task(ag_cfg(ag_csv, HEADERLESS, f"task.classes_file={ag_csv / 'classes.txt'}"))
    with pytest.raises(DataError, match=r"its integer labels run from 1 to 4 and no example has label 0, so class 0 "
                                        r"would have no examples: .*set task\.first_label_id: 1"):
        load_cfg_task(ag_cfg(ag_csv, HEADERLESS))
    with pytest.raises(DataError, match=r"train\.csv row 4000 column 'label': label 3 is not one of the 2 labels "
                                        r"task\.label_names maps \(1, 2\)"):
        load_cfg_task(ag_cfg(ag_csv, HEADERLESS, "task.label_names={1: World, 2: Sports}"))


def test_bad_headerless_settings_and_classes_files(ag_csv, tmp_path):
    with pytest.raises(DataError, match=r"train\.csv is not read as task\.column_names says: CSV parse error: Expected "
                                        r"2 columns, got 3.*task\.column_names lists 2 \(label, title\)"):
        load_cfg_task(ag_cfg(ag_csv, "task.column_names=[label, title]", "task.text_column=title"))
    for lines, message in ((["World", "", "Business", "Sci/Tech"], r"classes\.txt line 2 is empty"),
                           (["World", "Sports", "World", "Sci/Tech"], r"classes\.txt line 3: class 'World' is named "
                                                                      r"twice \(line 1 too\)"),
                           (["World"], r"classes\.txt names 1 class\(es\)")):
        (tmp_path / "classes.txt").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
        with pytest.raises(DataError, match=message):
            load_cfg_task(ag_cfg(ag_csv, HEADERLESS, f"task.classes_file={tmp_path / 'classes.txt'}",
                                 "task.first_label_id=1"))
    with pytest.raises(DataError, match=r"task\.classes_file: .*nowhere\.txt is not a file"):
        load_cfg_task(ag_cfg(ag_csv, HEADERLESS, f"task.classes_file={tmp_path / 'nowhere.txt'}"))
    with pytest.raises(ConfigError, match="give task.label_names or task.classes_file, not both"):
        ag_cfg(ag_csv, "task.classes_file=x.txt", "task.label_names=[a, b]")
    with pytest.raises(ConfigError, match="task.first_label_id goes with a list of names"):
        ag_cfg(ag_csv, "task.label_names={1: a, 2: b}", "task.first_label_id=1")
    with pytest.raises(ConfigError, match="task.first_label_id describes your own dataset, but the preset ag_news"):
        load_config(REPO / "configs" / "smoke.yaml", ["task.first_label_id=1"])
    data_root_parquet = wdata.resolve_data_root(None) / "ag_news"
    files = {"train": str(data_root_parquet / "train.parquet"), "test": str(data_root_parquet / "test.parquet")}
    with pytest.raises(DataError, match=r"task\.column_names names the columns of csv and tsv files without a header "
                                        r"row, but .*train\.parquet is not one"):
        load_cfg_task(ag_cfg(ag_csv, HEADERLESS, f"task.data_files={json.dumps(files)}"))


def test_cache_key_follows_the_classes_file(ag_csv, tmp_path):
    """The class ids come from the classes file: editing it must change the prepared arrays' key."""
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(AG_NAMES) + "\n", encoding="utf-8")
    cfg = ag_cfg(ag_csv, HEADERLESS, f"task.classes_file={classes}", "task.first_label_id=1")
    before = _arrays_key(cfg, None, "tok")
    classes.write_text("\n".join(reversed(AG_NAMES)) + "\n", encoding="utf-8")
    assert _arrays_key(cfg, None, "tok") != before


def test_tsv_files_with_and_without_a_header(data_root, tmp_path):
    """TSV as IANA defines it: tabs between fields, no quoting, so a text's own quotes stay text."""
    rows = {split: ag_news_rows(data_root, split) for split in ("train", "test")}
    assert any('"' in r["text"] for r in rows["test"]), "the real texts hold quotes: TSV must keep them"
    with_header, without = tmp_path / "header", tmp_path / "headerless"
    with_header.mkdir()
    without.mkdir()
    for split, split_rows in rows.items():
        with open(with_header / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("label\ttext\n" + "".join(f"{r['label']}\t{r['text']}\n" for r in split_rows))
        with open(without / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("".join(f"{r['label'] + 1}\t\t{r['text']}\n" for r in split_rows))
    preset = wdata.load_task(data_root, "ag_news", 20, 5, None, 0)
    header_task = load_cfg_task(load_config(OWN, ["task.name=ag_tsv", "task.data_files=null",
                                                  f"task.dataset={with_header}", "task.text_column=text",
                                                  "task.label_column=label", *PER_CLASS]))
    headerless_task = load_cfg_task(load_config(OWN, ["task.name=ag_tsv", "task.data_files=null",
                                                      f"task.dataset={without}", HEADERLESS,
                                                      "task.text_column=[title, description]", "task.label_column=label",
                                                      "task.first_label_id=1", *PER_CLASS]))
    for task in (header_task, headerless_task):
        assert task.train_texts == preset.train_texts and task.test_texts == preset.test_texts
        assert np.array_equal(task.test_labels, preset.test_labels)


# ----------------------------------------------------------------------------------------------
# a train file only: test examples carved from it


def test_test_examples_carved_from_train(ag_csv):
    base = (HEADERLESS, f"task.classes_file={ag_csv / 'classes.txt'}", "task.first_label_id=1")
    with pytest.raises(DataError, match=r"task\.test_split is 'test', but local files .* has no such split \(it has: "
                                        r"train\).*carve test examples from it with task\.test_from_train"):
        load_cfg_task(ag_cfg(ag_csv, *base, splits=("train",)))
    train_rows = [f"{r[2]}".strip() for r in csv.reader(open(ag_csv / "train.csv", encoding="utf-8"))]
    tasks = {}
    for setting in ("0.1", "150"):
        for seed in (0, 1):
            cfg = ag_cfg(ag_csv, *base, f"task.test_from_train={setting}", "task.test_per_class=null",
                         f"task.sample_seed={seed}", splits=("train",))
            tasks[setting, seed] = load_cfg_task(cfg)
    share, count = tasks["0.1", 0], tasks["150", 0]
    assert np.bincount(share.test_labels).tolist() == [200] * 4, "a tenth of each class's 2,000"
    assert np.bincount(count.test_labels).tolist() == [150] * 4
    assert share.test_carved == {"test_from_train": 0.1, "per_class": [200] * 4, "seed": 0}
    for task in (share, count):
        assert set(task.test_texts) <= set(train_rows), "carved from the train file"
        assert not set(task.test_texts) & (set(task.train_texts) | set(task.val_texts)), "disjoint"
        assert np.bincount(task.train_labels).tolist() == [20] * 4 and np.bincount(task.val_labels).tolist() == [5] * 4
    assert tasks["0.1", 1].test_texts != share.test_texts, "drawn with task.sample_seed"
    again = load_cfg_task(ag_cfg(ag_csv, *base, "task.test_from_train=0.1", "task.test_per_class=null",
                                 "task.train_per_class=40", splits=("train",)))
    assert again.test_texts == share.test_texts, "the test set does not move with train_per_class"
    cfg = ag_cfg(ag_csv, *base, "task.test_from_train=0.1", splits=("train",))
    task = load_cfg_task(cfg)
    assert np.bincount(task.test_labels).tolist() == [10] * 4, "test_per_class samples the carved examples"
    sources = data_sources(task, task_and_corpus(cfg)[1])
    assert sources["test_carved_from_train"]["per_class"] == [200] * 4 and sources["data_labels"] == [1, 2, 3, 4]
    words = " ".join(_classes_lines({**sources, "test_examples": len(task.test_texts)}))
    assert "Labels in the data: 1 is class 0, 2 is class 1, 3 is class 2, 4 is class 3." in words
    assert ("The data has no test split: 800 examples of its train split were carved off as test examples (a share "
            "of 0.1 of each class: 200 examples of every class), stratified, drawn with task.sample_seed 0") in words
    with pytest.raises(DataError, match=r"class 0 \(World\) has 2000 examples; task\.test_from_train=2000 would carve "
                                        r"2000 as test examples and leave none"):
        load_cfg_task(ag_cfg(ag_csv, *base, "task.test_from_train=2000", splits=("train",)))
    with pytest.raises(DataError, match=r"task\.test_from_train=0\.0001 carves 0 of the 2000 examples of class 0"):
        load_cfg_task(ag_cfg(ag_csv, *base, "task.test_from_train=0.0001", splits=("train",)))
    with pytest.raises(ConfigError, match="give task.test_split .* or task.test_from_train"):
        ag_cfg(ag_csv, "task.test_from_train=0.1", "task.test_split=heldout")
    saved = to_yaml(ag_cfg(ag_csv, "task.test_from_train=0.1"))  # the run directory's config.yaml, read back
    assert validate_dict(yaml.safe_load(saved)).task.test_from_train == 0.1
    with pytest.raises(ConfigError, match=r"task\.test_from_train: got 1\.5; give a number of test examples per class"):
        ag_cfg(ag_csv, "task.test_from_train=1.5")


def test_predict_reads_a_headerless_one_based_input(ag_csv, data_root):
    cfg = ag_cfg(ag_csv, HEADERLESS, f"task.classes_file={ag_csv / 'classes.txt'}", "task.first_label_id=1")
    texts, labels = predict_inputs(ag_csv / "test.csv", cfg.task)
    rows = ag_news_rows(data_root, "test")
    assert texts == [r["text"].strip() for r in rows] and labels == [r["label"] + 1 for r in rows]
    assert label_ids_for(labels, AG_NAMES, "test.csv", cfg.task).tolist() == [r["label"] for r in rows]
    mapped = ag_cfg(ag_csv, HEADERLESS, "task.label_names={1: World, 2: Sports, 3: Business, 4: Sci/Tech}")
    assert label_ids_for([4, 1], AG_NAMES, "x", mapped.task).tolist() == [3, 0]
    with pytest.raises(DataError, match=r"x row 0: label 0 is not one of the run's 4 classes"):
        label_ids_for([0], AG_NAMES, "x", cfg.task)


# ----------------------------------------------------------------------------------------------
# Wikipedia as WikiExtractor writes it, and plain text


def wiki_articles(data_root: Path, n: int = ARTICLES) -> list[dict]:
    return pq.read_table(data_root / "wikipedia" / "train-00000-of-00005.parquet").to_pylist()[:n]


def doc_block(article: dict, body: str | None = None) -> str:
    """One article as WikiExtractor writes it: the <doc> line, the title again, a blank line, the text."""
    text = article["text"] if body is None else body
    return (f'<doc id="{article["id"]}" url="{article["url"]}" title="{article["title"]}">\n{article["title"]}\n\n'
            f"{text}\n</doc>\n")


@pytest.fixture(scope="module")
def wikiextractor(data_root, tmp_path_factory) -> dict:
    """The same articles as WikiExtractor's three outputs: text/ (<doc> blocks, files AA/wiki_00, AA/wiki_01,
    AB/wiki_00 of 10 articles), compressed/ (the same, .bz2) and json/ (--json), plus a title-only article
    (WikiExtractor writes such) that is no document."""
    articles = wiki_articles(data_root)
    root = tmp_path_factory.mktemp("wikiextractor")
    names = ["AA/wiki_00", "AA/wiki_01", "AB/wiki_00"]
    for i, name in enumerate(names):
        chunk = articles[10 * i:10 * i + 10]
        blocks = "".join(doc_block(a) for a in chunk)
        if i == 1:
            blocks += doc_block({"id": "1", "url": "u", "title": "Stub"}, body="")
        lines = "".join(json.dumps({"id": a["id"], "revid": "0", "url": a["url"], "title": a["title"],
                                    "text": a["text"]}) + "\n" for a in chunk)
        for form, content in (("text", blocks.encode()), ("compressed", bz2.compress(blocks.encode())),
                              ("json", lines.encode())):
            path = root / form / (name + (".bz2" if form == "compressed" else ""))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return {"root": root, "texts": [a["text"] for a in articles], "articles": articles}


def corpus_of(dataset: Path, *overrides: str) -> wdata.CorpusSpec:
    return task_and_corpus(load_config(OWN, [f"pretrain.corpus.dataset={dataset}", *overrides]))[1]


@pytest.mark.parametrize("form", ["text", "compressed", "json"])
def test_wikiextractor_folders_give_the_articles(wikiextractor, form):
    corpus = corpus_of(wikiextractor["root"] / form)
    assert corpus.source.describe().endswith("(3 text files)")
    assert wdata.corpus_documents(corpus) == wikiextractor["texts"], "each article's text, title line dropped"
    first = wdata.pretraining_documents(corpus, 10, order_seed=0)
    assert first == [wikiextractor["texts"][i] for i in np.random.default_rng(0).permutation(ARTICLES)[:10]]
    single = corpus_of(wikiextractor["root"] / form / "AB" / ("wiki_00" + (".bz2" if form == "compressed" else "")))
    assert wdata.corpus_documents(single) == wikiextractor["texts"][20:]


def test_damaged_wikiextractor_files_name_file_and_line(wikiextractor, tmp_path):
    article = wikiextractor["articles"][0]
    cut = tmp_path / "cut" / "AA"
    cut.mkdir(parents=True)
    whole = doc_block(article) + doc_block(wikiextractor["articles"][1])
    (cut / "wiki_00").write_text(whole[: len(whole) - 200], encoding="utf-8")
    first_lines = doc_block(article).count("\n")
    with pytest.raises(DataError, match=rf"wiki_00 line {first_lines + 1}: <doc> is never closed by </doc>"):
        wdata.corpus_documents(corpus_of(tmp_path / "cut"))
    (cut / "wiki_00").write_text(doc_block(article) + "stray text\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"wiki_00 line {first_lines + 1}: text outside a <doc \.\.\.> \.\.\. </doc> "
                                        r"block"):
        wdata.corpus_documents(corpus_of(tmp_path / "cut"))
    (cut / "wiki_00").write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"wiki_00 line 2 is not a JSON object"):
        wdata.corpus_documents(corpus_of(tmp_path / "cut"))
    (cut / "wiki_00.bz2").write_bytes(b"BZh91AY&SY not bz2")
    (cut / "wiki_00").unlink()
    with pytest.raises(DataError, match=r"wiki_00\.bz2 is not a readable bz2 file"):
        wdata.corpus_documents(corpus_of(tmp_path / "cut"))


def test_plain_text_per_line_per_block_and_per_file(wikiextractor, tmp_path):
    texts = wikiextractor["texts"]
    one_a_line = [" ".join(t.split("\n\n")) for t in texts]
    (tmp_path / "lines.txt").write_text("\n".join(one_a_line) + "\n", encoding="utf-8")
    # BERT's pre-training text layout: one paragraph (or sentence) a line, a blank line between documents
    paragraphs = ["\n".join(t.split("\n\n")) for t in texts]
    (tmp_path / "blocks.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    assert wdata.corpus_documents(corpus_of(tmp_path / "lines.txt", "pretrain.corpus.documents=per_line")) == one_a_line
    assert wdata.corpus_documents(corpus_of(tmp_path / "blocks.txt", "pretrain.corpus.documents=per_block")) == paragraphs
    whole = corpus_of(tmp_path / "lines.txt")
    assert wdata.corpus_documents(whole) == ["\n".join(one_a_line) + "\n"], "per_file: the file is one document"
    with pytest.raises(DataError, match=r"pretrain\.articles=40 but the corpus text file .*lines\.txt holds 1 documents "
                                        r"\(a text file is one document unless pretrain\.corpus\.documents is per_line "
                                        r"or per_block\)"):
        wdata.pretraining_documents(whole, 40, order_seed=0)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(paragraphs[:10]), encoding="utf-8")
    (folder / "b.txt").write_text("\n\n".join(paragraphs[10:]), encoding="utf-8")
    assert wdata.corpus_documents(corpus_of(folder, "pretrain.corpus.documents=per_block")) == paragraphs
    json_first = tmp_path / "json_first"
    json_first.mkdir()
    (json_first / "a.txt").write_text('{"kind": "a line of JSON"}\n' + texts[0], encoding="utf-8")
    assert wdata.corpus_documents(corpus_of(json_first)) == ['{"kind": "a line of JSON"}\n' + texts[0]], \
        "a .txt document that opens with JSON stays one document (JSON lines are WikiExtractor's extension-less files)"
    pq_file = REPO / "docs" / "examples" / "relations" / "train.csv"
    with pytest.raises(DataError, match=r"pretrain\.corpus\.documents=per_line divides text files into documents, but "
                                        r"local files .* holds one document per row"):
        corpus_of(pq_file, "pretrain.corpus.documents=per_line", "pretrain.corpus.text_column=sentence")


# ----------------------------------------------------------------------------------------------
# the worked examples of docs/own_data.md ("Data as it is distributed") read as they say


def distributed_section() -> str:
    text = (REPO / "docs" / "own_data.md").read_text()
    return text.split("## Data as it is distributed", 1)[1].split("\n## ", 1)[0]


def test_docs_worked_examples_validate(ag_csv, wikiextractor, data_root, tmp_path, monkeypatch):
    """Each YAML example of the section, merged into the own-data config, reads the files laid out as the section
    shows them (written here from the real data)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").symlink_to(REPO / "docs")  # the own-data config's own files, for the parts not replaced
    (tmp_path / "ag_news_csv").symlink_to(ag_csv)
    glue_style = tmp_path / "glue_style"  # GLUE's layout (a header row, tabs), holding AG News rows
    glue_style.mkdir()
    for split, name in (("train", "train.tsv"), ("test", "dev.tsv")):
        rows = ag_news_rows(data_root, split)
        (glue_style / name).write_text("sentence\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows),
                                       encoding="utf-8")
    (tmp_path / "wiki").mkdir()
    for form in ("text", "compressed", "json"):
        (tmp_path / "wiki" / form).symlink_to(wikiextractor["root"] / form)
    (tmp_path / "corpus").mkdir()
    blocks = "\n\n".join("\n".join(t.split("\n\n")) for t in wikiextractor["texts"])
    (tmp_path / "corpus" / "bert_format.txt").write_text(blocks + "\n", encoding="utf-8")
    lines = "\n".join(" ".join(t.split()) for t in wikiextractor["texts"])
    (tmp_path / "corpus" / "lines.txt").write_text(lines + "\n", encoding="utf-8")
    examples = re.findall(r"```yaml\n(.*?)```", distributed_section(), re.S)
    assert len(examples) >= 6, "a worked example for every form"
    base = load_raw(OWN)
    for example in examples:
        fragment = yaml.safe_load(example)
        raw = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in _flat(fragment).items()])
        raw["pretrain"]["articles"] = ARTICLES
        raw["task"].update({"train_per_class": 20, "val_per_class": 5})
        cfg = validate_dict(raw, source=example.splitlines()[0])
        check_data(cfg)


def _flat(mapping: dict, prefix: str = "") -> dict:
    """{"task.data_files": {...}} for a YAML fragment: sections opened, values (mappings of files too) kept."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and key in ("task", "pretrain", "corpus"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------
# config loading bounded before any work


def test_config_limits_are_named(tmp_path):
    base = load_raw(OWN)
    assert validate_dict({**base, "name": "a" * MAX_RUN_NAME_LENGTH}).name == "a" * MAX_RUN_NAME_LENGTH
    with pytest.raises(ConfigError, match=rf"run name 'aaaa.*\.\.\. is {MAX_RUN_NAME_LENGTH + 1} characters long; a run "
                                          rf"name has at most {MAX_RUN_NAME_LENGTH}"):
        validate_dict({**base, "name": "a" * (MAX_RUN_NAME_LENGTH + 1)})
    assert MAX_RUN_NAME_LENGTH + len("..replaced-00000000") == 255, "room to set an overwritten run aside"
    sweep = load_raw(REPO / "configs" / "sweep_smoke.yaml")
    sweep_file = tmp_path / "sweep.yaml"
    for length, accepted in ((MAX_SWEEP_NAME_LENGTH, True), (MAX_SWEEP_NAME_LENGTH + 1, False)):
        sweep_file.write_text(yaml.safe_dump({**sweep, "name": "s" * length}))
        if accepted:
            assert len(validate_dict({**base, "name": load_sweep_config(sweep_file).experiment.name + "-best"}).name) \
                == MAX_RUN_NAME_LENGTH, "the best point's name is a valid run name"
        else:
            with pytest.raises(ConfigError, match=rf"a sweep's name has at most {MAX_SWEEP_NAME_LENGTH}, since its best "
                                                  r"point is written as a run named <name>-best"):
                load_sweep_config(sweep_file)
    with pytest.raises(ConfigError, match=rf"a value nested more than {MAX_NESTING_DEPTH} levels deep"):
        apply_overrides(base, ["task.label_names=" + "[" * 100_000 + "]" * 100_000])
    with pytest.raises(ConfigError, match=r"override key 'a\.a\.a.* has 1,000 parts|has 1000 parts"):
        apply_overrides(base, [".".join(["a"] * 1000) + "=1"])


def test_cli_refuses_oversized_input_with_exit_2(tmp_path):
    """What used to end in a traceback (or took seconds) is exit 2 naming the limit, before any work."""
    proc = run_cli("run", OWN, f"name={'a' * 300}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and f"a run name has at most {MAX_RUN_NAME_LENGTH}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "Ray" not in proc.stderr, "refused before Ray starts"
    assert not (tmp_path / "runs").exists(), "refused before a run directory is made"
    nested = tmp_path / "nested.yaml"
    nested.write_text("name: nested\nseed: " + "[" * 100_000 + "]" * 100_000 + "\n")
    big = tmp_path / "big.yaml"
    big.write_text("name: " + "a" * 10_000_000 + "\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    for path, message in ((nested, f"line 2: a value nested more than {MAX_NESTING_DEPTH} levels deep"),
                          (big, f"big.yaml is 10,000,007 bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes"),
                          (latin1, "latin1.yaml is not UTF-8 text (byte 9")):
        proc = run_cli("validate", path, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


# ----------------------------------------------------------------------------------------------
# end to end: a run on AG News as distributed (train file only) and Wikipedia as WikiExtractor wrote it


@pytest.mark.slow  # about two minutes on 2 busy CPU cores: two CLI processes, Ray, pre-training, fine-tuning
def test_run_and_predict_on_data_as_distributed(ag_csv, wikiextractor, tmp_path):
    """`committee run` reads the headerless 1-based train file with its classes.txt, carves the test examples,
    pre-trains on the .bz2 WikiExtractor folder, and records all of it in the report; `committee predict` reads
    the headerless 1-based test file as the task does."""
    raw = load_raw(OWN)
    raw["name"] = "as_distributed"
    raw["task"] = {"name": "ag_news_csv", "data_files": {"train": str(ag_csv / "train.csv")},
                   "column_names": ["label", "title", "description"], "text_column": ["title", "description"],
                   "label_column": "label", "classes_file": str(ag_csv / "classes.txt"), "first_label_id": 1,
                   "test_from_train": 0.05, "train_per_class": 20, "val_per_class": 5, "test_per_class": 25,
                   "max_length": 64}
    raw["pretrain"].update({"corpus": {"dataset": str(wikiextractor["root"] / "compressed")}, "articles": ARTICLES,
                            "max_steps": 10})
    raw["finetune"]["epochs"] = 2
    raw["deep"]["enabled"] = False
    raw["committee"]["scratch"] = False
    config = tmp_path / "as_distributed.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = run_cli("run", config, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "as_distributed"
    corpus = json.loads((run_dir / "report.json").read_text())["corpus"]
    assert corpus["label_names"] == AG_NAMES and corpus["data_labels"] == [1, 2, 3, 4]
    assert corpus["test_carved_from_train"] == {"test_from_train": 0.05, "per_class": [100] * 4, "seed": 0}
    assert corpus["test_examples"] == 100 and corpus["articles"] == ARTICLES
    assert "(3 text files)" in corpus["corpus_source"]
    markdown = (run_dir / "report.md").read_text()
    assert "Labels in the data: 1 is class 0, 2 is class 1" in markdown
    assert "The data has no test split: 400 examples of its train split were carved off as test examples (a share " \
           "of 0.05 of each class: 100 examples of every class)" in markdown
    some_test_rows = tmp_path / "test_rows.csv"  # the first 200 rows of the headerless, 1-based test file
    some_test_rows.write_text("".join((ag_csv / "test.csv").read_text(encoding="utf-8").splitlines(True)[:200]))
    predicted = run_cli("predict", run_dir, some_test_rows, "--out", tmp_path / "predictions.jsonl",
                        cwd=tmp_path, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert re.search(r"committee accuracy \(soft vote\) on 200 labelled examples of .*test_rows\.csv: [01]\.\d+",
                     predicted.stderr)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 200 and {r["label_name"] for r in records} <= set(AG_NAMES)
