"""The benchmark's inputs, from the product's stages: the tokenizer from `orchestrator.run.prepare`, the
text from `workers.data.loading`, blocks and padded articles from `workers.text.corpus`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.options import DEEP_LAYERS, MODELS, NUM_LABELS, SEQ_LEN, TOKENIZER_ORDER_SEED, BenchOptions, Sizes
from workers.data import loading as wdata
from workers.errors import DataError


@dataclass
class Prepared:
    tokenizer: object
    special: object  # workers.train.pretrain.SpecialIds
    packed: np.ndarray  # [n_blocks, 128] member-loop blocks
    truncated: np.ndarray  # [n_articles, 128] the authors' padded articles
    train: object  # Ragged AG News train examples
    train_labels: np.ndarray  # [n_train] int64
    test: object  # Ragged AG News test examples (latency requests, prediction)
    member_config: object  # 1 layer: committee members
    train_config: object  # the --model's depth: trained in the throughput sections
    deep_config: object  # DEEP_LAYERS layers: the deep model of the latency sections


def bench_tokenizer(opts: BenchOptions, root: Path, echo):
    """--tokenizer when given, else the product's cached WordPiece tokenizer of the model's vocabulary."""
    from orchestrator.run.prepare import tokenizer_for
    from workers.text.tokenizer import load_tokenizer

    if opts.tokenizer:
        try:
            return load_tokenizer(opts.tokenizer)
        except (OSError, ValueError) as exc:
            raise DataError(f"--tokenizer {opts.tokenizer} could not be loaded: {exc}; "
                            "give a directory written by save_pretrained, or leave it out to train one") from None
    shape = MODELS[opts.model]
    articles = min(shape["tokenizer_articles"], len(wdata.load_wikipedia_texts(root)))
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else None
    path = tokenizer_for(root, shape["vocab"], articles, TOKENIZER_ORDER_SEED, cache_dir=cache_dir, echo=echo)
    return load_tokenizer(path)


def model_configs(opts: BenchOptions, vocab_size: int) -> tuple:
    """(member, trained, deep) BertConfigs of the --model's width: 1 layer, its own depth, DEEP_LAYERS."""
    from workers.model.bert import bert_config

    shape = MODELS[opts.model]
    vocab = max(shape["vocab"], vocab_size)

    def config(layers: int):
        return bert_config(vocab, shape["hidden"], shape["heads"], layers, max_position=SEQ_LEN, num_labels=NUM_LABELS)

    return config(1), config(shape.get("layers", 1)), config(DEEP_LAYERS)


def prepare(opts: BenchOptions, sizes: Sizes, echo) -> Prepared:
    """Tokenizer, pre-training text (packed and padded), AG News train and test, and the model configs."""
    from workers.text.corpus import encode, pack_blocks, truncate_articles
    from workers.train.pretrain import SpecialIds

    root = wdata.resolve_data_root(opts.data_root)
    tokenizer = bench_tokenizer(opts, root, echo)
    special = SpecialIds.of(tokenizer)
    articles = wdata.pretraining_articles(root, sizes.pretrain_articles, TOKENIZER_ORDER_SEED)
    packed = pack_blocks(encode(tokenizer, articles, special=False), SEQ_LEN, special.cls, special.sep, special.pad)
    truncated = truncate_articles(encode(tokenizer, articles, max_length=SEQ_LEN), SEQ_LEN, special.pad)
    task = wdata.load_task(root, "ag_news", train_per_class=sizes.finetune_per_class, val_per_class=0,
                           test_per_class=64, sample_seed=0)
    member, trained, deep = model_configs(opts, special.vocab_size)
    return Prepared(tokenizer, special, packed, truncated,
                    encode(tokenizer, task.train_texts, max_length=SEQ_LEN), task.train_labels,
                    encode(tokenizer, task.test_texts, max_length=SEQ_LEN), member, trained, deep)
