"""`committee data pull`: the data-root layout from the Hugging Face hub, for online users.

Writes the same files as the shared data root (parquet in the hub's schemas, FewRel's original JSON,
bert-base-uncased's vocab.txt), so the loaders in workers.data.loading read either, and adds what the
tiny-LM authors used beyond it: FewRel 1.0's 64 training relations (train_wiki.json, task preset
few_rel_64). This needs internet; every download is checked (relation counts, the vocabulary's SHA-256)
before it is written, and each file is written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from workers.data.root import TASK_CLASSES, TASK_FILES
from workers.errors import DataError
from workers.text.vocab import KNOWN_VOCABS, TOKENIZERS_DIR, VOCAB_FILE

FEW_REL_URL = "https://raw.githubusercontent.com/thunlp/FewRel/master/data/{name}"
# FewRel files -> the preset that reads them (its relation count is checked); pid2name.json names the relations
FEW_REL_FILES = {Path(TASK_FILES[preset][0]).name: preset for preset in ("few_rel", "few_rel_64")}
FEW_REL_NAMES = "pid2name.json"
VOCAB_HUB_IDS = {"bert-base-uncased": "google-bert/bert-base-uncased"}  # the hub repository holding each vocab.txt
WIKIPEDIA_SHARDS = 5


def _hub(*args, **kwargs):
    from datasets import load_dataset

    try:
        return load_dataset(*args, **kwargs)
    except Exception as exc:  # no network, hub down, renamed id: say what failed
        raise DataError(f"could not load {args[0]} from the Hugging Face hub: {exc}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pull_all(root: Path, wikipedia_articles: int, echo=print) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, hub_id in (("ag_news", "fancyzhx/ag_news"), ("dbpedia_14", "fancyzhx/dbpedia_14")):
        (root / name).mkdir(exist_ok=True)
        for split in ("train", "test"):
            echo(f"{hub_id} {split}")
            _hub(hub_id, split=split).to_parquet(str(root / name / f"{split}.parquet"))

    echo(f"wikimedia/wikipedia 20231101.en: first {wikipedia_articles} articles")
    wiki = _hub("wikimedia/wikipedia", "20231101.en", split="train", streaming=True)
    rows = list(wiki.take(wikipedia_articles))
    from datasets import Dataset

    (root / "wikipedia").mkdir(exist_ok=True)
    per_shard = -(-len(rows) // WIKIPEDIA_SHARDS)
    for shard in range(WIKIPEDIA_SHARDS):
        part = rows[shard * per_shard:(shard + 1) * per_shard]
        Dataset.from_list(part).to_parquet(str(root / "wikipedia" / f"train-{shard:05d}-of-{WIKIPEDIA_SHARDS:05d}.parquet"))

    pull_few_rel(root, echo=echo)
    pull_vocab(root, "bert-base-uncased", echo=echo)


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.read()
    except OSError as exc:
        raise DataError(f"could not download {url}: {exc}") from None


def pull_few_rel(root: Path, url: str = FEW_REL_URL, echo=print) -> list[Path]:
    """FewRel 1.0's val_wiki.json (16 relations, preset few_rel), train_wiki.json (64, preset few_rel_64) and
    pid2name.json into root/few_rel/, each checked before it is written. `url` has a {name} field (any urllib
    URL: https, or file:// for a local copy). Returns the paths written."""
    written = []
    for name in (*FEW_REL_FILES, FEW_REL_NAMES):
        echo(f"FewRel {name}")
        source = url.format(name=name)
        try:
            payload = json.loads(_download(source))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"FewRel {name} from {source} is not JSON: {exc}") from None
        preset = FEW_REL_FILES.get(name)
        if preset is not None and (not isinstance(payload, dict) or len(payload) != TASK_CLASSES[preset]):
            found = len(payload) if isinstance(payload, dict) else type(payload).__name__
            raise DataError(f"FewRel {name} from {source} holds {found} relations; preset {preset} reads "
                            f"{TASK_CLASSES[preset]} from it: not written")
        path = root / "few_rel" / name
        _write_atomically(path, json.dumps(payload).encode())
        written.append(path)
    return written


def _hub_file(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:  # no network, hub down: say what failed
        raise DataError(f"could not download {filename} of {repo_id} from the Hugging Face hub: {exc}") from None


def pull_vocab(root: Path, name: str, fetch=_hub_file, echo=print) -> Path:
    """A named vocabulary's vocab.txt into root/tokenizers/<name>/ (where `tokenizer.vocab: <name>` finds it),
    checked against its known SHA-256. `fetch(repo_id, filename)` returns a local copy of the hub's file."""
    echo(f"{VOCAB_HUB_IDS[name]} {VOCAB_FILE}")
    data = Path(fetch(VOCAB_HUB_IDS[name], VOCAB_FILE)).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != KNOWN_VOCABS[name]["sha256"]:
        raise DataError(f"{VOCAB_FILE} of {VOCAB_HUB_IDS[name]} has sha256 {sha}, not {name}'s "
                        f"{KNOWN_VOCABS[name]['sha256']}: not written")
    path = root / TOKENIZERS_DIR / name / VOCAB_FILE
    _write_atomically(path, data)
    return path
