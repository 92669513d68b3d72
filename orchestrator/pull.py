"""`committee data pull`: the data-root layout from the Hugging Face hub, for online users.

Writes the same files as ../shared/data (parquet in the hub's schemas, FewRel's original JSON), so the
loaders in workers.data.loading read either. This needs internet and cannot run on an offline machine.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from workers.errors import DataError

FEW_REL_URL = "https://raw.githubusercontent.com/thunlp/FewRel/master/data/{name}"
WIKIPEDIA_SHARDS = 5


def _hub(*args, **kwargs):
    from datasets import load_dataset

    try:
        return load_dataset(*args, **kwargs)
    except Exception as exc:  # no network, hub down, renamed id: say what failed
        raise DataError(f"could not load {args[0]} from the Hugging Face hub: {exc}") from None


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

    (root / "few_rel").mkdir(exist_ok=True)
    for name in ("val_wiki.json", "pid2name.json"):
        echo(f"FewRel {name}")
        try:
            with urllib.request.urlopen(FEW_REL_URL.format(name=name), timeout=60) as resp:
                payload = json.loads(resp.read())
        except OSError as exc:
            raise DataError(f"could not download FewRel {name}: {exc}") from None
        (root / "few_rel" / name).write_text(json.dumps(payload))
