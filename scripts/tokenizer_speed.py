"""The WordPiece vocabulary learner against its previous implementation, side by side on real text.

    .venv/bin/python scripts/tokenizer_speed.py                   # 1,000 articles at 8,000; all at 30,522
    .venv/bin/python scripts/tokenizer_speed.py --old-articles 2000  # the old learner on fewer articles

For each case both learners count the words of the same Wikipedia articles and learn a vocabulary
from them; the script prints wall and CPU seconds of each step, the speed-up (old / new), and
checks that the word counts and the vocabularies (tokens and their order, hence ids) are identical.
The previous implementation is kept here only, as the reference. On this shared machine wall times
vary with the other processes; CPU seconds vary less.
"""

from __future__ import annotations

import argparse
import heapq
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

from workers.data.loading import load_wikipedia_texts
from workers.text.tokenizer import MAX_WORD_CHARS, count_words
from workers.text.wordpiece import PREFIX, SPECIAL_TOKENS, learn_vocab

# ----------------------------------------------------------------------------------------------
# The previous implementation (reference only)


def old_count_words(texts: list[str]) -> Counter:
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)) if len(w) <= MAX_WORD_CHARS)
    return counts


def _old_merged(a: str, b: str) -> str:
    return a + b[len(PREFIX):]


def old_learn_vocab(word_counts: Counter, vocab_size: int, min_pair_count: int = 2) -> list[str]:
    words = sorted(word_counts)
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
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue
        if -neg < min_pair_count:
            break
        left, right = pair
        new = _old_merged(left, right)
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
            for p, change in before.items():
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


# ----------------------------------------------------------------------------------------------
# Measuring


def timed(fn, *args):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown (lscpu has no 'Model name')"


def compare(texts: list[str], vocab_size: int) -> dict:
    """Both learners on the same texts: seconds per step and whether their outputs are identical."""
    old_counts, old_count_wall, old_count_cpu = timed(old_count_words, texts)
    old_vocab, old_learn_wall, old_learn_cpu = timed(old_learn_vocab, old_counts, vocab_size)
    new_counts, new_count_wall, new_count_cpu = timed(count_words, texts)
    new_vocab, new_learn_wall, new_learn_cpu = timed(learn_vocab, new_counts, vocab_size)
    return {
        "articles": len(texts), "vocab_size": vocab_size,
        "words": len(new_counts), "word_tokens": sum(new_counts.values()),
        "same_counts": new_counts == old_counts, "same_vocab": new_vocab == old_vocab,
        "old": {"count": (old_count_wall, old_count_cpu), "learn": (old_learn_wall, old_learn_cpu)},
        "new": {"count": (new_count_wall, new_count_cpu), "learn": (new_learn_wall, new_learn_cpu)},
    }


def report(result: dict) -> None:
    print(f"\n{result['articles']:,} articles, vocab {result['vocab_size']:,} "
          f"({result['words']:,} distinct words, {result['word_tokens']:,} word tokens)")
    print(f"  {'step':<8}{'old wall':>10}{'new wall':>10}{'speed-up':>10}"
          f"{'old cpu':>10}{'new cpu':>10}{'speed-up':>10}")
    old, new = result["old"], result["new"]
    rows = {step: (*old[step], *new[step]) for step in ("count", "learn")}
    rows["total"] = tuple(a + b for a, b in zip(rows["count"], rows["learn"]))
    for step, (old_wall, old_cpu, new_wall, new_cpu) in rows.items():
        print(f"  {step:<8}{old_wall:>9.2f}s{new_wall:>9.2f}s{old_wall / new_wall:>9.1f}x"
              f"{old_cpu:>9.2f}s{new_cpu:>9.2f}s{old_cpu / new_cpu:>9.1f}x")
    print(f"  identical word counts: {result['same_counts']}; "
          f"identical vocabulary (tokens, order, ids): {result['same_vocab']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--old-articles", type=int, default=None,
                        help="articles for the large case (default: all); the old learner is slow")
    args = parser.parse_args()
    texts = load_wikipedia_texts(args.data_root)
    large = texts if args.old_articles is None else texts[:args.old_articles]
    print(f"CPU: {cpu_model()}")
    results = [compare(texts[:1000], 8000), compare(large, 30522)]
    for result in results:
        report(result)
    if not all(r["same_counts"] and r["same_vocab"] for r in results):
        raise SystemExit("the new learner's output differs from the reference")


if __name__ == "__main__":
    main()
