"""The contenders: the authors' loops and the project's, plain torch, no Ray.

The project's side always calls the loops that training commands use (`workers.train.pretrain.train_step`,
`workers.train.finetune.finetune_step` / `predict_logits`). The reference side is the authors' way
(Rg32601/Tiny-Language-Models, nlp_bert_conv/train.py: `mlm_train`, `cls_train`): Hugging Face models
called with `labels=`, every sequence padded to 128, torch's AdamW with its defaults, no gradient clipping,
and their mixed precision (`AuthorsAmp`): `torch.cuda.amp.autocast()` with a `GradScaler`, which is fp16
with loss scaling on CUDA and does nothing on a CPU (fp32 there). Their pre-training step reads the loss
back every step (`loss.item()` for the progress bar); their fine-tuning step does not. Both sides draw from the project's named random streams (`workers.train.seeds`): masks from
`pretrain/mask` (per step), dropout from `pretrain/dropout` / `finetune/dropout` (per step), the
order of examples from `finetune/order` (per epoch; pre-training batches come from
`workers.train.pretrain.batch_at`), so the two sides see the same masks and the same data.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.timing import sync
from workers.model.bert import build_classifier, build_mlm, init_from_streams
from workers.text.corpus import Ragged
from workers.text.masking import IGNORE_INDEX, mask_tokens
from workers.train.finetune import FinetuneSettings, bucketed_batches, finetune_step, pad_batch
from workers.train.pretrain import PretrainSettings, SpecialIds, autocast, batch_at, mlm_loss, train_step
from workers.train.schedule import make_optimizer
from workers.train.seeds import numpy_rng, seed_global_torch, torch_generator

INIT_STREAM = "init/pretrained"  # a committee member's initial weights, as `workers.train.member` draws them


def seeded_mlm(config, seed: int, device: str):
    """A masked LM with a member's initial weights for `seed` (the same on every device and call)."""
    model = build_mlm(config)
    init_from_streams(model, seed, INIT_STREAM)
    return model.to(device)


def seeded_classifier(config, num_labels: int, seed: int, device: str):
    """A classifier with a member's initial weights for `seed` (head from `init/head`, as members draw it)."""
    model = build_classifier(config, num_labels)
    init_from_streams(model, seed, INIT_STREAM, head_stream="init/head")
    return model.to(device)


def mask_generator(seed: int, step: int) -> torch.Generator:
    """The masks of pre-training step `step`: the stream the member loop draws them from."""
    return torch_generator(seed, "pretrain/mask", step)


class AuthorsAmp:
    """The authors' mixed precision on `device`: `torch.cuda.amp.autocast()` (fp16) and a `GradScaler` on CUDA;
    on a CPU their autocast and scaler are no-ops, so the step runs in fp32 there."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)

    @property
    def precision(self) -> str:
        return "fp16 autocast + GradScaler" if self.cuda else "fp32"

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.cuda else nullcontext()

    def step(self, loss: torch.Tensor, optimizer, clip: float | None = None) -> None:
        """backward, optimizer step and scale update, as theirs: `scaler.scale(loss).backward()`,
        `scaler.step(optimizer)`, `scaler.update()` (plain backward and step where the scaler is off).
        `clip`: a gradient-norm clip before the step, which theirs does not have (tests compare the member
        loop, which clips, with this step on the member loop's recipe)."""
        self.scaler.scale(loss).backward()
        if clip is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)
        self.scaler.update()


# ----------------------------------------------------------------------------------------------
# Pre-training


def reference_pretrain_step(model, optimizer, amp: AuthorsAmp, batch: torch.Tensor, special: SpecialIds,
                            mask_prob: float, seed: int, step: int, clip: float | None = None) -> tuple[float, int]:
    """The authors' step (`mlm_train`): `BertForMaskedLM(input_ids, attention_mask, labels=)` on articles padded
    to 128 (vocabulary logits at every position) under their autocast, loss scaled, no clipping, the loss read
    back every step; returns (loss, real tokens).

    Masks and dropout come from the member loop's streams, so both loops see the same draws.
    """
    device = next(model.parameters()).device
    seed_global_torch(seed, "pretrain/dropout", step)
    inputs, labels = mask_tokens(batch, special.never_masked(), special.mask, special.vocab_size, mask_prob,
                                 mask_generator(seed, step))
    attention_mask = (batch != special.pad).long()
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        out = model(input_ids=inputs.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device))
    amp.step(out.loss, optimizer, clip)
    return out.loss.item(), int(attention_mask.sum())


@dataclass
class MaskCounts:
    """Masking statistics over the steps a loop ran: masked share of maskable tokens, 80/10/10 split."""

    masked: int = 0
    candidates: int = 0
    actions: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))  # [MASK], random, kept

    def add(self, batch: torch.Tensor, special: SpecialIds, mask_prob: float, generator: torch.Generator) -> None:
        inputs, labels = mask_tokens(batch, special.never_masked(), special.mask, special.vocab_size, mask_prob,
                                     generator)
        chosen = labels != IGNORE_INDEX
        self.masked += int(chosen.sum())
        self.candidates += int((~torch.isin(batch, special.never_masked())).sum())
        is_mask = inputs[chosen] == special.mask
        kept = inputs[chosen] == batch[chosen]
        self.actions += np.array([int(is_mask.sum()), int((~is_mask & ~kept).sum()), int((kept & ~is_mask).sum())])

    def stats(self) -> dict:
        total = max(1, int(self.actions.sum()))
        return {"masked_share": self.masked / max(1, self.candidates), "mask_token": self.actions[0] / total,
                "random": self.actions[1] / total, "kept": self.actions[2] / total}


