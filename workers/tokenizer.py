"""A deterministic WordPiece tokenizer (bert-base-uncased's normalisation) trained on the corpus.

The vocabulary is learned here rather than by `tokenizers.trainers.WordPieceTrainer`, whose merge
order depends on hash-map iteration: two trainings on the same texts differ in a few tokens and in
most ids. This learner makes the same frequency-driven merges (most frequent adjacent pair first,
`##` marking word-internal pieces) with ties broken by the pieces' text, so the same texts always
give the same vocabulary and ids. Normalisation, pre-tokenisation and encoding are `tokenizers`'
own BERT components; the result is a `BertTokenizerFast`, saved with `save_pretrained`, that
`transformers.AutoTokenizer.from_pretrained(path)` loads.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"
MAX_WORD_CHARS = 100  # longer "words" (URLs, tables) are [UNK], as in BERT


def count_words(texts: list[str]) -> Counter:
    """Words after BERT normalisation (lower-case, cleaned) and pre-tokenisation (whitespace, punctuation)."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)) if len(w) <= MAX_WORD_CHARS)
    return counts


def _merged(a: str, b: str) -> str:
    return a + b[len(PREFIX):]


def learn_vocab(word_counts: Counter, vocab_size: int, min_pair_count: int = 2) -> list[str]:
    """Specials, the sorted alphabet, then merged pieces in merge order, up to `vocab_size` tokens."""
    words = sorted(word_counts)  # a fixed order: ties never depend on hashing
    freq = [word_counts[w] for w in words]
    pieces = [[w[0]] + [PREFIX + c for c in w[1:]] for w in words]
    vocab = list(SPECIAL_TOKENS) + sorted({p for ps in pieces for p in ps})
    seen = set(vocab)

    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, ps in enumerate(pieces):
        for pair in zip(ps, ps[1:]):
            pair_count[pair] += freq[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)  # most frequent first; equal counts: smallest (left, right) text first

    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry: the count changed since it was pushed
        if -neg < min_pair_count:
            break
        left, right = pair
        new = _merged(left, right)
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            ps, f = pieces[i], freq[i]
            out, j = [], 0
            while j < len(ps):
                if j + 1 < len(ps) and ps[j] == left and ps[j + 1] == right:
                    out.append(new)
                    j += 2
                else:
                    out.append(ps[j])
                    j += 1
            before, after = Counter(zip(ps, ps[1:])), Counter(zip(out, out[1:]))
            before.subtract(after)
            for p, change in before.items():  # only the pairs around the merged positions change
                if change:
                    pair_count[p] -= change * f
                    touched.add(p)
                    if change < 0:
                        where[p].add(i)
            pieces[i] = out
        pair_count.pop(pair, None)
        for p in touched:
            if pair_count.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                pair_count.pop(p, None)
        if new not in seen:
            seen.add(new)
            vocab.append(new)
    return vocab


def train_wordpiece(texts: list[str], vocab_size: int):
    """A `BertTokenizerFast` whose WordPiece vocabulary is learned from `texts` (same texts -> same vocab)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = learn_vocab(count_words(texts), vocab_size)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=MAX_WORD_CHARS))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    return BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", do_lower_case=True,
    )


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
