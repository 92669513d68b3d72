"""The prepare stage: data + tokenizer -> the token arrays every member shares.

`prepare(cfg)` reads and checks every data file the run needs, learns (or loads) the tokenizer and
encodes the corpus and the task, all in memory and before a command creates or deletes anything.
Its results are cached on disk by a key of everything that determines them (data files, the task,
corpus and tokenizer settings, and the source of the code that makes them), so a second run, a
resumed run or a sweep point with the same data configuration reuses them. The tokenizer has a cache
of its own (learning a 30k vocabulary is the slowest step), shared by every corpus size of one order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.data import loading as wdata
from workers.errors import DataError
from workers.text import overlap
from workers.text.corpus import Ragged, encode, pack_blocks, truncate_articles
from workers.text.tokenizer import load_tokenizer, train_wordpiece
from workers.text.vocab import fixed_tokenizer, resolve_vocab
from workers.train.member import SharedArrays
from workers.train.pretrain import SpecialIds

log = logging.getLogger(__name__)

CACHE_ENV = "COMMITTEE_CACHE"
# the code whose output is cached: a change to any of these files changes every cache key
_SOURCES = ("workers/data/loading.py", "workers/data/specs.py", "workers/data/root.py", "workers/data/cache.py",
            "workers/data/task_examples.py", "workers/data/few_rel.py", "workers/data/datasets.py",
            "workers/data/readers.py", "workers/data/text_documents.py",
            "workers/text/corpus.py", "workers/text/tokenizer.py",
            "workers/text/wordpiece.py", "workers/text/vocab.py", "workers/text/overlap.py",
            "orchestrator/run/prepare.py")

_REPO = Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """$COMMITTEE_CACHE, else ~/.cache/committee."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "committee"


def uses_data_root(cfg) -> bool:
    """Whether the run reads the data root: a preset task or the Wikipedia corpus preset."""
    return (cfg.task.dataset is None and cfg.task.data_files is None) or cfg.pretrain.corpus.dataset is None


def task_and_corpus(cfg) -> tuple[wdata.TaskSpec, wdata.CorpusSpec]:
    """The run's task and pre-training corpus as dataset specs (presets from the data root, or the user's)."""
    return wdata.task_spec(cfg.task, cfg.data.root), wdata.corpus_spec(cfg.pretrain.corpus, cfg.data.root)


def load_cfg_task(cfg, spec: wdata.TaskSpec | None = None) -> wdata.TaskSplits:
    """The run's sampled task splits (train, validation, test) as the config's task section asks."""
    t = cfg.task
    return wdata.load_task_from(spec or wdata.task_spec(t, cfg.data.root), t.train_per_class, t.val_per_class,
                                t.test_per_class, t.sample_seed)


def check_data(cfg) -> Path | None:
    """Read and check every data file the run reads (what `validate` runs); returns the data root, or None
    when the task and the corpus are both the user's own."""
    root = wdata.resolve_data_root(cfg.data.root) if uses_data_root(cfg) else None
    task, corpus = task_and_corpus(cfg)
    n_tok = 0 if cfg.tokenizer.path or cfg.tokenizer.vocab else (cfg.tokenizer.train_articles or 0)
    if cfg.tokenizer.vocab:
        resolve_vocab(cfg.tokenizer.vocab, vocab_data_root(cfg))
    wdata.check_task_data(root, task, cfg.task.train_per_class, cfg.task.val_per_class,
                          cfg.task.test_per_class, cfg.task.sample_seed,
                          pretrain_articles=max(cfg.pretrain.articles, n_tok), order_seed=cfg.pretrain.order_seed,
                          corpus=corpus)
    return root


@dataclass(frozen=True)
class Prepared:
    """What the prepare stage gives every command."""

    arrays: SharedArrays
    corpus: dict  # the report's corpus section: articles, tokens, blocks, vocab, overlap, split sizes
    tokenizer_dir: Path  # a saved tokenizer (copied into the run directory)
    data_root: Path | None  # None when the task and the corpus are both the user's own