class PretrainLoop:
    """One contender: a model, its optimizer and its blocks; `step()` trains one batch and returns real tokens."""

    def __init__(self, name: str, model, blocks: np.ndarray, special: SpecialIds, settings: PretrainSettings,
                 reference: bool, device: str):
        self.name, self.model, self.blocks = name, model, blocks  # blocks [n, seq_len] int32
        self.special, self.settings, self.reference, self.device = special, settings, reference, device
        self.step_index = 0
        self.losses: list[float] = []
        self.masks = MaskCounts()
        self.amp = AuthorsAmp(device) if reference else None
        if reference:
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
            self.scheduler = None
        else:
            self.optimizer, self.scheduler = make_optimizer(model, settings.lr, settings.weight_decay,
                                                            settings.warmup_steps, settings.max_steps)
        model.train()

    def step(self) -> int:
        s = self.settings
        batch = torch.from_numpy(batch_at(self.blocks, self.step_index, s.batch_size, s.seed)).long()  # [b, seq]
        if self.reference:
            loss, real = reference_pretrain_step(self.model, self.optimizer, self.amp, batch, self.special,
                                                 s.mask_prob, s.seed, self.step_index)
        else:
            loss, real = train_step(self.model, self.optimizer, self.scheduler, batch, self.special, s, self.step_index)
        sync(self.device)
        # the step's masks drawn again from its stream (draws are derived, so they are the ones it used)
        self.masks.add(batch, self.special, s.mask_prob, mask_generator(s.seed, self.step_index))
        self.losses.append(loss)
        self.step_index += 1
        return real


def loss_agreement(model, batch: np.ndarray, special: SpecialIds, mask_prob: float, seed: int,
                   precision: str) -> dict:
    """On one batch of padded articles: the member loop's `mlm_loss` against `BertForMaskedLM(..., labels=)`."""
    device = next(model.parameters()).device
    ids = torch.from_numpy(batch).long()  # [b, seq]
    inputs, labels = mask_tokens(ids, special.never_masked(), special.mask, special.vocab_size, mask_prob,
                                 mask_generator(seed, 0))
    attention_mask = (ids != special.pad).long().to(device)
    inputs, labels = inputs.to(device), labels.to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        reference = model(input_ids=inputs, attention_mask=attention_mask, labels=labels).loss.item()
        with autocast(precision, device):
            member = mlm_loss(model, inputs, labels, attention_mask).item()
    model.train(was_training)
    return {"reference_loss": reference, "member_loss": member, "abs_diff": abs(reference - member)}


# ----------------------------------------------------------------------------------------------
# Fine-tuning and prediction


def pad_to(examples: Ragged, rows: np.ndarray, pad_id: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' batches: every example padded to `length` (input_ids, attention_mask [len(rows), length])."""
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    for j, i in enumerate(rows):
        row = examples.row(int(i))[:length]
        ids[j, :len(row)] = row
    input_ids = torch.from_numpy(ids).to(device)
    return input_ids, (input_ids != pad_id).long()


def reference_finetune_step(model, optimizer, amp: AuthorsAmp, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor, labels: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The authors' step (`cls_train`): `BertForSequenceClassification(..., labels=)` under their autocast, loss
    scaled, no clipping, the loss not read back; dropout from the project's stream. Returns the loss (on the device)."""
    seed_global_torch(seed, "finetune/dropout", step)
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    amp.step(out.loss, optimizer)
    return out.loss.detach()


class FinetuneEpoch:
    """One contender of the fine-tuning comparison: `epoch()` trains once over all examples, returns their count."""

    def __init__(self, model, examples: Ragged, labels: np.ndarray, pad_id: int, settings: FinetuneSettings,
                 reference: bool, seq_len: int, device: str):
        self.model, self.examples, self.labels, self.pad_id = model, examples, labels, pad_id
        self.settings, self.reference, self.seq_len, self.device = settings, reference, seq_len, device
        self.amp = AuthorsAmp(device) if reference else None
        if reference:
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        else:
            self.optimizer, self.scheduler = make_optimizer(model, settings.lr, settings.weight_decay, 0, 1_000_000)
        self.epoch_index, self.step_index = 0, 0
        model.train()

    def _reference_batches(self, rng: np.random.Generator):
        order = rng.permutation(len(self.examples))
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            rows = order[start:start + bs]
            yield rows, pad_to(self.examples, rows, self.pad_id, self.seq_len, self.device)

    def _project_batches(self, rng: np.random.Generator):
        for rows in bucketed_batches(self.examples.lengths(), self.settings.batch_size, rng):
            yield rows, pad_batch(self.examples, rows, self.pad_id, self.device)

    def epoch(self) -> int:
        s = self.settings
        rng = numpy_rng(s.seed, "finetune/order", self.epoch_index)
        batches = self._reference_batches(rng) if self.reference else self._project_batches(rng)
        for rows, (ids, mask) in batches:
            labels = torch.from_numpy(self.labels[rows]).to(self.device)
            if self.reference:
                reference_finetune_step(self.model, self.optimizer, self.amp, ids, mask, labels, s.seed, self.step_index)
            else:
                finetune_step(self.model, self.optimizer, self.scheduler, ids, mask, labels, s, self.step_index)
            self.step_index += 1
        sync(self.device)
        self.epoch_index += 1
        return len(self.examples)


@torch.no_grad()
def reference_predict(model, examples: Ragged, pad_id: int, seq_len: int, batch_size: int, device) -> np.ndarray:
    """The authors' prediction (`cls_test`): batches in the given order, each example padded to `seq_len`, in
    fp32 (their test loop has no autocast)."""
    model.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        rows = np.arange(start, min(start + batch_size, len(examples)))
        ids, mask = pad_to(examples, rows, pad_id, seq_len, device)
        out.append(model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy())  # [b, classes]
    return np.concatenate(out)
