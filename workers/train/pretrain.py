"""The member pre-training loop (masked LM), used by every command that pre-trains.

Speed comes from three choices that change nothing that is learned:
- the vocabulary decoder runs only at the masked positions (about 15% of tokens), not at all of them;
- packed blocks carry no padding, so no attention mask is built (the authors pad every article);
- bf16 autocast where the hardware runs it natively (`precision: auto`, see workers/model/precision.py) or
  where the config asks for it (`precision: bf16`);
- the loss is read back from the device only when it is logged or checkpointed, so on a GPU the host
  queues the next steps while the device works (a read every step waits for the device each time).
`mlm_loss` equals `BertForMaskedLM(..., labels=...)`'s loss on the same batch (tests check it).
With `compile` on, the forward pass and the loss run through `torch.compile` (`compiled_mlm_loss`); its
random draws are torch's own (inductor's `fallback_random`), so on a CPU a compiled member sees the dropout
masks an eager one sees and its loss curve is the eager one to float rounding (tests/test_compile.py;
scripts/gpu_compile_check.py compares the two on a GPU).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from workers.model.devices import describe, to_device
from workers.model.precision import choice_stats, resolve_here
from workers.storage import checkpoint
from workers.text.masking import IGNORE_INDEX, mask_tokens
from workers.train.schedule import make_optimizer
from workers.train.seeds import numpy_rng, seed_global_torch, torch_generator

log = logging.getLogger(__name__)

# what a pre-training checkpoint's state holds besides the weights (see `checkpoint` for the files)
RESUME_KEYS = ("optimizer", "scheduler", "step", "tokens", "train_s", "loss")


@dataclass(frozen=True)
class PretrainSettings:
    seed: int
    max_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    mask_prob: float
    precision: str  # "auto" | "fp32" | "bf16" (`pretrain` resolves "auto" on the device it runs on)
    checkpoint_every: int
    log_every: int
    compile: bool = False  # forward pass and loss through torch.compile (pays on a GPU; see compiled_mlm_loss)


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    unk: int
    vocab_size: int

    @classmethod
    def of(cls, tokenizer) -> "SpecialIds":
        return cls(tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
                   tokenizer.mask_token_id, tokenizer.unk_token_id, len(tokenizer))

    def never_masked(self) -> torch.Tensor:
        return torch.tensor([self.pad, self.cls, self.sep], dtype=torch.long)


def autocast(precision: str, device: torch.device | str = "cpu"):
    """bf16 autocast on the model's device type (CPU or CUDA); fp32 runs as is; "auto" is resolved for
    the device first (workers.model.precision)."""
    device_type = torch.device(device).type
    if precision == "auto":
        precision = resolve_here(precision, device_type).precision
    return torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def mlm_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """Mean cross-entropy over masked positions, decoding only those positions.

    `model` is a `BertForMaskedLM`; input_ids/labels [batch, seq]; labels -100 where not masked.
    """
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [b, s, h]
    chosen = labels != IGNORE_INDEX  # [b, s]
    logits = model.cls(hidden[chosen])  # [n_masked, vocab]
    return F.cross_entropy(logits.float(), labels[chosen])


def _mlm_loss_at(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """`mlm_loss` with the masked positions given: `positions` [n_masked] flat indices into [b*s] (row-major, as
    a boolean mask selects them), `targets` [n_masked]. No data-dependent shape inside, so it compiles whole."""
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [b, s, h]
    logits = model.cls(hidden.flatten(0, 1).index_select(0, positions))  # [n_masked, vocab]
    return F.cross_entropy(logits.float(), targets)


COMPILE_BACKEND = "inductor"  # torch.compile's backend for `compile` (tests may choose a faster one)


@functools.cache
def compiled_mlm_loss(backend: str):
    """`_mlm_loss_at` through `torch.compile` (compiled at the first call, again for a new model shape).

    The number of masked positions changes every step: that axis is marked dynamic at each call, so one
    graph serves every step. Inductor's `fallback_random` keeps dropout on torch's generator (the member's
    `pretrain/dropout` stream, seeded per step), so masks equal the eager loop's."""
    options = {"fallback_random": True} if backend == "inductor" else None
    return torch.compile(_mlm_loss_at, backend=backend, options=options)


