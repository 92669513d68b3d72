"""BERT masked-LM corruption: 15% of non-special tokens chosen; of those 80% [MASK], 10% random, 10% kept."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens(input_ids: torch.Tensor, special_ids: torch.Tensor, mask_id: int, vocab_size: int,
                mask_prob: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (corrupted input ids, labels) for `input_ids` [batch, seq]; labels are -100 where unchosen.

    `special_ids` (1-D) lists ids never chosen ([PAD], [CLS], [SEP], ...). Draws come from `generator`
    only, so a (seed, step)-seeded generator gives the same masks on every run and after a resume.
    """
    candidates = ~torch.isin(input_ids, special_ids)
    chosen = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    corrupted = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, corrupted)
    return corrupted, labels
