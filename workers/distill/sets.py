"""CV-DD dataset distillation for text: the distilled sets and the choice of their real examples, as plain
functions (torch and numpy; the driver runs the heavy ones in Ray tasks). The recover optimisation is in
workers/distill/recover.py, the students trained on a set in workers/distill/students.py.

- Selection of real examples per class: random (`random_per_class`), herding in the members' pooled
  [CLS] space (`herding_per_class`) or the committee's most confident (`confident_per_class`). Every
  selection is computed once at the largest IPC; a smaller IPC takes its first examples per class,
  so the sets are nested and the IPC columns of a report differ by the examples added, not by a new draw.
- `teacher_logits`: the soft-label vector a student matches (logits; log-probabilities for the
  mean-probability rule).
- kd_full's transfer set is the training split plus unlabelled texts (`concat_ragged`).
- `SoftTokens`: synthetic examples in a space every member shares: each position is a distribution
  over the shared vocabulary, and each model reads it through its own word embeddings
  (`workers.train.finetune.TokenDistributions`). Saved sets keep the `keep_top` most probable entries per
  position (renormalised); relabelling and students see exactly what is saved.
- `DistilledSet`: one method's set at an IPC (real examples or `SoftTokens`, labels, soft labels).
- Saving: real sets as parquet (`text`, `label`, `soft_label`, `train_row`), synthetic sets as
  safetensors tensors plus a parquet of their nearest-token decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workers.model.devices import to_device
from workers.text.corpus import Ragged
from workers.train.finetune import TokenDistributions
from workers.train.seeds import numpy_rng

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


def concat_ragged(parts: list[Ragged]) -> Ragged:
    """One Ragged of several, in order."""
    lengths = np.concatenate([p.lengths() for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Ragged(ids=np.concatenate([p.ids[p.offsets[0]:p.offsets[-1]] for p in parts]).astype(np.int32),
                  offsets=offsets)


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
        ids = to_device(torch.from_numpy(self.ids[rows, :longest].astype(np.int64)), device)
        probs = to_device(torch.from_numpy(np.ascontiguousarray(self.probs[rows, :longest])), device)
        lengths = to_device(torch.from_numpy(self.example_lengths[rows]), device)
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
    """A synthetic set written by `save_synthetic_set`, ready for `workers.distill.students.train_student`."""
    from safetensors.numpy import load_file

    t = load_file(str(Path(directory) / "tokens.safetensors"))
    return DistilledSet(method, ipc, SoftTokens(t["token_ids"], t["token_probs"], t["lengths"]), t["labels"],
                        t["soft_labels"])