def masked_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices of the masked positions, their targets) for labels [b, s] (-100 where not masked)."""
    flat = labels.flatten()
    positions = (flat != IGNORE_INDEX).nonzero().squeeze(1)
    return positions, flat.index_select(0, positions)


def batch_at(blocks: np.ndarray, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Rows of the batch of `step`: epochs are seeded permutations of the blocks, so any step is addressable."""
    n = len(blocks)
    per_epoch = max(1, n // batch_size) if n >= batch_size else 1
    epoch, index = divmod(step, per_epoch)
    order = numpy_rng(seed, "pretrain/order", epoch).permutation(n)
    rows = order[index * batch_size:(index + 1) * batch_size] if n >= batch_size else order
    return blocks[rows]


def train_step(model, optimizer, scheduler, batch: torch.Tensor, special: SpecialIds,
               settings: PretrainSettings, step: int) -> tuple[float, int]:
    """One optimizer step on `batch` [b, s]; returns (loss, real tokens in the batch)."""
    loss, real_tokens = queue_step(model, optimizer, scheduler, batch, special, settings, step)
    return loss.item(), real_tokens


def queue_step(model, optimizer, scheduler, batch: torch.Tensor, special: SpecialIds,
               settings: PretrainSettings, step: int) -> tuple[torch.Tensor, int]:
    """`train_step` without reading the loss back: returns (the loss as a 0-d tensor on the model's device, real
    tokens). On a GPU nothing here waits for the device, so the host can queue the next step at once."""
    seed_global_torch(settings.seed, "pretrain/dropout", step)
    gen = torch_generator(settings.seed, "pretrain/mask", step)
    inputs, labels = mask_tokens(batch, special.never_masked(), special.mask, special.vocab_size,
                                 settings.mask_prob, gen)
    positions, targets = masked_positions(labels)  # on the CPU: no device read to find them
    is_real = batch != special.pad
    real_tokens = int(is_real.sum())
    attention_mask = None if bool(is_real.all()) else is_real.long()
    device = next(model.parameters()).device
    if device.type != "cpu":
        inputs, positions, targets = (to_device(t, device) for t in (inputs, positions, targets))
        attention_mask = None if attention_mask is None else to_device(attention_mask, device)
    if settings.compile:
        torch._dynamo.mark_dynamic(positions, 0)
        torch._dynamo.mark_dynamic(targets, 0)
    loss_at = compiled_mlm_loss(COMPILE_BACKEND) if settings.compile else _mlm_loss_at
    with autocast(settings.precision, device):
        loss = loss_at(model, inputs, attention_mask, positions, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss.detach(), real_tokens


def pretrain(model, blocks: np.ndarray, special: SpecialIds, settings: PretrainSettings,
             checkpoint_dir: str | Path | None = None,
             on_log: Callable[[dict], None] | None = None) -> dict:
    """Pre-train `model` (a BertForMaskedLM) on `blocks` [n, seq_len] for settings.max_steps steps.

    Resumes from the newest checkpoint in `checkpoint_dir` if one exists; the result is the same as
    an uninterrupted run because every step's randomness is derived from (seed, step).
    Returns {"steps", "tokens", "train_s", "tokens_per_s", "final_loss", "precision", "precision_setting",
    "precision_reason"} (the precision chosen on this device, and why).
    """
    choice = resolve_here(settings.precision, next(model.parameters()).device)
    settings = replace(settings, precision=choice.precision)
    optimizer, scheduler = make_optimizer(model, settings.lr, settings.weight_decay,
                                          settings.warmup_steps, settings.max_steps)
    start, tokens, train_s, last_loss = 0, 0, 0.0, math.nan
    ckpt = checkpoint.latest(checkpoint_dir, RESUME_KEYS) if checkpoint_dir else None
    if ckpt is not None:
        state = checkpoint.load_state(ckpt, RESUME_KEYS)  # safetensors + JSON only, never a pickle
        device = next(model.parameters()).device
        model.load_state_dict(checkpoint.load_weights(ckpt, device), strict=False)
        model.tie_weights()
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, tokens, train_s, last_loss = state["step"], state["tokens"], state["train_s"], state["loss"]
        log.info("resumed pre-training from %s (step %d)", ckpt, start)
    model.train()
    window_tokens, window_t0 = 0, time.perf_counter()
    for step in range(start, settings.max_steps):
        t0 = time.perf_counter()
        batch = torch.from_numpy(batch_at(blocks, step, settings.batch_size, settings.seed)).long()
        loss, real = queue_step(model, optimizer, scheduler, batch, special, settings, step)
        done = step + 1
        logs = on_log is not None and (done % settings.log_every == 0 or done == settings.max_steps)
        saves = bool(checkpoint_dir) and (done % settings.checkpoint_every == 0 or done == settings.max_steps)
        if logs or saves or done == settings.max_steps:
            last_loss = loss.item()  # waits for the device: the steps queued since the last read count here
        train_s += time.perf_counter() - t0
        tokens += real
        window_tokens += real
        if logs:
            now = time.perf_counter()
            on_log({"phase": "pretrain", "step": done, "max_steps": settings.max_steps, "loss": last_loss,
                    "lr": scheduler.get_last_lr()[0], "tokens_per_s": window_tokens / max(now - window_t0, 1e-9)})
            window_tokens, window_t0 = 0, now
        if saves:
            checkpoint.save(checkpoint_dir, done, model, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": done, "tokens": tokens, "train_s": train_s, "loss": last_loss,
            })
    return {"steps": settings.max_steps, "tokens": tokens, "train_s": train_s,
            "tokens_per_s": tokens / train_s if train_s else 0.0, "final_loss": last_loss,
            "device": describe(next(model.parameters()).device), **choice_stats(choice)}
