"""Fine-tuning and prediction for sequence classification, with length-bucketed dynamic padding.

Examples are `Ragged` token sequences ([CLS] ... [SEP]). Batches group examples of similar length
and pad only to the longest in the batch, instead of padding everything to 128.

The same loop trains distillation students: labels may be hard (class ids [n]) or soft (teacher logits
[n, classes] float32, loss `soft_target_loss`), examples may be token distributions (any object with
`lengths()` and `batch(rows, pad_id, device)`, e.g. `workers.distill.sets.SoftTokens`), and
`FinetuneSettings.max_steps` fixes the number of steps whatever the size of the training set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from workers.model.devices import describe, to_device
from workers.model.precision import choice_stats, resolve_here
from workers.text.corpus import Ragged
from workers.train.pretrain import autocast
from workers.train.schedule import make_optimizer
from workers.train.seeds import numpy_rng, seed_global_torch

BUCKET_BATCHES = 50  # a bucket spans this many batches: enough to sort by length, small enough to stay random


@dataclass(frozen=True)
class FinetuneSettings:
    seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    precision: str  # "auto" | "fp32" | "bf16" (`finetune` resolves "auto" on the device it runs on)
    max_steps: int | None = None  # None: `epochs` passes; else exactly this many steps (epochs repeat as needed)
    soft_target_temperature: float = 20.0  # T of soft_target_loss, used when labels are soft


@dataclass(frozen=True)
class TokenDistributions:
    """A batch of soft tokens: position (i, j) is the distribution `probs[i, j]` over the vocabulary ids
    `ids[i, j]` (both [batch, seq, k]); a model embeds it as the probability-weighted sum of its word
    embeddings, so every model with the same vocabulary reads the same examples."""

    ids: torch.Tensor  # [b, s, k] int64
    probs: torch.Tensor  # [b, s, k] float32, each [i, j] sums to 1


def pad_batch(examples: Ragged, rows: np.ndarray, pad_id: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [len(rows), longest row], padded with `pad_id`, on `device`.

    Examples that are not `Ragged` (soft tokens) build their own batch: (TokenDistributions, mask)."""
    if not isinstance(examples, Ragged):
        return examples.batch(rows, pad_id, device)
    lengths = examples.lengths()[rows]
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    for j, i in enumerate(rows):
        ids[j, :lengths[j]] = examples.row(int(i))
    input_ids = to_device(torch.from_numpy(ids), device)
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


def classifier_logits(model, tokens, attention_mask: torch.Tensor) -> torch.Tensor:
    """Class logits [b, classes] of a BertForSequenceClassification for token ids [b, s] or for
    `TokenDistributions` (embedded as probability-weighted sums of the model's word embeddings)."""
    if not isinstance(tokens, TokenDistributions):
        return model(input_ids=tokens, attention_mask=attention_mask).logits
    table = model.get_input_embeddings().weight  # [vocab, h]
    b, s, k = tokens.ids.shape
    embeds = F.embedding_bag(tokens.ids.reshape(b * s, k), table, mode="sum",
                             per_sample_weights=tokens.probs.reshape(b * s, k).to(table.dtype))
    return model(inputs_embeds=embeds.view(b, s, -1), attention_mask=attention_mask).logits


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(log_softmax(student / T) || softmax(teacher / T)) in torch's `kl_div` convention (input: the
    student's log-probabilities, target: the teacher's probabilities), summed over classes and averaged
    over the batch ("batchmean"): CV-DD's post-evaluation loss. Both logits [b, classes]."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.softmax(teacher_logits.float() / temperature, dim=-1), reduction="batchmean")


def task_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy for hard labels (class ids [b]), `soft_target_loss` for soft ones (logits [b, classes])."""
    if labels.is_floating_point():
        return soft_target_loss(logits, labels, temperature)
    return F.cross_entropy(logits, labels)


def finetune_step(model, optimizer, scheduler, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor, settings: FinetuneSettings, step: int) -> torch.Tensor:
    """One optimizer step on a padded batch (input_ids/attention_mask [b, s], labels [b] class ids or
    [b, classes] teacher logits, all on the model's device; input_ids may be `TokenDistributions`);
    returns the loss as a detached tensor on the device (reading it waits for the device: `finetune` reads
    it once per epoch). `finetune` runs it on length-bucketed batches."""
    seed_global_torch(settings.seed, "finetune/dropout", step)
    with autocast(settings.precision, attention_mask.device):
        logits = classifier_logits(model, input_ids, attention_mask)
    loss = task_loss(logits.float(), labels, settings.soft_target_temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss.detach()


def finetune(model, examples: Ragged, labels: np.ndarray, pad_id: int, settings: FinetuneSettings,
             on_log: Callable[[dict], None] | None = None,
             on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
             view: Callable | None = None) -> dict:
    """Train all weights of `model` (a BertForSequenceClassification); returns {"steps", "train_s", ...}.

    `on_epoch(epoch, model)`, when given, runs after each epoch (1-based), e.g. to measure validation
    accuracy for a trial scheduler; the model is back in training mode afterwards. Every step re-seeds
    its own random streams, so an evaluation there changes nothing that is learned.

    `labels`: class ids [n] (cross-entropy) or teacher logits [n, classes] float32 (soft_target_loss).

    `view(input_ids, attention_mask, rows, step) -> (input_ids, attention_mask, labels)`, when given, replaces
    each padded batch by what the step trains on: a distillation student's augmented view of its rows,
    labelled on that view (workers/distill/students.py); `labels` is then not read."""
    lengths = examples.lengths()
    steps_per_epoch = math.ceil(len(lengths) / settings.batch_size)
    epochs = settings.epochs if settings.max_steps is None else math.ceil(settings.max_steps / steps_per_epoch)
    total = steps_per_epoch * epochs if settings.max_steps is None else settings.max_steps
    optimizer, scheduler = make_optimizer(model, settings.lr, settings.weight_decay,
                                          int(settings.warmup_ratio * total), total)
    device = next(model.parameters()).device
    choice = resolve_here(settings.precision, device)  # the precision chosen here, and why
    settings = replace(settings, precision=choice.precision)
    model.train()
    step, train_s, examples_seen, loss, loss_value = 0, 0.0, 0, None, math.nan
    for epoch in range(epochs):
        rng = numpy_rng(settings.seed, "finetune/order", epoch)
        t0 = time.perf_counter()
        for rows in bucketed_batches(lengths, settings.batch_size, rng)[:total - step]:
            input_ids, attention_mask = pad_batch(examples, rows, pad_id, device)
            if view is None:
                targets = to_device(torch.from_numpy(labels[rows]), device)
            else:
                input_ids, attention_mask, targets = view(input_ids, attention_mask, rows, step)
            loss = finetune_step(model, optimizer, scheduler, input_ids, attention_mask, targets, settings, step)
            examples_seen += len(rows)
            step += 1
        # the epoch's last loss; reading it waits for the device, so the epoch's time includes all its steps
        loss_value = math.nan if loss is None else float(loss)
        train_s += time.perf_counter() - t0
        if on_log:
            on_log({"phase": "finetune", "epoch": epoch + 1, "epochs": epochs, "loss": loss_value})
        if on_epoch:
            on_epoch(epoch + 1, model)
            model.train()
    return {"steps": step, "train_s": train_s, "examples_per_s": examples_seen / train_s if train_s else 0.0,
            "final_loss": loss_value, "device": describe(device), **choice_stats(choice)}


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
            logits = classifier_logits(model, input_ids, attention_mask).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(order), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    return out
