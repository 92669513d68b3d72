"""Text augmentation for distillation: a random span crop, what RandomResizedCrop is to an image.

CV-DD (after SRe2L) augments every recover iteration and relabels every augmented view when it trains a
student. An image crop keeps a random contiguous region and moves it to the frame's origin at a new scale; a
flip and a colour jitter change how the same content looks. For a token sequence the crop is the piece that
carries over: a random window of an example's content (the tokens between [CLS] and the closing [SEP]) is
kept and moved to the front, so the same words arrive at other positions (the position embeddings differ, as
an image crop changes where and how large the object appears), and the loss sees a part of the example
rather than all of it. There is no resize (a sequence cannot be stretched) and no flip (reversed text is not
the same class read differently, it is no text). Token dropout was considered and not taken: it keeps every
word at its position, so it varies less of what a member reads than a crop does, and [MASK] tokens make the
view less like real text.

A window keeps a share of the content drawn uniformly from [min_share, 1] (at least one token), at a start
drawn uniformly among the positions where it fits; [CLS] and [SEP] stay. Windows are drawn from named streams
of a seed, so a view is reproducible, and the same indices crop token ids, token distributions and input
embeddings alike (`crop_index`, then `gather_positions`).
"""

from __future__ import annotations

import numpy as np
import torch

from workers.train.finetune import TokenDistributions


def draw_windows(content_lengths: np.ndarray, rng: np.random.Generator, min_share: float,
                 size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, widths) of random windows over contents of `content_lengths` [n] tokens; with `size`,
    `size` windows per example ([n, size] each). A window keeps round(share x content) tokens, share ~
    U[min_share, 1], at least 1 (0 for an empty content), starting at a uniform position where it fits."""
    content = np.asarray(content_lengths, dtype=np.int64)
    shape = content.shape if size is None else (*content.shape, size)
    content_b = content if size is None else content[:, None]
    share = rng.uniform(min_share, 1.0, size=shape)
    widths = np.minimum(content_b, np.maximum(1, np.rint(share * content_b).astype(np.int64)))
    starts = np.floor(rng.uniform(size=shape) * (content_b - widths + 1)).astype(np.int64)
    return starts, widths


def crop_index(lengths: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices [n, longest view] and view lengths [n] for examples of `lengths` [n] (with [CLS] at 0
    and [SEP] at length - 1): a view is [CLS], content[start : start + width], [SEP]. Positions past a view's
    length point at its [SEP] (they are padding: the view's attention mask leaves them out)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    view_lengths = np.where(lengths >= 2, widths + 2, lengths)
    longest = int(view_lengths.max())
    cols = np.arange(longest)[None, :]  # [1, longest]
    index = 1 + starts[:, None] + cols - 1  # content positions: 1 + start + (col - 1)
    index = np.where(cols == 0, 0, index)
    index = np.where(cols >= view_lengths[:, None] - 1, (lengths - 1)[:, None], index)
    return np.maximum(index, 0), view_lengths


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [b, s, ...] gathered along positions by index [b, s'] -> [b, s', ...]."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return torch.gather(x, 1, expanded)


def crop_batch(tokens, attention_mask: torch.Tensor, rng: np.random.Generator, min_share: float,
               pad_id: int):
    """A cropped view of a padded batch: (tokens, attention_mask) of the same kind (token ids [b, s] or
    `TokenDistributions` [b, s, k]), each example replaced by a random window of its content."""
    lengths = attention_mask.sum(dim=1).cpu().numpy()
    starts, widths = draw_windows(np.maximum(lengths - 2, 0), rng, min_share)
    index_np, view_lengths = crop_index(lengths, starts, widths)
    device = attention_mask.device
    index = torch.from_numpy(index_np).to(device)
    mask = (torch.arange(index.shape[1], device=device)[None, :]
            < torch.from_numpy(view_lengths).to(device)[:, None]).long()
    if isinstance(tokens, TokenDistributions):
        ids, probs = gather_positions(tokens.ids, index), gather_positions(tokens.probs, index)
        ids = torch.where(mask[:, :, None].bool(), ids, torch.full_like(ids, pad_id))
        return TokenDistributions(ids, probs), mask
    ids = gather_positions(tokens, index)
    return torch.where(mask.bool(), ids, torch.full_like(ids, pad_id)), mask