# ----------------------------------------------------------------------------------------------
# cache keys


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _fingerprint(paths: list[Path]) -> list:
    """(name, size, mtime) of each file: an edited data file changes the key."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _sources_digest() -> str:
    h = hashlib.sha256()
    for rel in _SOURCES:
        h.update((_REPO / rel).read_bytes())
    return h.hexdigest()[:20]


def _dir_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def tokenizer_key(root: Path | None, vocab_size: int, articles: int, order_seed: int,
                  corpus: wdata.CorpusSpec | None = None) -> str:
    """The tokenizer cache key: the corpus' identity (files or hub cache files), its size, order and vocabulary;
    `corpus` None = the Wikipedia preset of `root`."""
    corpus = corpus or wdata.wikipedia_corpus(root)
    return _digest({"kind": "tokenizer", "code": _sources_digest(), "data": corpus.identity(),
                    "vocab_size": vocab_size, "articles": articles, "order_seed": order_seed})


def _arrays_key(cfg, root: Path | None, tokenizer_id: str) -> str:
    p = cfg.pretrain
    task, corpus = task_and_corpus(cfg)
    return _digest({"kind": "arrays", "code": _sources_digest(), "tokenizer": tokenizer_id,
                    "data": {"task": task.identity(), "corpus": corpus.identity()},
                    "task": cfg.task.model_dump(mode="json"),
                    "corpus": {"articles": p.articles, "order_seed": p.order_seed, "mode": p.mode, "seq_len": p.seq_len}})


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished cache entry into place (another process may have written the same one first)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError:  # it exists already: same key, same content
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _tmp_entry(cache: Path) -> Path:
    tmp = cache / "tmp" / uuid.uuid4().hex
    tmp.mkdir(parents=True)
    return tmp


# ----------------------------------------------------------------------------------------------
# the tokenizer


def tokenizer_for(root: Path | None, vocab_size: int, articles: int, order_seed: int, cache_dir: Path | None = None,
                  texts: list[str] | None = None, echo=print, corpus: wdata.CorpusSpec | None = None) -> Path:
    """A WordPiece tokenizer learned on the first `articles` of the seeded order, from the cache if there.

    `texts`, when given, are those articles (saves reading the corpus again); `corpus` is the corpus they
    come from (None = the Wikipedia preset of `root`). Returns its directory.
    """
    cache = cache_dir or default_cache_dir()
    corpus = corpus or wdata.wikipedia_corpus(root)
    final = cache / "tokenizers" / tokenizer_key(root, vocab_size, articles, order_seed, corpus)
    if (final / "tokenizer.json").is_file():
        return final
    if texts is None or len(texts) < articles:
        texts = wdata.pretraining_documents(corpus, articles, order_seed)
    echo(f"training a WordPiece tokenizer (vocab {vocab_size}) on {articles} articles")
    t0 = time.perf_counter()
    tokenizer = train_wordpiece(texts[:articles], vocab_size)
    tmp = _tmp_entry(cache)
    tokenizer.save_pretrained(str(tmp))
    log.info("tokenizer learned in %.1f s", time.perf_counter() - t0)
    return _publish(tmp, final)


def vocab_data_root(cfg) -> Path | None:
    """The data root a named `tokenizer.vocab` is looked up in (None when there is none: a path must then do)."""
    try:
        return wdata.resolve_data_root(cfg.data.root)
    except DataError:
        return None


def fixed_vocab_tokenizer(value: str, data_root: Path | None, cache_dir: Path | None = None) -> Path:
    """The saved tokenizer of the fixed vocabulary `value` (tokenizer.vocab), cached by the vocabulary's digest."""
    vocab = resolve_vocab(value, data_root)
    cache = cache_dir or default_cache_dir()
    final = cache / "tokenizers" / _digest({"kind": "fixed-vocab", "code": _sources_digest(), "sha256": vocab.sha256,
                                            "file": vocab.file.name})
    if (final / "tokenizer.json").is_file():
        return final
    tmp = _tmp_entry(cache)
    fixed_tokenizer(vocab).save_pretrained(str(tmp))
    return _publish(tmp, final)


def vocabulary_words(cfg) -> str:
    """Where the run's vocabulary comes from, for the report (a function of the config alone)."""
    t = cfg.tokenizer
    if t.vocab:
        return f"fixed: {t.vocab}"
    if t.path:
        return f"the saved tokenizer {t.path}"
    first = f" of its first {t.train_articles:,} documents" if t.train_articles else ""
    return f"learned on the corpus{first} (WordPiece, {t.vocab_size:,} entries)"


