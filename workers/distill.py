"""CV-DD dataset distillation for text, as plain functions (torch and numpy; the driver runs the heavy
ones in Ray tasks).

- Selection of real examples per class: random (`random_per_class`), herding in the members' pooled
  [CLS] space (`herding_per_class`) or the committee's most confident (`confident_per_class`). Every
  selection is computed once at the largest IPC; a smaller IPC takes its first examples per class,
  so the sets are nested and the IPC columns of a report differ by the examples added, not by a new draw.
- `SoftTokens`: synthetic examples in a space every member shares: each position is a distribution
  over the shared vocabulary, and each model reads it through its own word embeddings
  (`workers.finetune.TokenDistributions`). Saved sets keep the `keep_top` most probable entries per
  position (renormalised); relabelling and students see exactly what is saved.
- `recover`: CV-DD's recover in that space: per-position token logits, initialised from real examples
  of the class, optimised with Adam (betas 0.5, 0.9) on a cosine schedule (the first half of the
  iterations over the whole vocabulary, the second half over each position's `keep_top` most probable
  tokens, which is what is saved) so that each IPC index's
  guiding members (a pair drawn per index, mixed by softmax(val_accuracy% / T); or one expert)
  classify them as their class while their per-layer hidden-state means and variances match those
  recorded on the real training split. An IPC index's examples are one group (CV-DD's batch), and the
  loss is a sum over groups, so recovering indices in separate tasks gives what one task would.
- `teacher_logits`: the soft-label vector a student matches (logits; log-probabilities for the
  mean-probability rule).
- Students (`StudentSpec`, `train_student`): a fresh BERT trained on one distilled set by the members'
  fine-tuning loop (soft targets: KL at temperature T), scored once on the test split after the last step.
- Saving: real sets as parquet (`text`, `label`, `soft_label`, `train_row`), synthetic sets as
  safetensors tensors plus a parquet of their nearest-token decoding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workers.corpus import Ragged
from workers.finetune import FinetuneSettings, TokenDistributions, finetune, predict_logits
from workers.models import ModelSettings, build_classifier, init_from_streams, transfer_encoder
from workers.seeds import numpy_rng
from workers.voting import accuracy, softmax

FIRST_LAYER_WEIGHT = 10.0  # CV-DD weighs the first statistics layer (here: the embeddings' output) x10


# ----------------------------------------------------------------------------------------------
# selection of real examples


def random_per_class(labels: np.ndarray, num_classes: int, ipc: int, seed: int) -> np.ndarray:
    """Rows [classes, ipc] drawn at random per class (stream distill/random of `seed`, one per class);
    the first n columns are the draw for IPC n."""
    rows = []
    for cls in range(num_classes):
        pool = np.flatnonzero(labels == cls)
        rows.append(numpy_rng(seed, "distill/random", cls).permutation(pool)[:ipc])
    return np.stack(rows)  # [classes, ipc]


def herding_per_class(features: np.ndarray, labels: np.ndarray, num_classes: int, ipc: int) -> np.ndarray:
    """Rows [classes, ipc] chosen by herding: each pick brings the mean of the picked features closest
    to the class mean (features [n, d]); the first n picks are the choice for IPC n."""
    rows = []
    for cls in range(num_classes):
        pool = np.flatnonzero(labels == cls)
        x = features[pool].astype(np.float64)  # [pool, d]
        target = x.mean(axis=0)
        picked, total = [], np.zeros_like(target)
        available = np.ones(len(pool), dtype=bool)
        for t in range(ipc):
            gap = np.linalg.norm(target * (t + 1) - total - x, axis=1)  # [pool]
            gap[~available] = np.inf
            best = int(np.argmin(gap))
            picked.append(pool[best])
            total += x[best]
            available[best] = False
        rows.append(picked)
    return np.array(rows, dtype=np.int64)  # [classes, ipc]


def confident_per_class(probs: np.ndarray, labels: np.ndarray, num_classes: int, ipc: int) -> np.ndarray:
    """Rows [classes, ipc]: each class's examples with the highest committee probability of that class
    (probs [n, classes]), most confident first."""
    rows = []
    for cls in range(num_classes):
        pool = np.flatnonzero(labels == cls)
        rows.append(pool[np.argsort(-probs[pool, cls], kind="stable")[:ipc]])
    return np.stack(rows)  # [classes, ipc]


def index_major(rows_by_class: np.ndarray, ipc: int) -> np.ndarray:
    """The first `ipc` columns of rows [classes, >= ipc] as one list ordered by IPC index, then class
    (row j * classes + c is class c's j-th example), so a smaller IPC is a prefix."""
    return rows_by_class[:, :ipc].T.ravel()


def take(examples: Ragged, rows: np.ndarray) -> Ragged:
    """The examples at `rows`, in that order."""
    pieces = [examples.row(int(r)) for r in rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return Ragged(ids=ids.astype(np.int32), offsets=offsets)


def teacher_logits(scores: np.ndarray, rule: str) -> np.ndarray:
    """The soft-label vector [n, classes] float32 a student matches: the voter's scores for a logit rule
    ("prior_weighted"), their logarithm for "mean_probability" (softmax of it gives the mean probabilities)."""
    if rule == "mean_probability":
        return np.log(np.clip(scores, 1e-12, None)).astype(np.float32)
    return np.asarray(scores, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# soft tokens and distilled sets


@dataclass(frozen=True)
class SoftTokens:
    """Synthetic examples: position j of example i is the distribution probs[i, j] over ids[i, j].

    Positions at or beyond an example's length are padding (the pad id with probability 1)."""

    ids: np.ndarray  # [n, seq, k] int32
    probs: np.ndarray  # [n, seq, k] float32
    example_lengths: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.example_lengths)

    def lengths(self) -> np.ndarray:
        return self.example_lengths

    def batch(self, rows: np.ndarray, pad_id: int, device="cpu") -> tuple[TokenDistributions, torch.Tensor]:
        """(TokenDistributions [b, longest, k], attention_mask [b, longest]) for the examples at `rows`."""
        longest = int(self.example_lengths[rows].max())
        ids = torch.from_numpy(self.ids[rows, :longest].astype(np.int64)).to(device)
        probs = torch.from_numpy(np.ascontiguousarray(self.probs[rows, :longest])).to(device)
        lengths = torch.from_numpy(self.example_lengths[rows]).to(device)
        mask = (torch.arange(longest, device=device)[None, :] < lengths[:, None]).long()
        return TokenDistributions(ids, probs), mask

    def take(self, rows: np.ndarray) -> "SoftTokens":
        return SoftTokens(self.ids[rows], self.probs[rows], self.example_lengths[rows])

    def nearest_tokens(self) -> Ragged:
        """Each position's most probable token, as ordinary token sequences (the readable decoding)."""
        best = np.take_along_axis(self.ids, self.probs.argmax(axis=-1)[..., None], axis=-1)[..., 0]  # [n, seq]
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.example_lengths, out=offsets[1:])
        ids = [best[i, :n] for i, n in enumerate(self.example_lengths)]
        return Ragged(ids=np.concatenate(ids).astype(np.int32), offsets=offsets)


def concat_soft_tokens(parts: list[SoftTokens], pad_id: int) -> SoftTokens:
    """One SoftTokens from several (padded to the longest sequence and the widest k)."""
    seq = max(p.ids.shape[1] for p in parts)
    k = max(p.ids.shape[2] for p in parts)
    n = sum(len(p) for p in parts)
    ids = np.full((n, seq, k), pad_id, dtype=np.int32)
    probs = np.zeros((n, seq, k), dtype=np.float32)
    probs[:, :, 0] = 1.0
    start = 0
    for p in parts:
        end = start + len(p)
        ids[start:end, :p.ids.shape[1], :p.ids.shape[2]] = p.ids
        probs[start:end, :p.ids.shape[1]] = 0.0
        probs[start:end, :p.ids.shape[1], :p.ids.shape[2]] = p.probs
        start = end
    return SoftTokens(ids, probs, np.concatenate([p.example_lengths for p in parts]))


@dataclass(frozen=True)
class DistilledSet:
    """One distilled training set (a method at an IPC): small, plain arrays that cross the Ray boundary."""

    method: str
    ipc: int | None  # None: the full training set
    examples: Ragged | SoftTokens
    labels: np.ndarray  # [n] int64: the class each example stands for
    soft_labels: np.ndarray | None  # [n, classes] float32 teacher logits; None: trained on hard labels
    train_rows: np.ndarray | None = None  # [n] rows of the task's training split (real examples)

    def __len__(self) -> int:
        return len(self.labels)

    def first(self, ipc: int, num_classes: int) -> "DistilledSet":
        """The set at a smaller IPC: its first ipc x classes examples (sets are ordered by IPC index)."""
        rows = np.arange(ipc * num_classes)
        examples = (take(self.examples, rows) if isinstance(self.examples, Ragged) else self.examples.take(rows))
        return DistilledSet(self.method, ipc, examples, self.labels[rows],
                            None if self.soft_labels is None else self.soft_labels[rows],
                            None if self.train_rows is None else self.train_rows[rows])


# ----------------------------------------------------------------------------------------------
# recover


@dataclass(frozen=True)
class RecoverSettings:
    iterations: int
    lr: float
    stats_weight: float  # CV-DD's r_bn
    temperature: float  # T of the pair weights softmax(val_accuracy% / T)
    init_probability: float  # probability of the real token at each free position at the start
    keep_top: int  # vocabulary entries kept per position in the result


@dataclass
class RecoverResult:
    tokens: SoftTokens  # the saved form (top-k per position)
    labels: np.ndarray  # [n] int64
    ipc_index: np.ndarray  # [n] int64
    loss_curve: np.ndarray  # [iterations] total loss before each step
    guide_accuracy_before: float  # share of (example, guiding member) pairs classified as the example's class
    guide_accuracy_after: float  # the same on the saved result
    seconds: float
    phase_seconds: tuple[float, float] = (0.0, 0.0)  # (whole-vocabulary phase, top-k phase)


def guide_weights(members: tuple[int, ...], val_accuracy: np.ndarray, temperature: float) -> np.ndarray:
    """Weights of an IPC index's guiding members: softmax(val_accuracy% / T) over them (1 for one expert)."""
    return softmax(100.0 * np.asarray(val_accuracy, dtype=np.float64)[list(members)] / temperature)


def draw_guides(num_members: int, indices: range, seed: int, single: int | None = None) -> list[tuple[int, ...]]:
    """The guiding members of each IPC index: two distinct members drawn per index (stream
    distill/guides), or `(single,)` for the single-expert recover."""
    if single is not None:
        return [(single,) for _ in indices]
    if num_members < 2:
        raise ValueError("recover with a committee needs at least two members")
    return [tuple(int(m) for m in numpy_rng(seed, "distill/guides", j).choice(num_members, size=2, replace=False))
            for j in indices]


def _layer_weights(layers: int) -> torch.Tensor:
    weights = torch.ones(layers, dtype=torch.float32)
    weights[0] = FIRST_LAYER_WEIGHT
    return weights  # [layers]


class _RecoverProblem:
    """The tensors of one recover: free token logits, fixed tokens, and each member's rows and groups."""

    def __init__(self, members, stats, val_accuracy, init: Ragged, labels, ipc_index, guides, settings, pad_id):
        self.members, self.settings = members, settings
        self.device = next(members[0].parameters()).device
        lengths = init.lengths()
        n, seq = len(init), int(lengths.max())
        ids = np.full((n, seq), pad_id, dtype=np.int64)
        for i in range(n):
            ids[i, :lengths[i]] = init.row(i)
        self.ids = torch.from_numpy(ids)  # [n, seq] the real examples the synthetic ones start from
        positions = torch.arange(seq)[None, :]
        self.mask = (positions < torch.from_numpy(lengths)[:, None]).long()  # [n, seq]
        # [CLS] (position 0), [SEP] (the last real position) and padding stay fixed; the rest is optimised
        free = (positions > 0) & (positions < torch.from_numpy(lengths)[:, None] - 1)
        self.free = free
        self.free_rows, self.free_cols = free.nonzero(as_tuple=True)  # [F] each
        vocab = members[0].config.vocab_size
        p = settings.init_probability
        start = math.log(p * (vocab - 1) / (1 - p))  # softmax gives the real token probability p
        logits = torch.zeros(len(self.free_rows), vocab)
        logits[torch.arange(len(self.free_rows)), self.ids[free]] = start
        self.plan = self._member_plan(np.asarray(ipc_index), guides, val_accuracy)
        on = self.device
        self.logits = logits.to(on).requires_grad_(True)  # [F, vocab]; [F, k] once sparse
        self.support: torch.Tensor | None = None  # [F, k] vocabulary ids of the sparse phase
        self.ids, self.mask = self.ids.to(on), self.mask.to(on)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64)).to(on)
        self.stats_mean = torch.tensor(stats.mean, device=on)  # [K, layers + 1, h]
        self.stats_var = torch.tensor(stats.var, device=on)
        self.layer_weights = _layer_weights(stats.mean.shape[1]).to(on)
        self.plan = [{k: v.to(on) if torch.is_tensor(v) else v for k, v in part.items()} for part in self.plan]

    def _member_plan(self, ipc_index, guides, val_accuracy) -> list[dict]:
        """Per guiding member: its rows, their groups (IPC indices) and its weight in each group."""
        groups = sorted(set(ipc_index.tolist()))
        group_of = {g: i for i, g in enumerate(groups)}
        plan = []
        for member in sorted({m for pair in guides for m in pair}):
            rows = np.flatnonzero([member in guides[group_of[g]] for g in ipc_index])
            member_groups = sorted({int(ipc_index[r]) for r in rows})
            local = {g: i for i, g in enumerate(member_groups)}
            onehot = torch.zeros(len(member_groups), len(rows))  # [groups, rows]
            onehot[[local[int(ipc_index[r])] for r in rows], torch.arange(len(rows))] = 1.0
            weights = []
            for g in member_groups:
                pair = guides[group_of[g]]
                weights.append(float(guide_weights(pair, val_accuracy, self.settings.temperature)[pair.index(member)]))
            in_rows = torch.isin(self.free_rows, torch.from_numpy(rows))
            row_pos = torch.full((len(self.ids),), -1, dtype=torch.long)
            row_pos[torch.from_numpy(rows)] = torch.arange(len(rows))
            plan.append({"member": member, "rows": torch.from_numpy(rows), "groups": onehot,
                         "weights": torch.tensor(weights), "free": in_rows.nonzero(as_tuple=True)[0],
                         "free_local_rows": row_pos[self.free_rows[in_rows]], "free_cols": self.free_cols[in_rows]})
        return plan

    def sparsify(self) -> None:
        """Keep each free position's `keep_top` most probable tokens (renormalised) and optimise only those
        from now on, so the examples that are saved are the ones the loss was minimised for."""
        k = min(self.settings.keep_top, self.logits.shape[1])
        with torch.no_grad():
            top = torch.softmax(self.logits, dim=1).topk(k, dim=1)
            support = top.indices if self.support is None else self.support.gather(1, top.indices)
            kept = top.values / top.values.sum(dim=1, keepdim=True)
        self.support = support
        self.logits = kept.clamp_min(1e-12).log().requires_grad_(True)  # [F, k]

    def _embed(self, part: dict, probs: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [rows, seq, h] of one member: fixed tokens as they are, each free position the
        probability-weighted sum of the member's word embeddings (probs @ E; over the support once sparse)."""
        table = self.members[part["member"]].get_input_embeddings().weight  # [vocab, h]
        embeds = table[self.ids[part["rows"]]]  # [rows, seq, h]
        free = part["free"]
        if self.support is None:
            mixed = probs[free] @ table  # [F_member, h]
        else:
            mixed = F.embedding_bag(self.support[free], table, mode="sum", per_sample_weights=probs[free])
        return embeds.index_put((part["free_local_rows"], part["free_cols"]), mixed)

    def _stats_loss(self, part: dict, hidden_states, mask: torch.Tensor) -> torch.Tensor:
        """Per group: sum over layers of ||mean - real mean||_2 + ||var - real var||_2 (first layer x10)."""
        member, groups = part["member"], part["groups"]  # groups [G, rows]
        real = mask.float()[:, :, None]  # [rows, seq, 1]
        tokens = groups @ real.sum(dim=(1, 2))  # [G]
        losses = []
        for layer, states in enumerate(hidden_states):  # each [rows, seq, h]
            sums = groups @ (states * real).sum(dim=1)  # [G, h]
            squares = groups @ (states.square() * real).sum(dim=1)
            mean = sums / tokens[:, None]
            var = (squares / tokens[:, None] - mean.square()).clamp_min(0)
            losses.append(torch.linalg.vector_norm(mean - self.stats_mean[member, layer], dim=1)
                          + torch.linalg.vector_norm(var - self.stats_var[member, layer], dim=1))
        return torch.stack(losses, dim=1) @ self.layer_weights  # [G]

    def loss(self, probs: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Sum over guiding members and groups of weight x (mean CE + r * statistics); (loss, right, pairs)."""
        total, right, pairs = 0.0, 0, 0
        for part in self.plan:
            rows = part["rows"]
            mask = self.mask[rows]
            out = self.members[part["member"]](inputs_embeds=self._embed(part, probs), attention_mask=mask,
                                               output_hidden_states=True)
            ce = F.cross_entropy(out.logits, self.labels[rows], reduction="none")  # [rows]
            groups = part["groups"]
            ce_group = (groups @ ce) / groups.sum(dim=1)  # [G]
            term = ce_group + self.settings.stats_weight * self._stats_loss(part, out.hidden_states, mask)
            total = total + (part["weights"] * term).sum()
            right += int((out.logits.argmax(dim=1) == self.labels[rows]).sum())
            pairs += len(rows)
        return total, right, pairs

    def result_tokens(self, pad_id: int) -> SoftTokens:
        """The optimised examples as SoftTokens (after `sparsify`: exactly the distributions optimised last)."""
        if self.support is None:
            self.sparsify()
        n, seq = self.ids.shape
        k = self.support.shape[1]
        ids = np.full((n, seq, k), pad_id, dtype=np.int32)
        probs = np.zeros((n, seq, k), dtype=np.float32)
        ids[:, :, 0] = self.ids.cpu().numpy()
        probs[:, :, 0] = 1.0
        rows, cols = self.free_rows.numpy(), self.free_cols.numpy()
        ids[rows, cols] = self.support.cpu().numpy()
        with torch.no_grad():
            probs[rows, cols] = torch.softmax(self.logits, dim=1).cpu().numpy()
        return SoftTokens(ids, probs, self.mask.sum(dim=1).cpu().numpy().astype(np.int64))


def recover(members: list, stats, val_accuracy: np.ndarray, init: Ragged, labels: np.ndarray,
            ipc_index: np.ndarray, guides: list[tuple[int, ...]], settings: RecoverSettings, pad_id: int,
            on_log=None) -> RecoverResult:
    """CV-DD's recover on real examples `init` (labels [n], ipc_index [n] in 0..G-1 with guides[g] the
    guiding members of index g); `stats` the members' real-data HiddenStats; members frozen, in eval mode."""
    t0 = time.perf_counter()
    problem = _RecoverProblem(members, stats, val_accuracy, init, labels, ipc_index, guides, settings, pad_id)
    dense_steps = settings.iterations - settings.iterations // 2
    curve, before, phase_seconds = [], math.nan, []
    for phase_steps in (dense_steps, settings.iterations - dense_steps):
        phase_start = time.perf_counter()
        if phase_steps == 0:
            phase_seconds.append(0.0)
            continue
        if len(curve) == dense_steps:
            problem.sparsify()  # the second half optimises the distributions that will be saved
        optimizer = torch.optim.Adam([problem.logits], lr=settings.lr, betas=(0.5, 0.9))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=phase_steps)
        for _ in range(phase_steps):
            loss, right, pairs = problem.loss(torch.softmax(problem.logits, dim=1))
            if not curve:
                before = right / pairs
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            curve.append(loss.item())
            if on_log and len(curve) % max(1, settings.iterations // 10) == 0:
                on_log({"phase": "recover", "step": len(curve), "iterations": settings.iterations, "loss": curve[-1]})
        phase_seconds.append(time.perf_counter() - phase_start)
    tokens = problem.result_tokens(pad_id)
    after = guided_accuracy(members, tokens, labels, ipc_index, guides, pad_id)
    return RecoverResult(tokens, np.asarray(labels, dtype=np.int64), np.asarray(ipc_index, dtype=np.int64),
                         np.array(curve), before, after, time.perf_counter() - t0, tuple(phase_seconds))


def recover_with_members(classifier_dirs, val_accuracy: np.ndarray, stats, init: Ragged, labels: np.ndarray,
                         ipc_index: np.ndarray, guides: list[tuple[int, ...]], settings: RecoverSettings, pad_id: int,
                         num_threads: int | None = None) -> RecoverResult:
    """`recover` with the members loaded from their weight directories (what a Ray task is given)."""
    from workers.committee import load_members
    from workers.member import member_device

    if num_threads:
        torch.set_num_threads(num_threads)
    members = [m.to(member_device()) for m in load_members(classifier_dirs)]
    return recover(members, stats, val_accuracy, init, labels, ipc_index, guides, settings, pad_id)


@torch.no_grad()
def guided_accuracy(members: list, tokens: SoftTokens, labels: np.ndarray, ipc_index: np.ndarray,
                    guides: list[tuple[int, ...]], pad_id: int) -> float:
    """Share of (example, guiding member) pairs in which the member classifies the example as its class."""
    groups = sorted(set(np.asarray(ipc_index).tolist()))
    group_of = {g: i for i, g in enumerate(groups)}
    right = total = 0
    for member in sorted({m for pair in guides for m in pair}):
        rows = np.flatnonzero([member in guides[group_of[g]] for g in ipc_index])
        logits = predict_logits(members[member], tokens.take(rows), pad_id)
        right += int((logits.argmax(axis=1) == labels[rows]).sum())
        total += len(rows)
    return right / total


# ----------------------------------------------------------------------------------------------
# students


@dataclass(frozen=True)
class StudentSpec:
    """One student: a fresh model trained on one distilled set (small and frozen: it crosses the Ray boundary)."""

    method: str
    ipc: int | None  # None: the full training set
    seed: int
    model: ModelSettings
    finetune: FinetuneSettings  # max_steps fixed; seed = the student's seed
    init: str  # "pretrained" (encoder of the non-member in base_dir) or "scratch"
    base_dir: str | None  # the non-member's masked LM directory (pretrained init)


def build_student(spec: StudentSpec, vocab_size: int, num_classes: int):
    """The student before training: every weight from the student's streams, then (pretrained init) the
    non-member's embeddings and encoder; the pooler and classifier stay the student's own draw."""
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from workers import checkpoint

    hf_logging.disable_progress_bar()
    model = build_classifier(spec.model.bert_config(vocab_size, num_classes), num_classes)
    init_from_streams(model, spec.seed, "student/init", head_stream="student/head")
    if spec.init == "pretrained":
        transfer_encoder(model, checkpoint.load_pretrained(BertForMaskedLM, spec.base_dir))
    return model


def train_student(spec: StudentSpec, train: DistilledSet, test: Ragged, test_labels: np.ndarray, pad_id: int,
                  vocab_size: int, num_classes: int, num_threads: int | None = None) -> dict:
    """Train one student on `train` for exactly spec.finetune.max_steps steps; test accuracy after the last."""
    from workers.member import member_device

    if num_threads:
        torch.set_num_threads(num_threads)
    model = build_student(spec, vocab_size, num_classes).to(member_device())
    targets = train.labels if train.soft_labels is None else train.soft_labels
    stats = finetune(model, train.examples, targets, pad_id, spec.finetune)
    test_logits = predict_logits(model, test, pad_id, precision=spec.finetune.precision)
    return {"method": spec.method, "ipc": spec.ipc, "seed": spec.seed, "examples": len(train),
            "test_accuracy": accuracy(test_logits, test_labels), "final_loss": stats["final_loss"],
            "steps": stats["steps"], "train_s": round(stats["train_s"], 3)}


# ----------------------------------------------------------------------------------------------
# saving


def save_real_set(dset: DistilledSet, texts, directory: Path) -> Path:
    """data.parquet with `text`, `label`, `soft_label` (teacher logits; absent for hard labels) and
    `train_row`: `datasets.load_dataset("parquet", data_files=...)` reads it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    columns = {"text": pa.array([texts[int(r)] for r in dset.train_rows], pa.string()),
               "label": pa.array(dset.labels.astype(np.int64)),
               "train_row": pa.array(dset.train_rows.astype(np.int64))}
    if dset.soft_labels is not None:
        columns["soft_label"] = pa.array(dset.soft_labels.astype(np.float32).tolist(), pa.list_(pa.float32()))
    path = directory / "data.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def save_synthetic_set(dset: DistilledSet, tokenizer, directory: Path) -> Path:
    """tokens.safetensors (token_ids, token_probs, lengths, labels, soft_labels) and decoded.parquet
    (`text`: each position's most probable token, decoded; `label`; `soft_label`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tokens = dset.examples
    save_file({"token_ids": tokens.ids, "token_probs": tokens.probs, "lengths": tokens.example_lengths,
               "labels": dset.labels.astype(np.int64), "soft_labels": dset.soft_labels.astype(np.float32)},
              str(directory / "tokens.safetensors"))
    nearest = tokens.nearest_tokens()
    texts = [tokenizer.decode(nearest.row(i).tolist(), skip_special_tokens=True) for i in range(len(nearest))]
    pq.write_table(pa.table({"text": pa.array(texts, pa.string()), "label": pa.array(dset.labels.astype(np.int64)),
                             "soft_label": pa.array(dset.soft_labels.astype(np.float32).tolist(),
                                                    pa.list_(pa.float32()))}), directory / "decoded.parquet")
    return directory / "tokens.safetensors"


def load_synthetic_set(directory: Path, method: str = "recover", ipc: int | None = None) -> DistilledSet:
    """A synthetic set written by `save_synthetic_set`, ready for `train_student`."""
    from safetensors.numpy import load_file

    t = load_file(str(Path(directory) / "tokens.safetensors"))
    return DistilledSet(method, ipc, SoftTokens(t["token_ids"], t["token_probs"], t["lengths"]), t["labels"],
                        t["soft_labels"])
