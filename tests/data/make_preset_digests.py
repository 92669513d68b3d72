"""Write tests/data/paper_presets.json: digests of what the data loaders gave for the paper presets.

The file pins the task splits and the Wikipedia article order the loaders produced before the tasks
and corpora became datasets (workers/data/loading.py of commit cafc95c), so tests/test_own_data.py can check
that the presets still give the same examples. It was written with that older loader:

    git show cafc95c:workers/data/loading.py > /tmp/old_data.py
    python tests/data/make_preset_digests.py /tmp/old_data.py

Write it again only when the data root itself changes on purpose (the file records each data file's
SHA-256, and the test skips on a data root whose files differ).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "paper_presets.json"
# (preset, train_per_class, val_per_class, test_per_class, sample_seed): the shipped configs' task sections
CASES = [("ag_news", 40, 10, 50, 0), ("ag_news", 250, 50, 250, 0), ("ag_news", 1000, 100, 1000, 0),
         ("dbpedia_14", 100, 20, 100, 0), ("few_rel", 560, 70, None, 0), ("dbpedia_14", 20, 5, None, 7)]
DATA_FILES = ["ag_news/train.parquet", "ag_news/test.parquet", "dbpedia_14/train.parquet",
              "dbpedia_14/test.parquet", "few_rel/val_wiki.json"] + \
             [f"wikipedia/train-{i:05d}-of-00005.parquet" for i in range(5)]


def digest(values) -> str:
    """SHA-256 (first 24 hex digits) of a list of texts or integer labels, as JSON."""
    return hashlib.sha256(json.dumps([v if isinstance(v, str) else int(v) for v in values]).encode()).hexdigest()[:24]


def split_digests(task) -> dict:
    """Digests of each split's texts and labels of a TaskSplits."""
    return {f"{split}_{kind}": digest(getattr(task, f"{split}_{kind}"))
            for split in ("train", "val", "test") for kind in ("texts", "labels")}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(loader_path: str) -> None:
    spec = importlib.util.spec_from_file_location("reference_data", loader_path)
    loader = importlib.util.module_from_spec(spec)
    sys.modules["reference_data"] = loader
    spec.loader.exec_module(loader)
    root = loader.resolve_data_root(None)
    tasks = [{"task": name, "train_per_class": tr, "val_per_class": va, "test_per_class": te, "sample_seed": seed,
              "num_classes": (splits := loader.load_task(root, name, tr, va, te, seed)).num_classes,
              **split_digests(splits)} for name, tr, va, te, seed in CASES]
    articles = loader.load_wikipedia_texts(root)
    corpus = {"order_seed": 0, "articles": len(articles),
              "ordered_texts": digest(loader.pretraining_articles(root, len(articles), 0))}
    OUT.write_text(json.dumps({"data_sha256": {rel: file_sha256(root / rel) for rel in DATA_FILES},
                               "tasks": tasks, "wikipedia": corpus}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
