"""A sweep's data configurations: corpus, measured overlap with the task, prepared token arrays.

Every data configuration a sweep can reach is prepared before any trial starts (`prepare_sweep_data`):
its corpus is built (the first N articles of the seeded order, or a controlled-overlap corpus of a
fixed token count from `workers.text.overlap`), encoded by the shared prepare stage (cached on disk), and
measured against the task's training words with the sweep's fixed tokenizer. The driver then puts
each configuration's arrays into the object store once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.run.prepare import (
    Prepared,
    fixed_vocab_tokenizer,
    load_cfg_task,
    prepare,
    prepare_from_texts,
    task_and_corpus,
    tokenizer_for,
    uses_data_root,
    vocab_data_root,
)
from orchestrator.sweep.space import PointConfig, data_id
from workers.data import loading as wdata
from workers.errors import ConfigError
from workers.text import overlap
from workers.text.tokenizer import load_tokenizer


@dataclass
class SweepData:
    """One data configuration: its prepared arrays and what its corpus is (size, overlap)."""

    point: PointConfig
    prepared: Prepared
    corpus: dict


class OverlapMeter:
    """Measures corpora against the task; nested seeded corpora (first N articles) extend one word set."""

    def __init__(self) -> None:
        self._prefix: dict[tuple, tuple[int, set]] = {}

    def measure(self, tok_dir: Path, tokenizer, task_texts: list[str], texts: list[str], nested_key=None) -> dict:
        splitter = overlap.WordSplitter(tokenizer)
        done, words = self._prefix.get((str(tok_dir), nested_key), (0, set())) if nested_key else (0, set())
        if done > len(texts):
            done, words = 0, set()
        words = set(words)
        for text in texts[done:]:
            words.update(splitter.words(text))
        if nested_key is not None:
            self._prefix[(str(tok_dir), nested_key)] = (len(texts), words)
        return overlap.overlap_measures(overlap.word_counts(task_texts, splitter), words)


def tokenizer_identity(point: PointConfig) -> str:
    """What a point's tokenizer is made from (its settings and the article order of its reference corpus)."""
    e = point.experiment
    return json.dumps({**e.tokenizer.model_dump(mode="json"), "order_seed": e.pretrain.order_seed,
                       "corpus": e.pretrain.corpus.model_dump(mode="json"), "data_root": e.data.root}, sort_keys=True)


class SweepTokenizers:
    """The sweep's fixed tokenizers (one per vocabulary), loaded once. A resumed sweep uses the ones saved in
    its run directory (`saved`: identity -> directory), so its arrays match the finished trials'."""

    def __init__(self, saved: dict[str, Path] | None = None) -> None:
        self.saved = saved or {}
        self.loaded: dict[str, tuple[Path, object]] = {}

    def get(self, point: PointConfig, echo) -> tuple[Path, object]:
        """(directory, tokenizer) of the point's tokenizer: saved, given (tokenizer.path), a fixed vocabulary
        (tokenizer.vocab), or learned (cached)."""
        identity = tokenizer_identity(point)
        if identity not in self.loaded:
            e = point.experiment
            if identity in self.saved:
                tok_dir = Path(self.saved[identity])
            elif e.tokenizer.path:
                tok_dir = Path(e.tokenizer.path)
            elif e.tokenizer.vocab:
                tok_dir = fixed_vocab_tokenizer(e.tokenizer.vocab, vocab_data_root(e))
            else:
                root = wdata.resolve_data_root(e.data.root) if uses_data_root(e) else None
                tok_dir = tokenizer_for(root, e.tokenizer.vocab_size, e.tokenizer.train_articles,
                                        e.pretrain.order_seed, echo=echo, corpus=task_and_corpus(e)[1])
            self.loaded[identity] = (tok_dir, load_tokenizer(tok_dir))
        return self.loaded[identity]


