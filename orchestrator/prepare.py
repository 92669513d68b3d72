"""Driver-side preparation: data checks, the tokenizer, and the tokenized inputs every member shares."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from workers import data as wdata
from workers.corpus import encode, pack_blocks, truncate_articles
from workers.errors import DataError
from workers.member import SharedInputs
from workers.pretrain import SpecialIds
from workers.tokenizer import load_tokenizer, train_wordpiece

log = logging.getLogger(__name__)


def check_data(cfg) -> Path:
    """Resolve the data root and check that every file the run reads is there, before any work starts."""
    root = wdata.resolve_data_root(cfg.data.root)
    wdata.wikipedia_shards(root)
    wdata.check_task_files(root, cfg.task.name)
    return root


def build_inputs(cfg, root: Path, run_dir: Path, echo=print,
                 reuse_tokenizer: bool = False) -> tuple[SharedInputs, dict]:
    """Tokenizer (trained or loaded, saved to run_dir/tokenizer) and all token arrays of the run.

    reuse_tokenizer (a resumed run): load run_dir/tokenizer when it exists, so finished members and the
    members still to run see the same token ids.
    """
    t0 = time.perf_counter()
    articles = wdata.pretraining_articles(root, cfg.pretrain.articles, cfg.pretrain.order_seed)
    task = wdata.load_task(root, cfg.task.name, cfg.task.train_per_class, cfg.task.val_per_class,
                           cfg.task.test_per_class, cfg.task.sample_seed)
    if reuse_tokenizer and (run_dir / "tokenizer").is_dir():
        tokenizer = load_tokenizer(str(run_dir / "tokenizer"))
    elif cfg.tokenizer.path:
        try:
            tokenizer = load_tokenizer(cfg.tokenizer.path)
        except (OSError, ValueError) as exc:
            raise DataError(f"tokenizer.path {cfg.tokenizer.path} could not be loaded: {exc}") from None
    else:
        n_tok = cfg.tokenizer.train_articles or cfg.pretrain.articles
        # corpora nest (the first N of one seeded order), so a smaller tokenizer corpus is a prefix
        tok_texts = (articles[:n_tok] if n_tok <= len(articles)
                     else wdata.pretraining_articles(root, n_tok, cfg.pretrain.order_seed))
        echo(f"training a WordPiece tokenizer (vocab {cfg.tokenizer.vocab_size}) on {len(tok_texts)} articles")
        tokenizer = train_wordpiece(tok_texts, cfg.tokenizer.vocab_size)
    tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    special = SpecialIds.of(tokenizer)

    seq_len = cfg.pretrain.seq_len
    if cfg.pretrain.mode == "packed":
        encoded = encode(tokenizer, articles, special=False)
        blocks = pack_blocks(encoded, seq_len, special.cls, special.sep, special.pad)
    else:
        encoded = encode(tokenizer, articles, max_length=seq_len)
        blocks = truncate_articles(encoded, seq_len, special.pad)
    max_len = cfg.task.max_length
    inputs = SharedInputs(
        blocks=blocks,
        train=encode(tokenizer, task.train_texts, max_length=max_len), train_labels=task.train_labels,
        val=encode(tokenizer, task.val_texts, max_length=max_len), val_labels=task.val_labels,
        test=encode(tokenizer, task.test_texts, max_length=max_len), test_labels=task.test_labels,
        num_classes=task.num_classes, special=special,
        model=cfg.model.model_dump(), pretrain=cfg.pretrain.model_dump(), finetune=cfg.finetune.model_dump(),
    )
    corpus = {
        "articles": len(articles),
        "corpus_tokens": int(len(encoded.ids)),
        "blocks": int(len(blocks)),
        "real_tokens_in_blocks": int((blocks != special.pad).sum()),
        "vocab_size": special.vocab_size,
        "token_overlap": token_overlap(encoded.ids, inputs.train.ids, special),
        "train_examples": len(inputs.train), "val_examples": len(inputs.val), "test_examples": len(inputs.test),
        "prepare_s": round(time.perf_counter() - t0, 2),
    }
    return inputs, corpus


def token_overlap(corpus_ids, task_ids, special: SpecialIds) -> float:
    """Share of the task's (non-special) token occurrences whose token id occurs in the pre-training corpus."""
    import numpy as np

    skip = np.array([special.pad, special.cls, special.sep, special.mask, special.unk])
    task_ids = task_ids[~np.isin(task_ids, skip)]
    seen = np.zeros(special.vocab_size, dtype=bool)
    seen[np.asarray(corpus_ids)] = True
    return float(seen[task_ids].mean()) if len(task_ids) else 0.0
