"""Write the worked example of docs/own_data.md from the real data root (run once; the files are kept).

  relations/train.csv, relations/test.csv   a relation-classification task: two text columns (entities,
                                            sentence) and string labels (relation), from FewRel's
                                            validation relations (60 train and 25 test rows per relation)
  corpus/NNN-<title>.txt, corpus/ATTRIBUTION.tsv
                                            40 Wikipedia articles, one per .txt file

    python docs/examples/make_examples.py [DATA_ROOT]
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
RELATIONS = ("P177", "P59", "P412", "P364")  # crosses, constellation, voice type, original language of film or TV show
TRAIN_ROWS, TEST_ROWS = 60, 25  # per relation
ARTICLES = 40
ARTICLE_CHARS = (1500, 5000)  # short articles keep the example small


def write_relations(root: Path) -> None:
    data = json.loads((root / "few_rel" / "val_wiki.json").read_text(encoding="utf-8"))
    names = json.loads((root / "few_rel" / "pid2name.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(0)
    rows = {"train": [], "test": []}
    for relation in RELATIONS:
        picked = rng.choice(len(data[relation]), size=TRAIN_ROWS + TEST_ROWS, replace=False)
        for n, i in enumerate(picked):
            example = data[relation][i]
            rows["train" if n < TRAIN_ROWS else "test"].append({
                "entities": f"{example['h'][0]} / {example['t'][0]}",
                "sentence": " ".join(example["tokens"]),
                "relation": names[relation][0],
            })
    (HERE / "relations").mkdir(exist_ok=True)
    for split, split_rows in rows.items():
        order = rng.permutation(len(split_rows))
        with open(HERE / "relations" / f"{split}.csv", "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=["entities", "sentence", "relation"])
            writer.writeheader()
            writer.writerows(split_rows[i] for i in order)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]


def write_corpus(root: Path) -> None:
    articles = pq.read_table(root / "wikipedia" / "train-00000-of-00005.parquet").to_pylist()
    short = [a for a in articles if ARTICLE_CHARS[0] <= len(a["text"]) <= ARTICLE_CHARS[1]]
    chosen = [short[i] for i in sorted(np.random.default_rng(0).choice(len(short), size=ARTICLES, replace=False))]
    folder = HERE / "corpus"
    folder.mkdir(exist_ok=True)
    lines = ["file\tcurid\ttitle\turl"]
    for n, article in enumerate(chosen):
        name = f"{n:03d}-{_slug(article['title'])}.txt"
        (folder / name).write_text(article["text"], encoding="utf-8")
        lines.append(f"{name}\t{article['id']}\t{article['title']}\t{article['url']}")
    (folder / "ATTRIBUTION.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    data_root = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data"
    write_relations(data_root)
    write_corpus(data_root)