def controlled_corpus(point: PointConfig, task_texts: list[str], tokenizer, rankings: dict):
    """A ranked or task_mix corpus of `corpus.tokens` tokens; an unreachable level is a ConfigError."""
    c, order_seed = point.corpus, point.experiment.pretrain.order_seed
    documents = task_and_corpus(point.experiment)[1]
    pool_size = c.pool_articles or len(wdata.corpus_documents(documents))
    pool = wdata.pretraining_documents(documents, pool_size, order_seed)
    try:
        if c.source == "task_mix":
            return overlap.task_mix_corpus(pool, task_texts, tokenizer, c.tokens, c.task_share)
        key = (pool_size, order_seed, documents.describe(), point.experiment.task.model_dump_json(),
               tokenizer_identity(point))
        if key not in rankings:
            rankings[key] = overlap.rank_articles(pool, task_texts, tokenizer)
        return overlap.ranked_corpus(pool, rankings[key], tokenizer, c.tokens, c.rank_quantile)
    except ValueError as exc:
        raise ConfigError(f"sweep point ({point.label}): sweep.corpus ({c.source}, tokens {c.tokens:,}): {exc}") from None


def prepare_point_data(point: PointConfig, meter: OverlapMeter, rankings: dict, tokenizers: SweepTokenizers,
                       echo) -> SweepData:
    e = point.experiment
    task = load_cfg_task(e)
    tok_dir, tokenizer = tokenizers.get(point, echo)
    if point.corpus.source == "seeded":
        texts = wdata.pretraining_documents(task_and_corpus(e)[1], e.pretrain.articles, e.pretrain.order_seed)
        prepared = prepare(e, tokenizer_path=tok_dir, echo=echo)
        made = {"articles": len(texts), "task_texts": 0}
        nested = (e.pretrain.order_seed, e.task.model_dump_json(), e.pretrain.corpus.model_dump_json())
    else:
        built = controlled_corpus(point, task.train_texts, tokenizer, rankings)
        texts, nested = built.texts, None
        prepared = prepare_from_texts(e, texts, tok_dir, echo=echo)
        made = {"articles": built.articles, "task_texts": built.task_texts}
    measured = meter.measure(tok_dir, tokenizer, task.train_texts, texts, nested)
    c = prepared.corpus
    corpus = {"source": point.corpus.source, **made, "corpus_tokens": c["corpus_tokens"], "blocks": c["blocks"],
              "type_overlap": measured["type_overlap"], "occurrence_overlap": measured["occurrence_overlap"],
              "task_word_types": measured["task_word_types"], "token_overlap": c["token_overlap"],
              "token_type_overlap": c["token_type_overlap"], "token_occurrence_overlap": c["token_overlap"],
              "vocabulary": c["vocabulary"],
              "tokenizer": str(tok_dir), "tokenizer_identity": tokenizer_identity(point)}
    return SweepData(point, prepared, corpus)


def check_task_shares(points: list[PointConfig], tokenizers: SweepTokenizers, echo) -> None:
    """Every task_mix level must be reachable with the task's training text: checked before any corpus is built."""
    for point in points:
        e, c = point.experiment, point.corpus
        if c.source != "task_mix":
            continue
        task = load_cfg_task(e)
        _, tokenizer = tokenizers.get(point, echo)
        try:
            overlap.check_task_share(task.train_texts, tokenizer, c.tokens, c.task_share)
        except ValueError as exc:
            raise ConfigError(f"sweep point ({point.label}): sweep.corpus (task_mix): {exc}") from None


def prepare_sweep_data(points: list[PointConfig], echo, saved_tokenizers: dict[str, Path] | None = None
                       ) -> dict[str, SweepData]:
    """Every data configuration, smallest seeded corpus first (so nested corpora extend one word set)."""
    meter, rankings, tokenizers, table = OverlapMeter(), {}, SweepTokenizers(saved_tokenizers), {}
    check_task_shares(points, tokenizers, echo)
    ordered = sorted(points, key=lambda p: (p.corpus.source, p.experiment.pretrain.articles))
    for i, point in enumerate(ordered, 1):
        echo(f"data configuration {i}/{len(ordered)}: {point.label or 'the base config'}")
        data = prepare_point_data(point, meter, rankings, tokenizers, echo)
        c = data.corpus
        echo(f"  corpus {c['source']}: {c['articles']} articles + {c['task_texts']} task texts, "
             f"{c['corpus_tokens']:,} tokens; overlap with the task's training words: type "
             f"{100 * c['type_overlap']:.1f}%, occurrence {100 * c['occurrence_overlap']:.1f}%; tokens: type "
             f"{100 * c['token_type_overlap']:.1f}%, occurrence {100 * c['token_occurrence_overlap']:.1f}%")
        table[data_id(point)] = data
    return table