def _run_tokenizer(cfg, root: Path | None, articles: list[str], tokenizer_path: Path | None, cache: Path, echo,
                   corpus: wdata.CorpusSpec | None = None) -> Path:
    if tokenizer_path is not None:  # a resumed run's own tokenizer
        return Path(tokenizer_path)
    if cfg.tokenizer.vocab:
        return fixed_vocab_tokenizer(cfg.tokenizer.vocab, vocab_data_root(cfg), cache)
    if cfg.tokenizer.path:
        path = Path(cfg.tokenizer.path)
        try:
            load_tokenizer(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"tokenizer.path {cfg.tokenizer.path} could not be loaded: {exc}") from None
        return path
    n_tok = cfg.tokenizer.train_articles or cfg.pretrain.articles
    # corpora nest (the first N of one seeded order), so a smaller tokenizer corpus is a prefix
    return tokenizer_for(root, cfg.tokenizer.vocab_size, n_tok, cfg.pretrain.order_seed, cache, texts=articles,
                         echo=echo, corpus=corpus)


# ----------------------------------------------------------------------------------------------
# the arrays


def prepare(cfg, tokenizer_path: Path | None = None, echo=print, cache_dir: Path | None = None) -> Prepared:
    """Check and read the data, get the tokenizer, encode everything (cached); nothing is written elsewhere.

    `tokenizer_path`: use this saved tokenizer (a resumed run's), not the config's.
    """
    t0 = time.perf_counter()
    cache = cache_dir or default_cache_dir()
    root = wdata.resolve_data_root(cfg.data.root) if uses_data_root(cfg) else None
    task_spec, corpus_spec = task_and_corpus(cfg)
    task = load_cfg_task(cfg, task_spec)
    articles = wdata.pretraining_documents(corpus_spec, cfg.pretrain.articles, cfg.pretrain.order_seed)
    tok_dir = _run_tokenizer(cfg, root, articles, tokenizer_path, cache, echo, corpus_spec)
    entry = cache / "arrays" / _arrays_key(cfg, root, _dir_digest(tok_dir))
    if (entry / "corpus.json").is_file():
        arrays, corpus = _load_arrays(entry)
    else:
        arrays, corpus = _encode_all(cfg, task, articles, load_tokenizer(tok_dir))
        _publish(_save_arrays(arrays, corpus, _tmp_entry(cache)), entry)
    corpus = {**corpus, **data_sources(task, corpus_spec), "vocabulary": vocabulary_words(cfg),
              "prepare_s": round(time.perf_counter() - t0, 2)}
    return Prepared(arrays=arrays, corpus=corpus, tokenizer_dir=tok_dir, data_root=root)


def data_sources(task: wdata.TaskSplits, corpus: wdata.CorpusSpec) -> dict:
    """The report's words on where the data came from and which class each label id is; for data as it is
    distributed also each class's label in the data (1-based labels, a mapping) and the test examples carved
    from train (the setting, the seed and the count per class)."""
    sources = {"task_source": task.source, "label_names": list(task.label_names), "label_order": task.label_order,
               "corpus_source": corpus.describe()}
    if task.data_labels is not None:
        sources["data_labels"] = list(task.data_labels)
    if task.test_carved is not None:
        sources["test_carved_from_train"] = task.test_carved
    return sources


def prepare_from_texts(cfg, articles: list[str], tokenizer_path: Path, echo=print,
                       cache_dir: Path | None = None) -> Prepared:
    """`prepare` with the pre-training corpus given as texts and a saved tokenizer: a sweep's corpora of one
    token count whose overlap with the task differs. The texts themselves are part of the cache key."""
    t0 = time.perf_counter()
    cache = cache_dir or default_cache_dir()
    root = wdata.resolve_data_root(cfg.data.root) if uses_data_root(cfg) else None
    task_spec, corpus_spec = task_and_corpus(cfg)
    task = load_cfg_task(cfg, task_spec)
    texts_digest = hashlib.sha256("\x00".join(articles).encode()).hexdigest()[:20]
    key = _digest({"kind": "arrays-from-texts", "texts": texts_digest,
                   "base": _arrays_key(cfg, root, _dir_digest(tokenizer_path))})
    entry = cache / "arrays" / key
    if (entry / "corpus.json").is_file():
        arrays, corpus = _load_arrays(entry)
    else:
        echo(f"encoding a corpus of {len(articles)} texts")
        arrays, corpus = _encode_all(cfg, task, articles, load_tokenizer(tokenizer_path))
        _publish(_save_arrays(arrays, corpus, _tmp_entry(cache)), entry)
    corpus = {**corpus, **data_sources(task, corpus_spec), "vocabulary": vocabulary_words(cfg),
              "prepare_s": round(time.perf_counter() - t0, 2)}
    return Prepared(arrays=arrays, corpus=corpus, tokenizer_dir=Path(tokenizer_path), data_root=root)


