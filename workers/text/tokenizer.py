"""A deterministic WordPiece tokenizer (bert-base-uncased's normalisation) trained on the corpus.

The vocabulary is learned here rather than by `tokenizers.trainers.WordPieceTrainer`, whose merge
order depends on hash-map iteration: two trainings on the same texts differ in a few tokens and in
most ids. This learner makes the same frequency-driven merges (most frequent adjacent pair first,
`##` marking word-internal pieces) with ties broken by the pieces' text, so the same texts always
give the same vocabulary and ids. Normalisation, pre-tokenisation and encoding are `tokenizers`'
own BERT components; the result is a `BertTokenizerFast`, saved with `save_pretrained`, that
`transformers.AutoTokenizer.from_pretrained(path)` loads.

Speed (`scripts/tokenizer_speed.py` compares against the previous, plainer implementation and
checks the outputs are identical): pyarrow splits the texts at spaces and counts the chunks, and
each distinct chunk is normalised and split into words once; the learner (workers/text/wordpiece.py) keeps pair
counts up to date by difference, running the large early merges as numpy operations and the many small later
ones as a Python loop.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from workers.text.wordpiece import PREFIX, learn_vocab

MAX_WORD_CHARS = 100  # longer "words" (URLs, tables) are [UNK], as in BERT


# ----------------------------------------------------------------------------------------------
# Counting words


def _bert_normalizer():
    from tokenizers import normalizers

    return normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)


def _whitespace_as_normalized(normalizer) -> dict[str, str]:
    """What BertNormalizer makes of each of Python's whitespace characters: a space, or nothing.

    It turns whitespace into spaces and deletes control characters, some of which (\\x0c, \\x1f,
    ...) are whitespace to Python. Applying this to the raw text first changes nothing in the
    normalised text and leaves spaces as the only separators.
    """
    as_normalized = {}
    for ch in (chr(c) for c in range(0x3001) if chr(c).isspace() and c != 0x20):  # none lies above U+3000
        normalized = normalizer.normalize_str(f"a{ch}b")
        if normalized not in ("ab", "a b"):
            raise RuntimeError(f"BertNormalizer turns whitespace {ch!r} into {normalized!r}: not handled")
        as_normalized[ch] = normalized[1:-1]
    return as_normalized


def _spaces_only(texts: list[str], as_normalized: dict[str, str]) -> list[str]:
    """The texts with every whitespace character a space, or deleted where the normaliser deletes it."""
    ascii_only = {ch: out for ch, out in as_normalized.items() if ch.isascii()}
    cleaned = []
    for text in texts:
        for ch, out in (ascii_only if text.isascii() else as_normalized).items():
            if ch in text:
                text = text.replace(ch, out)
        cleaned.append(text)
    return cleaned


def _count_chunks(texts: list[str], normalizer, batch_texts: int = 512) -> tuple[list[str], list[int]]:
    """Distinct space-separated chunks of the texts and how often each occurs (pyarrow counts them).

    BERT normalisation works character by character and never moves a character across a space,
    and pre-tokenisation always splits at spaces, so a text's words are the words of its chunks:
    each distinct chunk need only be normalised and split once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    as_normalized = _whitespace_as_normalized(normalizer)
    chunks = []
    for start in range(0, len(texts), batch_texts):
        batch = pa.array(_spaces_only(texts[start:start + batch_texts], as_normalized), type=pa.large_string())
        chunks.append(pc.split_pattern(batch, " ").flatten())
    counts = pc.value_counts(pa.chunked_array(chunks, type=pa.large_string()))
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def _normalize_chunks(chunks, normalizer) -> list[str]:
    """BertNormalizer's output for each chunk; printable ASCII (most chunks) only needs lower-casing."""
    normalize = normalizer.normalize_str
    return [c.lower() if c.isascii() and c.isprintable() else normalize(c) for c in chunks]


def _word_splitter(chars: set[str]) -> tuple[re.Pattern, re.Pattern]:
    """Regexes that split text made of `chars` exactly as BertPreTokenizer does: (break, word).

    BertPreTokenizer decides per character: whitespace separates words, punctuation is a word of
    its own, anything else extends the current word. Asking it about each character present
    (`a?a` -> one, two or three words) keeps its own Unicode tables in charge. `break` finds a
    space or punctuation (text without one is a single word); `word` finds the words.
    """
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.BertPreTokenizer()
    punctuation, spaces = [], []
    for ch in sorted(chars):
        parts = [w for w, _ in pre.pre_tokenize_str(f"a{ch}a")]
        if parts == ["a", ch, "a"]:
            punctuation.append(ch)
        elif parts == ["a", "a"]:
            spaces.append(ch)
        elif parts != [f"a{ch}a"]:
            raise RuntimeError(f"BertPreTokenizer splits 'a{ch}a' as {parts}: not one of the known cases")
    punct = "".join(re.escape(ch) for ch in punctuation)
    breaks = punct + "".join(re.escape(ch) for ch in spaces)
    if not breaks:
        return re.compile("(?!)"), re.compile(".+", re.DOTALL)
    word = f"[^{breaks}]+"
    return re.compile(f"[{breaks}]"), re.compile(f"[{punct}]|{word}" if punct else word)


def count_words(texts: list[str]) -> Counter:
    """Words after BERT normalisation (lower-case, cleaned) and pre-tokenisation (whitespace, punctuation)."""
    normalizer = _bert_normalizer()
    chunks, chunk_counts = _count_chunks(texts, normalizer)
    normalized = _normalize_chunks(chunks, normalizer)
    has_break, words_in = _word_splitter(set("".join(normalized)))
    word_counts: dict[str, int] = {}
    count_of = word_counts.get
    for text, n_chunk in zip(normalized, chunk_counts):
        if has_break.search(text) is None:  # most chunks: one word (or none: "" between two spaces)
            if text and len(text) <= MAX_WORD_CHARS:
                word_counts[text] = count_of(text, 0) + n_chunk
            continue
        for word in words_in.findall(text):
            if len(word) <= MAX_WORD_CHARS:
                word_counts[word] = count_of(word, 0) + n_chunk
    return Counter(word_counts)


def wordpiece_tokenizer(vocab: list[str]):
    """A `BertTokenizerFast` over `vocab` (token id = position) with bert-base-uncased's pipeline: its
    normaliser (lower-case, accents stripped, cleaned, CJK characters split), pre-tokeniser and WordPiece
    (`##` pieces, words over 100 characters [UNK]), and [CLS] ... [SEP] around each text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

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


def train_wordpiece(texts: list[str], vocab_size: int):
    """A `BertTokenizerFast` whose WordPiece vocabulary is learned from `texts` (same texts -> same vocab)."""
    return wordpiece_tokenizer(learn_vocab(count_words(texts), vocab_size))


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
