"""Token overlap between a pre-training corpus and a task, and corpora of one size whose overlap differs.

Definitions (measured on the task's *training* text, never its validation or test text):
- a *word* is what the tokenizer's own normaliser and pre-tokeniser make of a text (for the project's
  WordPiece tokenizer: lower-cased, accents stripped, split at whitespace and punctuation), before
  WordPiece cuts it into pieces; the tokenizer's special tokens ([CLS], [SEP], ...) are never words;
- *type overlap*: the share of the task's distinct words that occur in the corpus;
- *occurrence overlap*: the share of the task's word occurrences whose word occurs in the corpus
  (frequent words weigh more).
- *token type overlap* and *token occurrence overlap*: the same two shares over token ids instead of words
  (special tokens and [UNK] left out), measured with the run's vocabulary.
Token overlap means something only with a vocabulary that was not learned on the corpus: with a fixed one
such as bert-base-uncased's (`tokenizer.vocab`, the paper's), it is the share of the task's token stream the
corpus covers, the paper's overlap. A vocabulary learned on a reference corpus (the default) holds pieces of
every word it saw, so almost every task token id occurs in any corpus of a few thousand words while whole
words do not: there, the word measures are the ones that vary.

Controlled overlap at a fixed size (the size is counted in tokens of that fixed tokenizer):
- `ranked_corpus`: articles of a pool ranked by the share of their word occurrences that are task
  words; a window of consecutive ranks holding the token budget is taken at a quantile of the ranking
  (0: the articles richest in task words, 1: the poorest);
- `task_mix_corpus`: a share of the budget from the task's unlabeled training text, the rest from
  articles in the seeded order.
The corpus's overlap is then measured, and the measured value, not the knob, is what a sweep reports.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


class WordSplitter:
    """A tokenizer's normaliser and pre-tokeniser, as a function from text to words (special tokens dropped)."""

    def __init__(self, tokenizer) -> None:
        backend = tokenizer.backend_tokenizer
        self._normalizer, self._pre_tokenizer = backend.normalizer, backend.pre_tokenizer
        self._specials = sorted(set(tokenizer.all_special_tokens), key=len, reverse=True)

    def words(self, text: str) -> list[str]:
        for special in self._specials:  # the tokenizer matches these before normalising: never words
            if special in text:
                text = text.replace(special, " ")
        if self._normalizer is not None:
            text = self._normalizer.normalize_str(text)
        if self._pre_tokenizer is None:
            return text.split()
        return [word for word, _ in self._pre_tokenizer.pre_tokenize_str(text)]


def word_counts(texts: list[str], splitter: WordSplitter) -> Counter:
    """How often each word occurs in `texts`."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(splitter.words(text))
    return counts


def overlap_measures(task_counts: Counter, corpus_words) -> dict:
    """Type and occurrence overlap of the task's words (`task_counts`) with the set `corpus_words`."""
    types = len(task_counts)
    occurrences = sum(task_counts.values())
    shared = [word for word in task_counts if word in corpus_words]
    return {
        "type_overlap": len(shared) / types if types else 0.0,
        "occurrence_overlap": sum(task_counts[w] for w in shared) / occurrences if occurrences else 0.0,
        "task_word_types": types,
        "task_word_occurrences": occurrences,
    }


def token_id_overlap(corpus_ids, task_ids, special_ids, vocab_size: int) -> dict:
    """Type and occurrence overlap of the task's token ids `task_ids` with the ids occurring in `corpus_ids`
    (flat int arrays), leaving out `special_ids` (padding, [CLS], [SEP], [MASK], [UNK])."""
    task_ids = np.asarray(task_ids)
    task_ids = task_ids[~np.isin(task_ids, np.asarray(list(special_ids)))]
    seen = np.zeros(vocab_size, dtype=bool)
    seen[np.asarray(corpus_ids)] = True
    types = np.unique(task_ids)
    return {"token_type_overlap": float(seen[types].mean()) if len(types) else 0.0,
            "token_occurrence_overlap": float(seen[task_ids].mean()) if len(task_ids) else 0.0,
            "task_token_types": int(len(types))}


def measure_overlap(task_texts: list[str], corpus_texts: list[str], tokenizer) -> dict:
    """Both overlap measures of a corpus with a task's training texts, with `tokenizer`'s word splitting."""
    splitter = WordSplitter(tokenizer)
    corpus_words = set()
    for text in corpus_texts:
        corpus_words.update(splitter.words(text))
    return overlap_measures(word_counts(task_texts, splitter), corpus_words)


# ----------------------------------------------------------------------------------------------
# corpora of a fixed token count


@dataclass(frozen=True)
class BuiltCorpus:
    """A pre-training corpus as texts, with what it is made of."""

    texts: list[str]
    tokens: int  # tokens of the fixed tokenizer, special tokens not counted
    articles: int  # Wikipedia articles in it (whole or cut)
    task_texts: int  # task training texts in it (task_mix only)


def token_counts(texts: list[str], tokenizer) -> np.ndarray:
    """Tokens of each text without special tokens; [len(texts)] int64."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return np.array([len(row) for row in ids], dtype=np.int64)


def cut_to_tokens(text: str, max_tokens: int, tokenizer) -> tuple[str, int]:
    """The longest prefix of `text` that ends after a whole word and holds at most `max_tokens` tokens,
    and its token count (words are kept whole, so the prefix encodes to exactly those tokens)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    word_ids, offsets = encoding.word_ids(), encoding["offset_mapping"]
    if max_tokens >= len(word_ids):
        return text, len(word_ids)
    keep = max_tokens
    while keep > 0 and word_ids[keep] == word_ids[keep - 1]:
        keep -= 1  # do not split a word between its pieces
    if keep == 0:
        return "", 0
    return text[:offsets[keep - 1][1]], keep


