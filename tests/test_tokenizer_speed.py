"""The fast WordPiece learner gives exactly the previous learner's words and vocabulary, on real text.

The previous implementation is kept below, compact, as the reference: per-text normalisation and
pre-tokenisation, and a merge loop that recounts every pair of each touched word.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workers.data.loading import pretraining_articles
from workers.text import wordpiece
from workers.text.tokenizer import count_words, train_wordpiece
from workers.text.wordpiece import learn_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from tokenizer_speed import old_count_words as reference_count_words  # noqa: E402  (the learner it replaced)
from tokenizer_speed import old_learn_vocab as reference_learn_vocab  # noqa: E402


@pytest.fixture(scope="module")
def articles(data_root):
    return pretraining_articles(data_root, 300, order_seed=1)


@pytest.fixture(scope="module")
def reference(articles):
    """The reference's word counts and 4,000-token vocabulary (speed: scripts/tokenizer_speed.py)."""
    counts = reference_count_words(articles)
    return counts, reference_learn_vocab(counts, 4000)


def test_word_counts_match_the_reference(articles, reference):
    counts = count_words(articles)
    assert counts == reference[0]
    assert len(counts) > 20_000 and any(not w.isascii() for w in counts), "real, varied text"


@pytest.mark.parametrize("vectorise_from", [0, 192, 10**9], ids=["all-numpy", "mixed", "all-loop"])
def test_vocab_matches_the_reference_token_for_token(reference, vectorise_from, monkeypatch):
    counts, reference_vocab = reference
    monkeypatch.setattr(wordpiece, "_VECTORISE_FROM_POSITIONS", vectorise_from)
    vocab = learn_vocab(counts, 4000)
    assert len(vocab) == 4000
    assert vocab == reference_vocab  # same tokens in the same order: the same ids


def test_min_pair_count_and_small_vocab_match_the_reference(articles):
    counts = reference_count_words(articles[:40])
    stopped = learn_vocab(counts, 5000, min_pair_count=5)
    assert len(stopped) < 5000, "stops when no pair is frequent enough"
    assert stopped == reference_learn_vocab(counts, 5000, min_pair_count=5)
    assert learn_vocab(counts, 10) == reference_learn_vocab(counts, 10)  # the alphabet only
    with pytest.raises(ValueError, match="min_pair_count"):
        learn_vocab(counts, 100, min_pair_count=0)


def test_training_twice_gives_the_same_vocab_and_ids(articles):
    first, again = train_wordpiece(articles[:100], 2000), train_wordpiece(articles[:100], 2000)
    assert first.get_vocab() == again.get_vocab()
    assert first.convert_ids_to_tokens(list(range(2000))) == learn_vocab(count_words(articles[:100]), 2000)
    text = articles[7][:2000]
    assert first(text)["input_ids"] == again(text)["input_ids"]


def test_vocab_does_not_depend_on_string_hashing(reference, tmp_path):
    """Two fresh interpreters with different hash seeds learn the same vocabulary as this one."""
    counts, reference_vocab = reference
    counts_file = tmp_path / "counts.json"
    counts_file.write_text(json.dumps(dict(counts)))
    program = (
        "import json, sys; from collections import Counter; from workers.text.wordpiece import learn_vocab; "
        "print(json.dumps(learn_vocab(Counter(json.load(open(sys.argv[1]))), 4000)))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", program, str(counts_file)], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True, timeout=120)
        assert json.loads(out.stdout) == reference_vocab

