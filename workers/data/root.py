"""The paper's data root: where it lies, which preset files it holds, and what to do when one is missing.

A data root holds the paper's tasks and corpus in the hub's schemas (see ../shared/data/README.md):
  wikipedia/train-*.parquet            id, url, title, text          the corpus preset (column text)
  ag_news/{train,test}.parquet         text, label (4 classes)       task preset ag_news
  dbpedia_14/{train,test}.parquet      label, title, content (14)    task preset dbpedia_14 (title + content)
  few_rel/val_wiki.json                {relation: [{tokens, h, t}]}  task preset few_rel (16 relations)
  few_rel/train_wiki.json              the same schema                task preset few_rel_64 (64 relations;
                                                                      `committee data pull` writes it)
This module only finds the files (it reads none); workers/data/loading.py turns them into task and corpus specs.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.errors import DataError

DATA_ENV = "COMMITTEE_DATA"
PULL_HINT = "set COMMITTEE_DATA or data.root to a data root, or run `committee data pull --root DIR` online"
REFETCH_HINT = ("check the data root with `sha256sum -c SHA256SUMS` (where it has one) and copy or pull the file "
                "again (`committee data pull --root DIR`)")

TASK_CLASSES = {"ag_news": 4, "dbpedia_14": 14, "few_rel": 16, "few_rel_64": 64}
TASK_FILES = {
    "ag_news": ("ag_news/train.parquet", "ag_news/test.parquet"),
    "dbpedia_14": ("dbpedia_14/train.parquet", "dbpedia_14/test.parquet"),
    "few_rel": ("few_rel/val_wiki.json",),
    "few_rel_64": ("few_rel/train_wiki.json",),
}
# FewRel 1.0's released files: 80 relations of 700 sentences, 64 in train_wiki.json (the tiny-LM authors' task)
# and 16 in val_wiki.json (the local data root's); each preset reads one file through the FewRel adapter
FEW_REL_PRESETS = {"few_rel": "FewRel 1.0's 16 validation relations (val_wiki.json)",
                   "few_rel_64": "FewRel 1.0's 64 training relations (train_wiki.json)"}
TASK_TEXT_COLUMNS = {"ag_news": ("text",), "dbpedia_14": ("title", "content")}
# the hub datasets' class names, in their id order
TASK_LABEL_NAMES = {
    "ag_news": ("World", "Sports", "Business", "Sci/Tech"),
    "dbpedia_14": ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
                   "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
}
PRESETS = tuple(TASK_CLASSES)
FEW_REL_TEST_PER_RELATION = 70  # per-relation split of FewRel's 700 examples: 630 train / 70 test (the authors')
WIKIPEDIA = "Wikipedia"  # the corpus preset's name in reports


def default_data_root() -> Path | None:
    """$COMMITTEE_DATA, else ../shared/data beside the repository (or the working directory)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
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


def require_file(root: Path, rel: str) -> Path:
    """`root/rel`, which must be a file (else a DataError saying where it looked and how to get it)."""
    path = root / rel
    if not path.is_file():
        raise DataError(f"dataset file missing: looked for {path}; {PULL_HINT}")
    return path


def check_task_files(root: Path, task: str) -> None:
    """Cheap check that a preset's files exist (reads nothing); `check_task_data` reads and checks them."""
    for rel in TASK_FILES[task]:
        require_file(root, rel)


def wikipedia_shards(root: Path) -> list[Path]:
    shards = sorted((root / "wikipedia").glob("train-*.parquet"))
    if not shards:
        raise DataError(f"no Wikipedia shards: looked for {root / 'wikipedia' / 'train-*.parquet'}; {PULL_HINT}")
    return shards