def take_tokens(texts: list[str], counts: np.ndarray, budget: int, tokenizer) -> tuple[list[str], int]:
    """Texts in order until `budget` tokens: the last one cut at a word boundary; (texts, tokens)."""
    taken, total = [], 0
    for text, count in zip(texts, counts):
        if total + count <= budget:
            taken.append(text)
            total += int(count)
        else:
            cut, cut_tokens = cut_to_tokens(text, budget - total, tokenizer)
            if cut_tokens:
                taken.append(cut)
                total += cut_tokens
            break
        if total == budget:
            break
    return taken, total


def task_word_density(articles: list[str], task_words, splitter: WordSplitter) -> np.ndarray:
    """Share of each article's word occurrences that are task words; [len(articles)] float64."""
    density = np.zeros(len(articles), dtype=np.float64)
    for i, text in enumerate(articles):
        words = splitter.words(text)
        if words:
            density[i] = sum(word in task_words for word in words) / len(words)
    return density


def window_start(counts_in_rank_order: np.ndarray, budget: int, quantile: float) -> int:
    """First rank of the window at `quantile`: 0 at quantile 0, the last start whose window still holds
    `budget` tokens at quantile 1."""
    tokens_from = np.cumsum(counts_in_rank_order[::-1])[::-1]  # tokens from each rank to the end
    last = int(np.nonzero(tokens_from >= budget)[0].max())
    return int(round(quantile * last))


@dataclass(frozen=True)
class RankedPool:
    """A pool of articles ranked by task-word density (computed once, cut into windows per quantile)."""

    order: np.ndarray  # [n_articles] article indices, richest in task words first (ties: pool order)
    counts: np.ndarray  # [n_articles] tokens of each article, in pool order
    density: np.ndarray  # [n_articles] share of each article's word occurrences that are task words


def rank_articles(articles: list[str], task_texts: list[str], tokenizer) -> RankedPool:
    """Rank `articles` by the share of their word occurrences that are words of `task_texts`."""
    splitter = WordSplitter(tokenizer)
    task_words = set(word_counts(task_texts, splitter))
    density = task_word_density(articles, task_words, splitter)
    return RankedPool(order=np.argsort(-density, kind="stable"), counts=token_counts(articles, tokenizer),
                      density=density)


def ranked_corpus(articles: list[str], pool: RankedPool, tokenizer, tokens: int, quantile: float) -> BuiltCorpus:
    """`tokens` tokens of consecutive articles of the ranking `pool`, from `quantile` of it.

    Raises ValueError (with the pool's size) when the pool holds fewer tokens than asked.
    """
    available = int(pool.counts.sum())
    if available < tokens:
        raise ValueError(f"the article pool holds {available:,} tokens, fewer than the {tokens:,} asked")
    start = window_start(pool.counts[pool.order], tokens, quantile)
    window = pool.order[start:]
    texts, total = take_tokens([articles[i] for i in window], pool.counts[window], tokens, tokenizer)
    return BuiltCorpus(texts=texts, tokens=total, articles=len(texts), task_texts=0)


def first_tokens(texts: list[str], budget: int, tokenizer, chunk: int = 64) -> tuple[list[str], int]:
    """`take_tokens` that counts tokens a chunk of texts at a time, so a long list is read only as far as needed."""
    taken, total = [], 0
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        more, more_tokens = take_tokens(part, token_counts(part, tokenizer), budget - total, tokenizer)
        taken += more
        total += more_tokens
        if total >= budget or len(more) < len(part):
            break
    return taken, total


def reachable_task_share(task_texts: list[str], tokenizer, tokens: int) -> float:
    """The largest share of a `tokens` corpus that the task's training texts can fill."""
    return min(1.0, int(token_counts(task_texts, tokenizer).sum()) / tokens)


def check_task_share(task_texts: list[str], tokenizer, tokens: int, task_share: float) -> None:
    """ValueError naming the reachable range when the task's training texts cannot fill `task_share`."""
    available = int(token_counts(task_texts, tokenizer).sum())
    if round(task_share * tokens) > available:
        raise ValueError(f"task_share={task_share:g} needs {round(task_share * tokens):,} tokens of task text, but "
                         f"the task's training texts hold {available:,}: the reachable task_share at {tokens:,} "
                         f"tokens is 0 to {min(1.0, available / tokens):.3f}")


def task_mix_corpus(articles: list[str], task_texts: list[str], tokenizer, tokens: int, task_share: float) -> BuiltCorpus:
    """`tokens` tokens: round(task_share * tokens) from the task's training texts (in their order), the rest
    from `articles` (in their order). Raises ValueError naming the reachable range when the task's text or
    the articles are too short."""
    check_task_share(task_texts, tokenizer, tokens, task_share)
    from_task, task_total = first_tokens(task_texts, int(round(task_share * tokens)), tokenizer)
    from_articles, article_total = first_tokens(articles, tokens - task_total, tokenizer)
    if task_total + article_total < tokens and len(from_articles) == len(articles):
        raise ValueError(f"the article pool holds {article_total:,} tokens, fewer than the {tokens - task_total:,} asked")
    return BuiltCorpus(texts=from_articles + from_task, tokens=task_total + article_total,
                       articles=len(from_articles), task_texts=len(from_task))
