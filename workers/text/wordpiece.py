"""The WordPiece vocabulary learner: frequency-driven merges with ties broken by the pieces' text, so the
same word counts always give the same vocabulary and ids (`learn_vocab`). workers/text/tokenizer.py counts the
words and wraps the vocabulary in a `BertTokenizerFast`.

All words lie in one array of piece ids, each word's positions consecutive, with links between a
word's live positions. A merge puts the merged piece at the pair's left position and unlinks the
right one, scanning each word left to right as a list-based merge would. Only the pairs beside a
merged position change, so `pair_count` (pair -> frequency-weighted count) is updated by
difference, and `where` records the left positions at which a pair appeared (some since taken
apart: a merge checks each one). The first merges touch tens of thousands of words and run as
numpy operations on the arrays; most later ones touch a few words and run as a Python loop over
the same memory (its two neighbour updates are written out, not factored into a call: it is the
learner's hot loop). A pair is keyed by a two-character string: each piece id has a one-character code.
"""

from __future__ import annotations

import gc
import heapq
import re
from array import array
from collections import Counter, defaultdict
from contextlib import contextmanager

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"

_VECTORISE_FROM_POSITIONS = 192  # a merge with at least this many recorded positions runs in numpy
_PAIR_SHIFT = 21  # piece ids are below 2**21: a pair of ids packs into one int64 key
_SURROGATES = 0xD800  # code points 0xD800-0xDFFF are skipped: they cannot be encoded


def _code(piece_id: int) -> str:
    """The one-character code of a piece id."""
    return chr(piece_id if piece_id < _SURROGATES else piece_id + 0x800)


def _piece_id(code: str) -> int:
    point = ord(code)
    return point if point < _SURROGATES else point - 0x800


class _Pieces:
    """Piece texts <-> one-character codes; the same text always gets the same code."""

    def __init__(self) -> None:
        self.text_of: dict[str, str] = {}  # code -> piece text
        self.code_of: dict[str, str] = {}  # piece text -> code

    def code(self, text: str) -> str:
        code = self.code_of.get(text)
        if code is None:
            code = self.code_of[text] = _code(len(self.code_of))
            self.text_of[code] = text
        return code


def _encode_words(words: list[str], alphabet: list[str], pieces: _Pieces) -> list[str]:
    """Each word as the codes of its characters: the first as itself, the others as '##' + char."""
    for piece in alphabet:
        pieces.code(piece)
    first = {ord(p): pieces.code_of[p] for p in alphabet if len(p) == 1}
    inner = {ord(p[len(PREFIX):]): pieces.code_of[p] for p in alphabet if len(p) == len(PREFIX) + 1}
    return [w[0].translate(first) + w[1:].translate(inner) for w in words]