def _encode_all(cfg, task: wdata.TaskSplits, articles: list[str], tokenizer) -> tuple[SharedArrays, dict]:
    special = SpecialIds.of(tokenizer)
    seq_len = cfg.pretrain.seq_len
    if cfg.pretrain.mode == "packed":
        encoded = encode(tokenizer, articles, special=False)
        blocks = pack_blocks(encoded, seq_len, special.cls, special.sep, special.pad)
    else:
        encoded = encode(tokenizer, articles, max_length=seq_len)
        blocks = truncate_articles(encoded, seq_len, special.pad)
    max_len = cfg.task.max_length
    arrays = SharedArrays(
        blocks=blocks,
        train=encode(tokenizer, task.train_texts, max_length=max_len), train_labels=task.train_labels,
        val=encode(tokenizer, task.val_texts, max_length=max_len), val_labels=task.val_labels,
        test=encode(tokenizer, task.test_texts, max_length=max_len), test_labels=task.test_labels,
        num_classes=task.num_classes, special=special,
    )
    corpus = {
        "articles": len(articles),
        "corpus_tokens": int(len(encoded.ids)),
        "blocks": int(len(blocks)),
        "real_tokens_in_blocks": int((blocks != special.pad).sum()),
        "vocab_size": special.vocab_size,
        **token_overlaps(encoded.ids, arrays.train.ids, special),
        "train_examples": len(arrays.train), "val_examples": len(arrays.val), "test_examples": len(arrays.test),
    }
    return arrays, corpus


_RAGGED = ("train", "val", "test")


def _save_arrays(arrays: SharedArrays, corpus: dict, entry: Path) -> Path:
    parts = {"blocks": arrays.blocks}
    for name in _RAGGED:
        ragged = getattr(arrays, name)
        parts[f"{name}_ids"], parts[f"{name}_offsets"] = ragged.ids, ragged.offsets
        parts[f"{name}_labels"] = getattr(arrays, f"{name}_labels")
    np.savez(entry / "arrays.npz", **parts)
    meta = {"corpus": corpus, "num_classes": arrays.num_classes, "special": arrays.special.__dict__}
    (entry / "corpus.json").write_text(json.dumps(meta))  # written last: the entry's marker
    return entry


def _load_arrays(entry: Path) -> tuple[SharedArrays, dict]:
    meta = json.loads((entry / "corpus.json").read_text())
    with np.load(entry / "arrays.npz", allow_pickle=False) as z:
        parts = {k: z[k] for k in z.files}
    ragged = {name: Ragged(ids=parts[f"{name}_ids"], offsets=parts[f"{name}_offsets"]) for name in _RAGGED}
    arrays = SharedArrays(blocks=parts["blocks"], **ragged,
                          **{f"{n}_labels": parts[f"{n}_labels"] for n in _RAGGED},
                          num_classes=meta["num_classes"], special=SpecialIds(**meta["special"]))
    return arrays, meta["corpus"]


def token_overlaps(corpus_ids, task_ids, special: SpecialIds) -> dict:
    """The task's training token ids against the corpus's (workers.text.overlap.token_id_overlap):
    `token_overlap` (share of occurrences, the report's figure) and `token_type_overlap` (share of distinct ids)."""
    measured = overlap.token_id_overlap(corpus_ids, task_ids, (special.pad, special.cls, special.sep, special.mask,
                                                               special.unk), special.vocab_size)
    return {"token_overlap": measured["token_occurrence_overlap"], "token_type_overlap": measured["token_type_overlap"]}
