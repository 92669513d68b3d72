"""Token overlap: both measures on hand-made texts with known answers, and corpora of one size whose
measured overlap differs (real Wikipedia articles and AG News training text)."""

from __future__ import annotations

import pytest

from orchestrator.run.prepare import tokenizer_for
from workers.data import loading as wdata
from workers.text.overlap import (
    WordSplitter,
    cut_to_tokens,
    measure_overlap,
    rank_articles,
    ranked_corpus,
    task_mix_corpus,
    token_counts,
)
from workers.text.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(data_root):
    return load_tokenizer(tokenizer_for(data_root, 2000, 60, 0, echo=lambda *_: None))


@pytest.fixture(scope="module")
def task_texts(data_root):
    return wdata.load_task(data_root, "ag_news", 100, 10, 10, 0).train_texts


def test_words_follow_the_tokenizers_normalisation_and_pre_tokenisation(tokenizer):
    splitter = WordSplitter(tokenizer)
    assert splitter.words("The CAT's Café, [SEP] re-run!") == ["the", "cat", "'", "s", "cafe", ",", "re", "-", "run", "!"]


def test_type_and_occurrence_overlap_on_hand_made_texts(tokenizer):
    task = ["The cat sat.", "THE cat ran!"]  # words: the cat sat . the cat ran !  (6 types, 8 occurrences)
    corpus = ["a Cat sat down"]  # shares the types cat, sat: 2 of 6; occurrences cat, cat, sat: 3 of 8
    got = measure_overlap(task, corpus, tokenizer)
    assert got["task_word_types"] == 6 and got["task_word_occurrences"] == 8
    assert got["type_overlap"] == pytest.approx(2 / 6)
    assert got["occurrence_overlap"] == pytest.approx(3 / 8)


def test_accents_case_and_special_tokens(tokenizer):
    got = measure_overlap(["Café [CLS] café [MASK] naïve"], ["CAFE"], tokenizer)
    # special tokens are not words; "café" is "cafe" after normalisation: types {cafe, naive}, 3 occurrences
    assert (got["task_word_types"], got["task_word_occurrences"]) == (2, 3)
    assert got["type_overlap"] == pytest.approx(1 / 2) and got["occurrence_overlap"] == pytest.approx(2 / 3)


def test_full_and_empty_overlap(tokenizer):
    assert measure_overlap(["one two"], ["two one three"], tokenizer)["type_overlap"] == 1.0
    none = measure_overlap(["one two"], ["three"], tokenizer)
    assert none["type_overlap"] == 0.0 and none["occurrence_overlap"] == 0.0


def test_a_cut_keeps_whole_words_and_encodes_to_the_tokens_it_says(tokenizer):
    text = "Photosynthesis converts light energy into chemical energy in chloroplasts."
    total = int(token_counts([text], tokenizer)[0])
    for budget in range(1, total + 1):
        cut, tokens = cut_to_tokens(text, budget, tokenizer)
        assert tokens <= budget and int(token_counts([cut], tokenizer)[0]) == tokens
        assert text.startswith(cut)
        at_word_end = cut in ("", text) or not (cut[-1].isalnum() and text[len(cut)].isalnum())
        assert at_word_end, f"{cut!r} splits a word"


def test_ranked_corpora_have_one_size_and_different_measured_overlap(data_root, tokenizer, task_texts):
    pool = wdata.pretraining_articles(data_root, 300, 0)
    budget = 60_000
    ranking = rank_articles(pool, task_texts, tokenizer)
    rich = ranked_corpus(pool, ranking, tokenizer, budget, quantile=0.0)
    poor = ranked_corpus(pool, ranking, tokenizer, budget, quantile=1.0)
    for corpus in (rich, poor):
        assert budget - 50 <= corpus.tokens <= budget
        assert int(token_counts(corpus.texts, tokenizer).sum()) == corpus.tokens
    high = measure_overlap(task_texts, rich.texts, tokenizer)
    low = measure_overlap(task_texts, poor.texts, tokenizer)
    assert high["occurrence_overlap"] > low["occurrence_overlap"] + 0.02
    assert high["type_overlap"] > low["type_overlap"] + 0.05


def test_mixing_task_text_raises_overlap_at_one_size(data_root, tokenizer, task_texts):
    pool = wdata.pretraining_articles(data_root, 60, 0)
    budget = 12_000
    plain = task_mix_corpus(pool, task_texts, tokenizer, budget, task_share=0.0)
    mixed = task_mix_corpus(pool, task_texts, tokenizer, budget, task_share=0.5)
    assert plain.task_texts == 0 and mixed.task_texts > 0
    assert abs(plain.tokens - mixed.tokens) <= 50
    assert (measure_overlap(task_texts, mixed.texts, tokenizer)["type_overlap"]
            > measure_overlap(task_texts, plain.texts, tokenizer)["type_overlap"] + 0.1)


def test_an_unreachable_task_share_names_the_reachable_range(data_root, tokenizer, task_texts):
    pool = wdata.pretraining_articles(data_root, 60, 0)
    with pytest.raises(ValueError, match=r"task_share=0.5 .*reachable task_share at 1,000,000 tokens is 0 to 0\.0"):
        task_mix_corpus(pool, task_texts, tokenizer, 1_000_000, task_share=0.5)