class _PairIndex:
    """The words as linked piece arrays, the pair counts, and where each pair was seen."""

    def __init__(self, codes: list[str], freq: list[int], pair_count: dict[str, int]) -> None:
        import numpy as np

        lengths = np.fromiter(map(len, codes), dtype=np.int64, count=len(codes))  # [n_words]
        points = np.frombuffer("".join(codes).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        n_positions = len(points)
        word_of = np.repeat(np.arange(len(codes)), lengths)  # [n_positions]
        ends = np.cumsum(lengths)
        next_ = np.arange(1, n_positions + 1)  # [n_positions] next live position in the word, or -1
        next_[ends - 1] = -1
        prev = np.arange(-1, n_positions - 1)  # [n_positions] previous live position, or -1
        prev[ends - lengths] = -1
        # array.array for the Python loop's element access, numpy views of the same memory for numpy
        self.piece = array("q", np.where(points < _SURROGATES, points, points - 0x800).tobytes())
        self.next, self.prev = array("q", next_.tobytes()), array("q", prev.tobytes())
        self.piece_np = np.frombuffer(self.piece, dtype=np.int64)  # [n_positions] piece id, -1 if merged away
        self.next_np = np.frombuffer(self.next, dtype=np.int64)
        self.prev_np = np.frombuffer(self.prev, dtype=np.int64)
        self.weight_np = np.asarray(freq, dtype=np.int64)[word_of]  # [n_positions] word frequency
        self.weight = self.weight_np.tolist()
        self.is_merged = np.zeros(n_positions, dtype=bool)  # scratch marks for one merge
        self.scratch = np.zeros(n_positions, dtype=np.int64)  # scratch indices for one merge
        self.codes = [_code(i) for i in range(int(self.piece_np.max(initial=0)) + 1)]  # piece id -> code
        self.pair_count = pair_count
        self.where_arrays: dict[str, list] = {}  # pair -> arrays of left positions (numpy merges)
        self.where: defaultdict[str, list[int]] = defaultdict(list)  # pair -> left positions (loop merges)
        left = np.flatnonzero(next_ >= 0)
        self._count(self._keys(self.piece_np[left], self.piece_np[next_[left]]), self.weight_np[left], left)

    @staticmethod
    def _keys(left_ids, right_ids):
        return (left_ids << _PAIR_SHIFT) | right_ids

    def merge(self, pair: str, merged: str) -> set[str]:
        """Replace `pair` by the piece `merged` in every word; return the pairs that gained occurrences.

        Each is a pair with `merged` on one side; the merged pair's own count is dropped.
        """
        merged_id = _piece_id(merged)
        while len(self.codes) <= merged_id:
            self.codes.append(_code(len(self.codes)))
        arrays, positions = self.where_arrays.pop(pair, []), self.where.pop(pair, [])
        if len(positions) + sum(len(at) for at in arrays) >= _VECTORISE_FROM_POSITIONS:
            gained = self._merge_vectorised(pair, merged_id, arrays, positions)
        else:
            for at in arrays:
                positions.extend(at.tolist())
            if pair[0] == pair[1]:
                positions.sort()  # runs like x x x must be merged from the left
            gained = self._merge_loop(pair, merged, merged_id, positions)
        self.pair_count.pop(pair, None)
        return gained

    def _merge_loop(self, pair: str, merged: str, merged_id: int, positions: list[int]) -> set[str]:
        """The merge as a Python loop over the pair's recorded positions.

        A position recorded twice is skipped the second time: its piece is the merged one by then.
        """
        piece, next_, prev, weight, codes = self.piece, self.next, self.prev, self.weight, self.codes
        pair_count, where = self.pair_count, self.where
        count_of = pair_count.get
        left_code, right_code = pair
        left_id, right_id = _piece_id(left_code), _piece_id(right_code)
        gained: set[str] = set()
        gain = gained.add
        for at in positions:
            if piece[at] != left_id:
                continue  # taken apart since it was recorded
            right = next_[at]
            if right < 0 or piece[right] != right_id:
                continue
            f = weight[at]
            before, after = prev[at], next_[right]
            if before >= 0:  # (x, left) becomes (x, merged); x may be this merge's own piece
                before_code = codes[piece[before]]
                pair_count[before_code + left_code] -= f
                p = before_code + merged
                pair_count[p] = count_of(p, 0) + f
                where[p].append(before)
                gain(p)
            if after >= 0:  # (right, y) becomes (merged, y)
                after_code = codes[piece[after]]
                pair_count[right_code + after_code] -= f
                p = merged + after_code
                pair_count[p] = count_of(p, 0) + f
                where[p].append(at)
                gain(p)
                prev[after] = at
            piece[at], piece[right], next_[at] = merged_id, -1, after
        return gained

    def _merge_vectorised(self, pair: str, merged_id: int, arrays: list, positions: list[int]) -> set[str]:
        """The merge as numpy operations on all of the pair's recorded positions at once."""
        import numpy as np

        piece, next_, prev, is_merged = self.piece_np, self.next_np, self.prev_np, self.is_merged
        left_id, right_id = _piece_id(pair[0]), _piece_id(pair[1])
        at, right = self._occurrences(np.concatenate(arrays + [np.asarray(positions, dtype=np.int64)]),
                                      left_id, right_id)
        weight = self.weight_np[at]
        before, after = prev[at], next_[right]
        has_after = after >= 0
        is_merged[right] = True  # (right piece, left) between two merges: counted once, as the first's
        lost_left = before >= 0
        lost_left[lost_left] = ~is_merged[before[lost_left]]
        is_merged[right] = False
        lost_keys = [self._keys(piece[before[lost_left]], left_id), self._keys(right_id, piece[after[has_after]])]
        lost_weights = [-weight[lost_left], -weight[has_after]]
        piece[at], piece[right] = merged_id, -1
        next_[at] = after
        prev[after[has_after]] = at[has_after]
        before = prev[at]
        is_merged[at] = True  # (merged, merged): counted once, as the first's right pair
        gain_left = before >= 0
        gain_left[gain_left] = ~is_merged[before[gain_left]]
        is_merged[at] = False
        gained_keys = [self._keys(piece[before[gain_left]], merged_id), self._keys(merged_id, piece[after[has_after]])]
        n_lost = sum(len(k) for k in lost_keys)
        return self._count(
            np.concatenate(lost_keys + gained_keys),
            np.concatenate(lost_weights + [weight[gain_left], weight[has_after]]),
            np.concatenate([np.full(n_lost, -1), before[gain_left], at[has_after]]),
        )

    def _occurrences(self, seen, left_id: int, right_id: int):
        """Left and right positions of the pair's greedy (left-to-right, non-overlapping) occurrences."""
        import numpy as np

        piece, next_ = self.piece_np, self.next_np
        right = next_[seen]
        live = (piece[seen] == left_id) & (right >= 0)
        at, right = seen[live], right[live]
        at = at[piece[right] == right_id]
        if left_id != right_id:  # occurrences cannot overlap: only drop positions recorded twice
            index = np.arange(len(at))
            self.scratch[at] = index  # one of the equal positions' indices sticks
            at = at[self.scratch[at] == index]
            return at, next_[at]
        at = np.unique(at)
        right = next_[at]
        if len(at) > 1:  # runs like x x x: merge the 1st, 3rd, ... of each
            index = np.arange(len(at))
            follows = np.zeros(len(at), dtype=bool)
            follows[1:] = right[:-1] == at[1:]
            run_start = np.maximum.accumulate(np.where(follows, 0, index))
            keep = (index - run_start) % 2 == 0
            at, right = at[keep], right[keep]
        return at, right

    def _count(self, keys, weights, positions) -> set[str]:
        """Add (signed) weights to pair counts and record the positions >= 0 where pairs now occur.

        Returns the pairs that gained an occurrence. Entries are sorted by pair, with lost ones
        (position -1) before gained ones, so each pair's new positions are one slice.
        """
        import numpy as np

        if not len(keys):
            return set()
        is_new = positions >= 0
        order = np.argsort((keys << 1) | is_new, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.diff(sorted_keys, prepend=-1))
        totals = np.add.reduceat(weights[order], starts).tolist()
        first_new = (starts + np.add.reduceat((~is_new[order]).astype(np.int64), starts)).tolist()
        ends = starts[1:].tolist() + [len(keys)]
        positions = positions[order]
        pair_count, where, gained = self.pair_count, self.where_arrays, set()
        count_of = pair_count.get
        for pair, total, start, end in zip(_pair_codes(sorted_keys[starts]), totals, first_new, ends):
            pair_count[pair] = count_of(pair, 0) + total
            if start < end:
                gained.add(pair)
                if pair in where:
                    where[pair].append(positions[start:end])
                else:
                    where[pair] = [positions[start:end]]
        return gained


_TWO_CHARS = re.compile("..", re.DOTALL)


def _pair_codes(keys) -> list[str]:
    """The two-character pairs of packed (left id, right id) keys, made in one pass."""
    import numpy as np

    ids = np.stack([keys >> _PAIR_SHIFT, keys & ((1 << _PAIR_SHIFT) - 1)], axis=1)  # [n_keys, 2]
    points = np.where(ids < _SURROGATES, ids, ids + 0x800).astype(np.uint32)
    return _TWO_CHARS.findall(points.tobytes().decode("utf-32-le"))


@contextmanager
def _cyclic_gc_paused():
    """Pause Python's cycle collector: the learner makes some 10^5 containers that never form cycles,
    and the collector's repeated passes over them cost about a tenth of its time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def learn_vocab(word_counts: Counter, vocab_size: int, min_pair_count: int = 2) -> list[str]:
    """Specials, the sorted alphabet, then merged pieces in merge order, up to `vocab_size` tokens.

    Each step merges the most frequent adjacent pair (ties: the smallest (left, right) text) in
    every word, until `vocab_size` tokens or no pair occurs `min_pair_count` times. A merge whose
    text is already a token merges the words but adds no token. The result depends only on the
    counts, never on hashing or on the order of `word_counts`.
    """
    if min_pair_count < 1:
        raise ValueError(f"min_pair_count must be at least 1, got {min_pair_count}")
    alphabet = sorted({w[0] for w in word_counts} | {PREFIX + c for c in set("".join(w[1:] for w in word_counts))})
    vocab = list(SPECIAL_TOKENS) + alphabet
    words = [w for w, n in word_counts.items() if n > 0]  # words that count nothing merge nothing
    freq = [n for n in word_counts.values() if n > 0]
    with _cyclic_gc_paused():
        pieces = _Pieces()
        pair_count: dict[str, int] = {}
        index = _PairIndex(_encode_words(words, alphabet, pieces), freq, pair_count)
        return _merge_until(vocab, vocab_size, min_pair_count, index, pieces)


def _merge_until(vocab: list[str], vocab_size: int, min_pair_count: int, index: _PairIndex,
                 pieces: _Pieces) -> list[str]:
    """Append merged pieces to `vocab` in merge order until it is full or no pair is frequent enough."""
    text_of, pair_count, seen = pieces.text_of, index.pair_count, set(vocab)
    # The queue holds, for every pair that can still be merged (count >= min_pair_count), an entry
    # whose count is at least the pair's count: entries are added when a count rises and refreshed
    # when they reach the front stale, so the first up-to-date entry is always the most frequent
    # pair (equal counts: the smallest (left, right) text).
    heap = [(-c, text_of[p[0]], text_of[p[1]], p) for p, c in pair_count.items() if c >= min_pair_count]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while len(vocab) < vocab_size and heap:
        neg_count, left, right, pair = pop(heap)
        count = pair_count.get(pair, 0)
        if count != -neg_count:
            if count >= min_pair_count and count < -neg_count:
                push(heap, (-count, left, right, pair))  # fell since queued: requeue
            continue
        new = left + right[len(PREFIX):]
        for p in index.merge(pair, pieces.code(new)):
            count = pair_count[p]
            if count >= min_pair_count:
                push(heap, (-count, text_of[p[0]], text_of[p[1]], p))
        if new not in seen:
            seen.add(new)
            vocab.append(new)
    return vocab
