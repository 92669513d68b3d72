"""Tokenizer determinism and masked-LM corruption statistics, on real Wikipedia text."""

from __future__ import annotations

import pytest
import torch

from workers.data.loading import pretraining_articles
from workers.text.corpus import encode, pack_blocks
from workers.text.masking import IGNORE_INDEX, mask_tokens
from workers.text.tokenizer import load_tokenizer, train_wordpiece
from workers.text.wordpiece import SPECIAL_TOKENS
from workers.train.pretrain import SpecialIds


@pytest.fixture(scope="module")
def articles(data_root):
    return pretraining_articles(data_root, 40, order_seed=0)


@pytest.fixture(scope="module")
def tokenizer(articles):
    return train_wordpiece(articles, vocab_size=1500)


def test_tokenizer_training_is_deterministic_and_reloads(articles, tokenizer, tmp_path):
    again = train_wordpiece(articles, vocab_size=1500)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert len(tokenizer) == 1500
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    loaded = load_tokenizer(tmp_path / "tok")  # transformers.AutoTokenizer
    text = articles[3][:500]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = loaded(text)["input_ids"]
    assert ids[0] == loaded.cls_token_id and ids[-1] == loaded.sep_token_id


def test_masking_statistics_on_real_text(articles, tokenizer):
    sp = SpecialIds.of(tokenizer)
    blocks = torch.from_numpy(pack_blocks(encode(tokenizer, articles, special=False), 128, sp.cls, sp.sep, sp.pad)).long()
    gen = torch.Generator().manual_seed(0)
    corrupted, labels = mask_tokens(blocks, sp.never_masked(), sp.mask, sp.vocab_size, 0.15, gen)
    special = torch.isin(blocks, sp.never_masked())
    chosen = labels != IGNORE_INDEX
    n_candidates = int((~special).sum())
    assert n_candidates > 50_000
    assert not bool((chosen & special).any()), "special tokens are never chosen"
    assert torch.equal(labels[chosen], blocks[chosen])
    assert abs(chosen.sum().item() / n_candidates - 0.15) < 0.005
    n = chosen.sum().item()
    as_mask = (corrupted[chosen] == sp.mask).sum().item() / n
    kept = (corrupted[chosen] == blocks[chosen]).sum().item() / n
    assert abs(as_mask - 0.80) < 0.01
    assert abs(kept - 0.10 - 0.1 / sp.vocab_size) < 0.01  # 10% kept, plus random draws of the same id
    assert abs((1 - as_mask - kept) - 0.10) < 0.01
    assert torch.equal(corrupted[~chosen], blocks[~chosen]), "unchosen tokens are untouched"


def test_masking_is_a_function_of_the_generator(tokenizer):
    sp = SpecialIds.of(tokenizer)
    ids = torch.randint(5, sp.vocab_size, (4, 64), generator=torch.Generator().manual_seed(1))
    a = mask_tokens(ids, sp.never_masked(), sp.mask, sp.vocab_size, 0.15, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, sp.never_masked(), sp.mask, sp.vocab_size, 0.15, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, sp.never_masked(), sp.mask, sp.vocab_size, 0.15, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
