"""Your own data: tasks and corpora by Hugging Face `datasets` means, the presets unchanged, and the
README's worked example (a CSV task with string labels and two text columns, a .txt-folder corpus)
run end to end on a real local Ray."""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import readme_commands, run_cli

from orchestrator.config.experiment import load_config
from orchestrator.run import prepare
from orchestrator.run.prepare import _arrays_key, load_cfg_task, task_and_corpus, tokenizer_key
from workers.data import loading as wdata
from workers.errors import DataError

REPO = Path(__file__).resolve().parents[1]
OWN = REPO / "configs" / "own_data.yaml"
EXAMPLES = REPO / "docs" / "examples"
RELATIONS = EXAMPLES / "relations"
CORPUS = EXAMPLES / "corpus"
PRESET_DIGESTS = json.loads((REPO / "tests" / "data" / "paper_presets.json").read_text())
sys.path.insert(0, str(REPO / "tests" / "data"))
from make_preset_digests import digest, split_digests  # noqa: E402


def csv_rows(split: str) -> list[dict]:
    with open(RELATIONS / f"{split}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def own_cfg(*overrides: str):
    return load_config(OWN, list(overrides))


def own_task(*overrides: str) -> wdata.TaskSplits:
    return load_cfg_task(own_cfg(*overrides))


# ----------------------------------------------------------------------------------------------
# a task from local files


def test_csv_task_with_string_labels_and_two_text_columns():
    task = own_task()
    rows = {"train": csv_rows("train"), "test": csv_rows("test")}
    names = sorted({r["relation"] for r in rows["train"]})
    assert task.label_names == tuple(names) and task.num_classes == 4
    assert "sorted" in task.label_order
    joined = {split: {f"{r['entities']} {r['sentence']}": names.index(r["relation"]) for r in split_rows}
              for split, split_rows in rows.items()}
    for texts, labels, split in ((task.train_texts, task.train_labels, "train"),
                                 (task.val_texts, task.val_labels, "train"),
                                 (task.test_texts, task.test_labels, "test")):
        assert [joined[split][t] for t in texts] == labels.tolist(), "each text keeps its own label"
    assert np.bincount(task.train_labels).tolist() == [40] * 4 and np.bincount(task.val_labels).tolist() == [10] * 4
    assert sorted(task.test_texts) == sorted(joined["test"]), "test_per_class null: every test row"
    assert not set(task.train_texts) & set(task.val_texts)


def test_label_names_set_the_ids():
    order = ["voice type", "original language of film or TV show", "crosses", "constellation"]
    task = own_task(f"task.label_names={json.dumps(order)}")
    assert task.label_names == tuple(order)
    by_text = {f"{r['entities']} {r['sentence']}": r["relation"] for r in csv_rows("test")}
    assert [order[i] for i in task.test_labels] == [by_text[t] for t in task.test_texts]


def _write_formats(rows_by_split: dict, folder: Path) -> dict[str, dict]:
    """The example task as jsonl, json, parquet and a folder of split files: data_files per format."""
    folder.mkdir(parents=True)
    files = {}
    for split, rows in rows_by_split.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (folder / f"{split}.json").write_text(json.dumps(rows), encoding="utf-8")
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")
    for fmt in ("jsonl", "json", "parquet"):
        files[fmt] = {split: str(folder / f"{split}.{fmt}") for split in rows_by_split}
    return files


def test_every_local_format_gives_the_same_task(tmp_path):
    reference = own_task()
    rows = {split: csv_rows(split) for split in ("train", "test")}
    for fmt, data_files in _write_formats(rows, tmp_path / "formats").items():
        task = own_task(f"task.data_files={json.dumps(data_files)}")
        assert task.train_texts == reference.train_texts and task.test_texts == reference.test_texts, fmt
        assert task.label_names == reference.label_names
        assert np.array_equal(task.train_labels, reference.train_labels), fmt
    split_folder = tmp_path / "split_folder"
    split_folder.mkdir()
    for split in ("train", "test"):
        shutil.copy(RELATIONS / f"{split}.csv", split_folder / f"{split}.csv")
    folder_task = own_task("task.data_files=null", f"task.dataset={split_folder}")
    assert folder_task.train_texts == reference.train_texts


def test_integer_labels_are_class_ids(tmp_path):
    names = sorted({r["relation"] for r in csv_rows("train")})
    rows = {split: [{**r, "relation": names.index(r["relation"])} for r in csv_rows(split)] for split in ("train", "test")}
    data_files = _write_formats(rows, tmp_path / "ids")["parquet"]
    task = own_task(f"task.data_files={json.dumps(data_files)}")
    reference = own_task()
    assert task.label_names == ("0", "1", "2", "3") and "integer" in task.label_order
    assert task.train_texts == reference.train_texts and np.array_equal(task.test_labels, reference.test_labels)
    rows["test"][5]["relation"] = 4
    pq.write_table(pa.Table.from_pylist(rows["test"]), data_files["test"])
    with pytest.raises(DataError, match=r"test\.parquet row 5: label 4 is outside 0\.\.3"):
        own_task(f"task.data_files={json.dumps(data_files)}")


def test_save_to_disk_dataset_and_its_class_label_order(tmp_path):
    import datasets

    names = ["voice type", "crosses", "constellation", "original language of film or TV show"]  # not sorted
    features = datasets.Features({"entities": datasets.Value("string"), "sentence": datasets.Value("string"),
                                  "relation": datasets.ClassLabel(names=names)})
    splits = {split: datasets.Dataset.from_list([{**r, "relation": names.index(r["relation"])} for r in csv_rows(split)],
                                                features=features) for split in ("train", "test")}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    task = own_task("task.data_files=null", f"task.dataset={tmp_path / 'saved'}")
    assert task.label_names == tuple(names) and "ClassLabel" in task.label_order
    by_text = {f"{r['entities']} {r['sentence']}": r["relation"] for r in csv_rows("test")}
    assert [names[i] for i in task.test_labels] == [by_text[t] for t in task.test_texts]


def test_validation_split_of_its_own(tmp_path):
    rows = csv_rows("test")
    held_out = tmp_path / "validation.csv"
    with open(held_out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    files = {"train": str(RELATIONS / "train.csv"), "test": str(RELATIONS / "test.csv"), "validation": str(held_out)}
    task = own_task(f"task.data_files={json.dumps(files)}", "task.validation_split=validation",
                    "task.train_per_class=60")
    test_texts = {f"{r['entities']} {r['sentence']}" for r in rows}
    assert set(task.val_texts) <= test_texts and np.bincount(task.val_labels).tolist() == [10] * 4
    assert np.bincount(task.train_labels).tolist() == [60] * 4, "all 60 train rows per class: none carved off"


# ----------------------------------------------------------------------------------------------
# bad input: exit 2 before any training, naming the file, row, column or class


def _broken_copy(tmp_path, edit) -> Path:
    """The example's train.csv with `edit(rows)` applied, next to an unchanged test.csv."""
    rows = csv_rows("train")
    fieldnames = edit(rows) or list(rows[0])
    folder = tmp_path / "broken"
    folder.mkdir(exist_ok=True)
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(RELATIONS / "test.csv", folder / "test.csv")
    return folder


def _load_folder(folder: Path, *overrides: str):
    return own_task("task.data_files=null", f"task.dataset={folder}", *overrides)


def test_missing_column_names_the_columns_that_exist():
    with pytest.raises(DataError, match=r"train\.csv is missing column\(s\) topic \(has: entities, sentence, relation\)"):
        own_task("task.label_column=topic")


def test_labels_that_are_neither_integers_nor_strings(tmp_path):
    def floats(rows):
        for i, row in enumerate(rows):
            row["relation"] = f"{i % 4}.5"
    with pytest.raises(DataError, match=r"train\.csv row 0 column 'relation': labels must be integers .* found float 0\.5"):
        _load_folder(_broken_copy(tmp_path, floats))
    rows = [{"text": "a", "label": [1]}, {"text": "b", "label": [2]}]
    bad = tmp_path / "lists"
    bad.mkdir()
    for split in ("train", "test"):
        (bad / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"train\.jsonl row 0 column 'label': labels must be integers .* found list"):
        own_task("task.data_files=null", f"task.dataset={bad}", "task.text_column=text", "task.label_column=label")


def test_class_with_too_few_examples_names_class_and_count():
    with pytest.raises(DataError, match=r"relations train split \(.*train\.csv\): class 0 \(constellation\) has 60 "
                                        r"examples, fewer than the 70 asked for"):
        own_task("task.train_per_class=60")


def test_empty_text_and_unknown_test_label_name_their_row(tmp_path):
    def blank(rows):
        rows[7]["entities"] = rows[7]["sentence"] = " "
    with pytest.raises(DataError, match=r"train\.csv row 7: empty text \(column\(s\) entities, sentence\)"):
        _load_folder(_broken_copy(tmp_path, blank))
    test_rows = csv_rows("test")
    test_rows[3]["relation"] = "sibling"
    folder = tmp_path / "unknown"
    folder.mkdir()
    shutil.copy(RELATIONS / "train.csv", folder / "train.csv")
    with open(folder / "test.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(test_rows[0]))
        writer.writeheader()
        writer.writerows(test_rows)
    with pytest.raises(DataError, match=r"test\.csv row 3 column 'relation': label 'sibling' is not one of the 4 classes"):
        _load_folder(folder)


def test_bad_task_config_and_missing_split():
    with pytest.raises(DataError, match=r"task.test_split is 'tst', but .* has no such split \(it has: train, test\)"):
        own_task("task.test_split=tst")
    with pytest.raises(DataError, match=r"task.data_files.train: .*nowhere\.csv is not a file"):
        own_task("task.data_files.train=docs/examples/relations/nowhere.csv")


def test_cli_exits_2_on_bad_data_before_any_training(tmp_path):
    proc = run_cli("validate", OWN, "task.label_column=topic", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "missing column(s) topic (has: entities, sentence, relation)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    empty = tmp_path / "empty_corpus"
    empty.mkdir()
    proc = run_cli("run", OWN, f"pretrain.corpus.dataset={empty}", "--run-dir", tmp_path / "run", timeout=120)
    assert proc.returncode == 2 and "holds no .txt files" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists(), "nothing is created before the data is checked"


# ----------------------------------------------------------------------------------------------
# hub ids: read from the local cache offline


def _hub_cache(cache: Path, hub_id: str, data_dir: Path) -> None:
    """A `datasets` cache entry for `hub_id` laid out as an online `load_dataset(hub_id)` leaves it
    (<cache>/<owner>___<name>/default/0.0.0/<hash>/<name>-<split>.arrow + dataset_info.json), from the real
    parquet files of the data root."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    owner, name = hub_id.split("/")
    entry = cache / f"{owner}___{name}" / "default" / "0.0.0" / "0123456789abcdef"
    entry.mkdir(parents=True)
    splits = datasets.SplitDict(dataset_name=name)
    for split in ("train", "test"):
        table = pq.read_table(data_dir / f"{split}.parquet")
        features = datasets.Features.from_arrow_schema(table.schema)
        with ArrowWriter(features=features, path=str(entry / f"{name}-{split}.arrow")) as writer:
            writer.write_table(table)
            rows, size = writer.finalize()
        splits.add(datasets.SplitInfo(name=split, num_bytes=size, num_examples=rows, dataset_name=name))
    datasets.DatasetInfo(features=features, config_name="default", dataset_name=name,
                         splits=splits).write_to_directory(str(entry))


HUB_CHECK = """
import json, sys
import numpy as np
from orchestrator.config.experiment import load_config
from orchestrator.run.prepare import load_cfg_task
hub = load_cfg_task(load_config(sys.argv[1], ["task.name=ag_news_hub", "task.dataset=fancyzhx/ag_news",
                                              "task.label_names=[World, Sports, Business, Sci/Tech]"]))
preset = load_cfg_task(load_config(sys.argv[1]))
same = hub.train_texts == preset.train_texts and hub.test_texts == preset.test_texts and \\
    np.array_equal(hub.train_labels, preset.train_labels) and hub.label_names == preset.label_names
print(json.dumps({"same": same, "source": hub.source}))
"""


def test_hub_id_is_read_from_the_local_cache_offline(data_root, tmp_path):
    cache = tmp_path / "hf" / "datasets"
    _hub_cache(cache, "fancyzhx/ag_news", data_root / "ag_news")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", HUB_CHECK, str(REPO / "configs" / "smoke.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"same": True, "source": "hub dataset fancyzhx/ag_news"}
    missing = run_cli("validate", "configs/smoke.yaml", "task.name=absent", "task.dataset=fancyzhx/absent_set",
                      env={k: env[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_DATASETS_CACHE")},
                      timeout=180)
    assert missing.returncode == 2, missing.stderr
    assert "fancyzhx/absent_set is not in the local cache" in missing.stderr
    assert "datasets.load_dataset('fancyzhx/absent_set')" in missing.stderr and "Traceback" not in missing.stderr


# ----------------------------------------------------------------------------------------------
# corpora


def test_corpus_from_a_folder_of_txt_files():
    corpus = task_and_corpus(own_cfg())[1]
    files = sorted(CORPUS.glob("*.txt"))
    documents = wdata.corpus_documents(corpus)
    assert documents == [f.read_text(encoding="utf-8") for f in files], "one document per file, in path order"
    small = wdata.pretraining_documents(corpus, 10, order_seed=0)
    large = wdata.pretraining_documents(corpus, 30, order_seed=0)
    assert large[:10] == small and wdata.pretraining_documents(corpus, 10, order_seed=1) != small
    expected = [documents[i] for i in np.random.default_rng(0).permutation(len(files))[:10]]
    assert small == expected, "the same seeded order as the Wikipedia preset"
    with pytest.raises(DataError, match=r"pretrain.articles=41 but the corpus folder .*corpus \(40 .txt files\) "
                                        r"holds 40 documents"):
        wdata.pretraining_documents(corpus, 41, order_seed=0)


def test_corpus_from_a_file_with_a_text_column_and_bad_folders(tmp_path):
    texts = [f.read_text(encoding="utf-8") for f in sorted(CORPUS.glob("*.txt"))]
    pq.write_table(pa.table({"body": texts}), tmp_path / "docs.parquet")
    corpus = task_and_corpus(own_cfg(f"pretrain.corpus.dataset={tmp_path / 'docs.parquet'}",
                                     "pretrain.corpus.text_column=body"))[1]
    assert wdata.corpus_documents(corpus) == texts
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"pretrain.corpus.dataset: the folder .*empty holds no .txt files"):
        task_and_corpus(own_cfg(f"pretrain.corpus.dataset={empty}"))
    (empty / "a.txt").write_text("a document")
    (empty / "b.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"b\.txt: empty document"):
        wdata.corpus_documents(task_and_corpus(own_cfg(f"pretrain.corpus.dataset={empty}"))[1])


def test_cache_keys_follow_the_data_files(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(RELATIONS, folder)
    shutil.copytree(CORPUS, tmp_path / "corpus")
    cfg = own_cfg("task.data_files=null", f"task.dataset={folder}", f"pretrain.corpus.dataset={tmp_path / 'corpus'}")
    arrays_before = _arrays_key(cfg, None, "tok")
    tokenizer_before = tokenizer_key(None, 2000, 40, 0, task_and_corpus(cfg)[1])
    with open(folder / "test.csv", "a", encoding="utf-8") as f:
        f.write("x / y,one more test sentence,crosses\n")
    assert _arrays_key(cfg, None, "tok") != arrays_before
    assert tokenizer_key(None, 2000, 40, 0, task_and_corpus(cfg)[1]) == tokenizer_before
    (tmp_path / "corpus" / "zzz-extra.txt").write_text("another document")
    assert tokenizer_key(None, 2000, 40, 0, task_and_corpus(cfg)[1]) != tokenizer_before


# errors.py only defines the exception classes: their messages never reach a prepared array
NOT_SHAPING_DATA = {"workers/errors.py"}


def _workers_imports(rel: str) -> set[str]:
    """The workers/*.py files that `rel` imports anywhere in it (at the top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse((REPO / rel).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "workers":
            found |= {f"workers/{alias.name}.py" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workers."):
            found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Import):
            found |= {a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("workers.")}
    return {path for path in found if (REPO / path).is_file()}


def test_cache_key_code_covers_every_module_the_data_code_imports():
    """A module that prepared data depends on but the key's code list misses would let a code change reuse
    stale arrays: every workers module the listed ones import (transitively) must be listed too."""
    listed = set(prepare._SOURCES)
    reached, todo = set(), [rel for rel in listed if rel.startswith("workers/")]
    while todo:
        rel = todo.pop()
        for imported in _workers_imports(rel) - reached:
            reached.add(imported)
            todo.append(imported)
    assert "workers/data/task_examples.py" in reached and "workers/data/root.py" in reached
    assert reached - listed - NOT_SHAPING_DATA == set()


@pytest.mark.parametrize("module", ["workers/data/loading.py", "workers/data/root.py", "workers/data/cache.py",
                                    "workers/data/task_examples.py", "workers/data/few_rel.py", "workers/data/datasets.py",
                                    "workers/data/readers.py", "workers/text/tokenizer.py", "workers/text/wordpiece.py"])
def test_cache_keys_follow_the_data_code(tmp_path, monkeypatch, module):
    """Editing any module the prepared data comes from changes the tokenizer and the arrays keys."""
    for rel in prepare._SOURCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    monkeypatch.setattr(prepare, "_REPO", tmp_path)  # the key reads the sources from this copy
    cfg = own_cfg()
    corpus = task_and_corpus(cfg)[1]
    before = tokenizer_key(None, 2000, 40, 0, corpus), _arrays_key(cfg, None, "tok")
    assert before == (tokenizer_key(None, 2000, 40, 0, corpus), _arrays_key(cfg, None, "tok"))
    with open(tmp_path / module, "a", encoding="utf-8") as f:
        f.write("\n# an edit\n")
    after = tokenizer_key(None, 2000, 40, 0, corpus), _arrays_key(cfg, None, "tok")
    assert after[0] != before[0] and after[1] != before[1]


# ----------------------------------------------------------------------------------------------
# the presets give what they gave before the tasks and corpora became datasets


def _data_root_matches(data_root: Path) -> bool:
    return all((data_root / rel).is_file()
               and hashlib.sha256((data_root / rel).read_bytes()).hexdigest() == sha
               for rel, sha in PRESET_DIGESTS["data_sha256"].items())


@pytest.fixture(scope="module")
def pinned_root(data_root):
    if not _data_root_matches(data_root):
        pytest.skip("the data root's files differ from those tests/data/paper_presets.json was made from")
    return data_root


@pytest.mark.parametrize("case", PRESET_DIGESTS["tasks"], ids=lambda c: f"{c['task']}-{c['train_per_class']}")
def test_presets_give_the_same_splits_as_before(pinned_root, case):
    task = wdata.load_task(pinned_root, case["task"], case["train_per_class"], case["val_per_class"],
                           case["test_per_class"], case["sample_seed"])
    assert task.num_classes == case["num_classes"]
    assert split_digests(task) == {k: case[k] for k in split_digests(task)}


def test_wikipedia_preset_gives_the_same_article_order(pinned_root):
    pinned = PRESET_DIGESTS["wikipedia"]
    articles = wdata.pretraining_articles(pinned_root, pinned["articles"], pinned["order_seed"])
    assert len(articles) == pinned["articles"] and digest(articles) == pinned["ordered_texts"]


@pytest.mark.parametrize("name", ["smoke", "quickstart", "paper_agnews", "paper_dbpedia", "paper_fewrel"])
def test_shipped_configs_read_their_presets(pinned_root, name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml", [f"data.root={pinned_root}"])
    task, corpus = task_and_corpus(cfg)
    assert task == wdata.preset_task(pinned_root, cfg.task.name) and corpus.wikipedia_root == pinned_root
    t = cfg.task
    pinned = [c for c in PRESET_DIGESTS["tasks"] if (c["task"], c["train_per_class"], c["val_per_class"],
              c["test_per_class"], c["sample_seed"]) == (t.name, t.train_per_class, t.val_per_class,
                                                         t.test_per_class, t.sample_seed)]
    if pinned:
        assert split_digests(load_cfg_task(cfg)) == {k: pinned[0][k] for k in split_digests(load_cfg_task(cfg))}


# ----------------------------------------------------------------------------------------------
# the README's worked example, end to end on a real local Ray (shared with test_predict, test_events)

def test_readme_example_runs_end_to_end(own_data_run):
    commands = readme_commands()
    assert [c.split()[1] for c in commands if c.startswith("committee ")] == ["validate", "run", "predict"]
    assert "tensorboard --logdir runs/" in commands
    assert (REPO / ".venv" / "bin" / "tensorboard").exists() or shutil.which("tensorboard")
    run_dir = own_data_run["run_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    names = sorted({r["relation"] for r in csv_rows("train")})
    assert report["task"] == "relations" and report["corpus"]["label_names"] == names
    assert report["corpus"]["articles"] == 40 and "docs/examples/corpus" in report["corpus"]["corpus_source"]
    assert report["corpus"]["test_examples"] == len(csv_rows("test"))
    markdown = (run_dir / "report.md").read_text()
    assert "0 constellation, 1 crosses" in markdown and "documents of the seeded order of folder" in markdown
    assert {m["name"] for m in report["members"]} == {"member-00", "member-01", "scratch-00", "scratch-01"}
