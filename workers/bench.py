"""Measurements behind `committee bench`: plain functions, no Ray (the actors in workers.bench_actors
and the driver in orchestrator.bench call them).

Every comparison runs its contenders side by side: after warm-up, rounds alternate between them (the
order flips every round) and the figures are medians over rounds, so load from other processes on a
shared machine hits both sides alike. The project's side always calls the loops that training
commands use (`workers.pretrain.train_step`, `workers.finetune.finetune_step` / `predict_logits`);
the reference side is the authors' way: Hugging Face models called with `labels=`, fp32, every
sequence padded to 128.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from workers.corpus import Ragged
from workers.finetune import FinetuneSettings, bucketed_batches, finetune_step, pad_batch, predict_logits
from workers.masking import IGNORE_INDEX, mask_tokens
from workers.pretrain import PretrainSettings, SpecialIds, autocast, batch_at, mlm_loss, train_step
from workers.schedule import make_optimizer, step_generator, step_seed


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def matmul_work(device: str, dtype: torch.dtype, size: int, inner: int = 4) -> Callable[[], float]:
    """A contender for `alternate_rounds`: `inner` size x size products; returns their FLOPs."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def work() -> float:
        for _ in range(inner):
            a @ b
        sync(device)
        return 2.0 * size ** 3 * inner

    return work


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 5, inner: int = 4) -> float:
    """Matmul FLOP/s of a size x size product on `device` (median over repeats after one warm-up)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    rates = []
    for r in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        if r:  # the first is the warm-up
            rates.append(2 * size ** 3 * inner / (time.perf_counter() - t0))
    return median(rates)


# ----------------------------------------------------------------------------------------------
# Model FLOPs (a multiply-add counts 2; training = 3 x forward)


def encoder_flops_per_token(config, attended: int) -> float:
    """Forward FLOPs of the encoder for one token that attends over `attended` positions."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (8 * h * h + 4 * h * i + 4 * attended * h)


def decoder_flops_per_position(config) -> float:
    """Forward FLOPs of the masked-LM head at one position: transform + vocabulary decoder."""
    return 2 * config.hidden_size ** 2 + 2 * config.hidden_size * config.vocab_size


def mlm_training_flops(config, positions: int, seq_len: int, decoded: int) -> float:
    """FLOPs of one training step with `positions` encoded tokens and the head at `decoded` positions."""
    return 3 * (positions * encoder_flops_per_token(config, seq_len) + decoded * decoder_flops_per_position(config))


# ----------------------------------------------------------------------------------------------
# Side-by-side rounds


