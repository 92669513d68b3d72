"""Token arrays for training: ragged encodings, packed pre-training blocks, truncated articles.

Everything here is numpy, small and picklable, so it can be `ray.put` once and shared by all members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Variable-length token sequences stored flat: sequence i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # [total_tokens] int32
    offsets: np.ndarray  # [n + 1] int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # [n] int64

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]


def encode(tokenizer, texts: list[str], max_length: int | None = None, special: bool = True,
           batch: int = 1000) -> Ragged:
    """Tokenize `texts` ([CLS] ... [SEP] when `special`), truncating to `max_length` tokens if given."""
    pieces, lengths = [], []
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start:start + batch], add_special_tokens=special,
                        truncation=max_length is not None, max_length=max_length)["input_ids"]
        for ids in enc:
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return Ragged(ids=ids, offsets=offsets)


def pack_blocks(articles: Ragged, seq_len: int, cls_id: int, sep_id: int, pad_id: int) -> np.ndarray:
    """Fixed-length blocks [n_blocks, seq_len] int32 from articles encoded without special tokens.

    The stream is article tokens with [SEP] after each article; each block is [CLS] followed by the
    next seq_len - 1 stream tokens, so every corpus token lands in exactly one block. Only the last
    block is padded.
    """
    body = seq_len - 1
    stream = np.empty(len(articles.ids) + len(articles), dtype=np.int32)
    ends = articles.offsets[1:] + np.arange(len(articles))  # position of each article's [SEP]
    is_sep = np.zeros(len(stream), dtype=bool)
    is_sep[ends] = True
    stream[is_sep] = sep_id
    stream[~is_sep] = articles.ids
    n_blocks = -(-len(stream) // body)
    blocks = np.full((n_blocks, seq_len), pad_id, dtype=np.int32)
    blocks[:, 0] = cls_id
    flat = np.full(n_blocks * body, pad_id, dtype=np.int32)
    flat[:len(stream)] = stream
    blocks[:, 1:] = flat.reshape(n_blocks, body)
    return blocks


def truncate_articles(articles: Ragged, seq_len: int, pad_id: int) -> np.ndarray:
    """The authors' mode: each article (encoded with [CLS]/[SEP], cut to seq_len) padded to seq_len."""
    blocks = np.full((len(articles), seq_len), pad_id, dtype=np.int32)
    for i in range(len(articles)):
        row = articles.row(i)[:seq_len]
        blocks[i, :len(row)] = row
    return blocks
