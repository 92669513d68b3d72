"""Fine-tuning and prediction for sequence classification, with length-bucketed dynamic padding.

Examples are `Ragged` token sequences ([CLS] ... [SEP]). Batches group examples of similar length
and pad only to the longest in the batch, instead of padding everything to 128.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from workers.corpus import Ragged
from workers.pretrain import autocast
from workers.schedule import make_optimizer
from workers.seeds import numpy_rng, seed_global_torch

BUCKET_BATCHES = 50  # a bucket spans this many batches: enough to sort by length, small enough to stay random


@dataclass(frozen=True)
class FinetuneSettings:
    seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    precision: str


def pad_batch(examples: Ragged, rows: np.ndarray, pad_id: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [len(rows), longest row], padded with `pad_id`, on `device`."""
    lengths = examples.lengths()[rows]
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    for j, i in enumerate(rows):
        ids[j, :lengths[j]] = examples.row(int(i))
    input_ids = torch.from_numpy(ids).to(device)
    return input_ids, (input_ids != pad_id).long()


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of indices in which lengths are similar (shuffle, sort within buckets, shuffle batches)."""
    order = rng.permutation(len(lengths))
    span = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), span):
        bucket = order[start:start + span]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches.extend(bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def finetune_step(model, optimizer, scheduler, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor, settings: FinetuneSettings, step: int) -> float:
    """One optimizer step on a padded batch (input_ids/attention_mask [b, s], labels [b], all on the
    model's device); returns the loss. `finetune` runs it on length-bucketed batches."""
    seed_global_torch(settings.seed, "finetune/dropout", step)
    with autocast(settings.precision, input_ids.device):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss.item()


def finetune(model, examples: Ragged, labels: np.ndarray, pad_id: int, settings: FinetuneSettings,
             on_log: Callable[[dict], None] | None = None) -> dict:
    """Train all weights of `model` (a BertForSequenceClassification); returns {"steps", "train_s", ...}."""
    lengths = examples.lengths()
    steps_per_epoch = math.ceil(len(lengths) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    optimizer, scheduler = make_optimizer(model, settings.lr, settings.weight_decay,
                                          int(settings.warmup_ratio * total), total)
    device = next(model.parameters()).device
    model.train()
    step, train_s, examples_seen, loss_value = 0, 0.0, 0, math.nan
    for epoch in range(settings.epochs):
        rng = numpy_rng(settings.seed, "finetune/order", epoch)
        for rows in bucketed_batches(lengths, settings.batch_size, rng):
            t0 = time.perf_counter()
            input_ids, attention_mask = pad_batch(examples, rows, pad_id, device)
            loss_value = finetune_step(model, optimizer, scheduler, input_ids, attention_mask,
                                       torch.from_numpy(labels[rows]).to(device), settings, step)
            train_s += time.perf_counter() - t0
            examples_seen += len(rows)
            step += 1
        if on_log:
            on_log({"phase": "finetune", "epoch": epoch + 1, "epochs": settings.epochs, "loss": loss_value})
    return {"steps": step, "train_s": train_s, "examples_per_s": examples_seen / train_s if train_s else 0.0,
            "final_loss": loss_value}


@torch.no_grad()
def predict_logits(model, examples: Ragged, pad_id: int, batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
    """Class logits [n, num_labels] float32, in the order of `examples` (batched by sorted length)."""
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort(examples.lengths(), kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        input_ids, attention_mask = pad_batch(examples, rows, pad_id, device)
        with autocast(precision, device):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(order), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    return out