def alternate_rounds(contenders: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each contender `warmup` times, then `rounds` times in alternating order.

    A contender does one unit of work and returns its amount (tokens, examples); the result holds its
    rate (amount per second) for every round.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            amount = contenders[name]()
            rates[name].append(amount / (time.perf_counter() - t0))
    return rates


def alternate_latency(contenders: dict[str, Callable[[object], object]], requests: list, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per request for every contender; each request is served by all contenders in turn."""
    names = list(contenders)
    for req in requests[:warmup]:
        for name in names:
            contenders[name](req)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r, req in enumerate(requests):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            contenders[name](req)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


# ----------------------------------------------------------------------------------------------
# Pre-training: the authors' loop and the member loop


def reference_pretrain_step(model, optimizer, batch: torch.Tensor, special: SpecialIds, mask_prob: float,
                            seed: int, step: int) -> tuple[float, int]:
    """The authors' step: `BertForMaskedLM(input_ids, attention_mask, labels=)` on articles padded to
    128 (vocabulary logits at every position), fp32, torch's AdamW with its defaults.

    Masks come from the same `mask_tokens` and (seed, step) generators as the member loop.
    Returns (loss, real tokens).
    """
    device = next(model.parameters()).device
    torch.manual_seed(step_seed(seed, step, stream=2))
    inputs, labels = mask_tokens(batch, special.never_masked(), special.mask, special.vocab_size, mask_prob,
                                 step_generator(seed, step, stream=1))
    attention_mask = (batch != special.pad).long()
    out = model(input_ids=inputs.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device))
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return out.loss.item(), int(attention_mask.sum())


@dataclass
class PretrainLoop:
    """One contender: a model, its optimizer and its blocks; `step()` trains one batch and returns real tokens."""

    name: str
    model: object
    blocks: np.ndarray  # [n, seq_len] int32
    special: SpecialIds
    settings: PretrainSettings
    reference: bool
    device: str
    step_index: int = 0
    losses: list = None
    masked: int = 0
    candidates: int = 0
    mask_actions: np.ndarray = None  # [3] counts: [MASK], random, kept

    def __post_init__(self):
        self.losses = []
        self.mask_actions = np.zeros(3, dtype=np.int64)
        if self.reference:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.settings.lr,
                                               weight_decay=self.settings.weight_decay)
            self.scheduler = None
        else:
            self.optimizer, self.scheduler = make_optimizer(self.model, self.settings.lr, self.settings.weight_decay,
                                                            self.settings.warmup_steps, self.settings.max_steps)
        self.model.train()

    def step(self) -> int:
        s = self.settings
        batch = torch.from_numpy(batch_at(self.blocks, self.step_index, s.batch_size, s.seed)).long()
        if self.reference:
            loss, real = reference_pretrain_step(self.model, self.optimizer, batch, self.special, s.mask_prob,
                                                 s.seed, self.step_index)
        else:
            loss, real = train_step(self.model, self.optimizer, self.scheduler, batch, self.special, s, self.step_index)
        sync(self.device)
        self._count_masks(batch)
        self.losses.append(loss)
        self.step_index += 1
        return real

    def _count_masks(self, batch: torch.Tensor) -> None:
        """Masking statistics of this step, redrawn from the step's generator (the draws are derived)."""
        sp = self.special
        inputs, labels = mask_tokens(batch, sp.never_masked(), sp.mask, sp.vocab_size, self.settings.mask_prob,
                                     step_generator(self.settings.seed, self.step_index, stream=1))
        chosen = labels != IGNORE_INDEX
        self.masked += int(chosen.sum())
        self.candidates += int((~torch.isin(batch, sp.never_masked())).sum())
        is_mask = inputs[chosen] == sp.mask
        kept = inputs[chosen] == batch[chosen]
        self.mask_actions += np.array([int(is_mask.sum()), int((~is_mask & ~kept).sum()), int((kept & ~is_mask).sum())])

    def mask_stats(self) -> dict:
        total = max(1, int(self.mask_actions.sum()))
        return {"masked_share": self.masked / max(1, self.candidates),
                "mask_token": self.mask_actions[0] / total, "random": self.mask_actions[1] / total,
                "kept": self.mask_actions[2] / total}


def loss_agreement(model, batch: np.ndarray, special: SpecialIds, mask_prob: float, seed: int,
                   precision: str) -> dict:
    """On one batch of padded articles: the member loop's `mlm_loss` against `BertForMaskedLM(..., labels=)`."""
    device = next(model.parameters()).device
    ids = torch.from_numpy(batch).long()
    inputs, labels = mask_tokens(ids, special.never_masked(), special.mask, special.vocab_size, mask_prob,
                                 step_generator(seed, 0, stream=1))
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


class FinetuneEpoch:
    """One contender of the fine-tuning comparison: `epoch()` trains once over all examples, returns their count."""

    def __init__(self, model, examples: Ragged, labels: np.ndarray, pad_id: int, settings: FinetuneSettings,
                 reference: bool, seq_len: int, device: str):
        self.model, self.examples, self.labels, self.pad_id = model, examples, labels, pad_id
        self.settings, self.reference, self.seq_len, self.device = settings, reference, seq_len, device
        steps = 1_000_000
        if reference:
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        else:
            self.optimizer, self.scheduler = make_optimizer(model, settings.lr, settings.weight_decay, 0, steps)
        self.epoch_index, self.step_index = 0, 0
        model.train()

    def epoch(self) -> int:
        rng = np.random.default_rng([self.settings.seed, self.epoch_index])
        n, bs = len(self.examples), self.settings.batch_size
        if self.reference:
            order = rng.permutation(n)
            for start in range(0, n, bs):
                rows = order[start:start + bs]
                ids, mask = pad_to(self.examples, rows, self.pad_id, self.seq_len, self.device)
                torch.manual_seed(step_seed(self.settings.seed, self.step_index, stream=3))
                out = self.model(input_ids=ids, attention_mask=mask,
                                 labels=torch.from_numpy(self.labels[rows]).to(self.device))
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                self.step_index += 1
        else:
            for rows in bucketed_batches(self.examples.lengths(), bs, rng):
                ids, mask = pad_batch(self.examples, rows, self.pad_id, self.device)
                finetune_step(self.model, self.optimizer, self.scheduler, ids, mask,
                              torch.from_numpy(self.labels[rows]).to(self.device), self.settings, self.step_index)
                self.step_index += 1
        sync(self.device)
        self.epoch_index += 1
        return n


@torch.no_grad()
def reference_predict(model, examples: Ragged, pad_id: int, seq_len: int, batch_size: int, device) -> np.ndarray:
    """The authors' prediction: batches in the given order, each example padded to `seq_len`, fp32."""
    model.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        rows = np.arange(start, min(start + batch_size, len(examples)))
        ids, mask = pad_to(examples, rows, pad_id, seq_len, device)
        out.append(model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy())
    return np.concatenate(out)


def project_predict(model, examples: Ragged, pad_id: int, batch_size: int, precision: str) -> np.ndarray:
    return predict_logits(model, examples, pad_id, batch_size=batch_size, precision=precision)


# ----------------------------------------------------------------------------------------------
# Committee latency


def latency_requests(examples: Ragged, batch_size: int, count: int, pad_id: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` requests of `batch_size` real examples each, padded to the longest in the request."""
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        rows = rng.choice(len(examples), size=min(batch_size, len(examples)), replace=False)
        ids, mask = pad_batch(examples, rows, pad_id)
        requests.append((ids.numpy(), mask.numpy()))  # [b, longest] int64 each
    return requests


def soft_vote(logits: np.ndarray) -> np.ndarray:
    """The committee's decision for logits [K, b, classes]: argmax of the mean class probabilities."""
    from workers.voting import aggregate

    return aggregate(logits, "soft").argmax(axis=-1)


def timed_forward(models: list, input_ids: torch.Tensor, attention_mask: torch.Tensor, device) -> tuple[np.ndarray, list[float]]:
    """Members one after another: logits [K, b, classes] and each member's seconds."""
    out, seconds = [], []
    with torch.no_grad():
        for m in models:
            t0 = time.perf_counter()
            logits = m(input_ids=input_ids, attention_mask=attention_mask).logits
            sync(device)
            seconds.append(time.perf_counter() - t0)
            out.append(logits.float().cpu().numpy())
    return np.stack(out), seconds


def timed_packed_forward(packs: list, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         device) -> tuple[np.ndarray, list[float]]:
    """`PackedCommittee` models one after another: logits [sum of their K, b, classes] and each one's seconds."""
    out, seconds = [], []
    for pack in packs:
        t0 = time.perf_counter()
        logits = pack(input_ids, attention_mask)
        sync(device)
        seconds.append(time.perf_counter() - t0)
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out), seconds


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
