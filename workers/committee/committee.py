"""The committee of a finished run as one object: its fine-tuned members and what distillation asks of them.

A `Committee` holds fine-tuned members (loaded from their weight directories by `load_members`: safetensors
only), their validation accuracies, and, for raw texts, a tokenizer, the class names and the weighted vote's
weights. The driver side reads a finished run and builds one (`orchestrator.run.finished.load_committee`).
It answers, for any `Ragged` example set:
- `logits(examples)`: every member's class logits [members, n, classes], from one packed forward of
  all members (`workers.model.packed.PackedCommittee`) when they share a config, else member by member;
  soft-token examples (`workers.distill.sets.SoftTokens`) go member by member (the packed committee reads
  token ids only);
- `features(examples)`: every member's pooled [CLS] vector [members, n, hidden] (the classifier's input);
- `hidden_stats(examples)`: every member's per-layer hidden-state mean and variance over real tokens.

Nothing here imports Ray: the driver calls it, and Ray tasks build one with `Committee.from_dirs`.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from workers.errors import CommitteeError
from workers.model.packed import PackedCommittee
from workers.storage import checkpoint
from workers.text.corpus import Ragged
from workers.train.finetune import pad_batch, predict_logits

PREDICT_BATCH = 64  # examples per forward


def load_members(classifier_dirs) -> list:
    """The fine-tuned members (BertForSequenceClassification, eval mode, frozen, CPU) from their weight
    directories. The directory a config was loaded from is cleared from it, so that members of one shape
    have equal configs (what `PackedCommittee` checks before packing them)."""
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    members = [checkpoint.load_pretrained(BertForSequenceClassification, d).eval() for d in classifier_dirs]
    for member in members:
        member.requires_grad_(False)
        member.config.name_or_path = ""
    return members


@dataclass(frozen=True)
class HiddenStats:
    """Per-member, per-layer statistics of hidden states over real tokens (layer 0: the embeddings' output)."""

    mean: np.ndarray  # [members, layers + 1, hidden] float32
    var: np.ndarray  # [members, layers + 1, hidden] float32 (population variance)


class Committee:
    """K fine-tuned members with their validation accuracies; see the module docstring."""

    def __init__(self, members: list, names: list[str], val_accuracy: np.ndarray, pad_id: int,
                 tokenizer=None, max_length: int | None = None, label_names: list[str] | None = None,
                 vote_weights: list[float] | None = None):
        if not members:
            raise CommitteeError("a committee needs at least one member")
        self.members = members
        self.names = list(names)
        self.val_accuracy = np.asarray(val_accuracy, dtype=np.float64)  # [K] in [0, 1]
        self.pad_id = int(pad_id)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._label_names = None if label_names is None else list(label_names)
        self._vote_weights = None if vote_weights is None else np.asarray(vote_weights, dtype=np.float64)
        self._packed: PackedCommittee | None = None

    @classmethod
    def from_dirs(cls, classifier_dirs, names, val_accuracy, pad_id: int) -> "Committee":
        """Members from their weight directories (what a Ray task gets: paths, not modules)."""
        return cls(load_members(classifier_dirs), list(names), val_accuracy, pad_id)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def best(self) -> int:
        """Index of the member with the highest validation accuracy (the lowest index on a tie)."""
        return int(np.argmax(self.val_accuracy))

    @functools.cached_property
    def packs(self) -> bool:
        """True when every member has the same config, so one packed forward runs them all (asked once: comparing
        configs deep-copies them, which cost a served request more than its forward)."""
        first = self.members[0].config.to_dict()
        return all(m.config.to_dict() == first for m in self.members[1:])

    def packed(self) -> PackedCommittee:
        if self._packed is None:
            self._packed = PackedCommittee.from_members(self.members)
        return self._packed

    @property
    def device(self) -> torch.device:
        """Where the members are (the CPU unless they were moved): batches are built there."""
        return next(self.members[0].parameters()).device

    def _batches(self, examples: Ragged, batch_size: int):
        """(rows, input_ids, attention_mask) over `examples` in batches of similar length, on the members' device."""
        order = np.argsort(examples.lengths(), kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield (rows, *pad_batch(examples, rows, self.pad_id, self.device))

    @torch.no_grad()
    def logits(self, examples, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Every member's class logits [members, n, classes] float32, in the order of `examples`."""
        if not isinstance(examples, Ragged) or not self.packs:
            return np.stack([predict_logits(m, examples, self.pad_id, batch_size) for m in self.members])
        packed = self.packed()
        out = np.zeros((len(self), len(examples), self.members[0].config.num_labels), dtype=np.float32)
        for rows, input_ids, attention_mask in self._batches(examples, batch_size):
            out[:, rows] = packed(input_ids, attention_mask).float().cpu().numpy()
        return out

    @torch.no_grad()
    def features(self, examples: Ragged, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Every member's pooled [CLS] vector [members, n, hidden] float32 (what its classifier reads)."""
        hidden = self.members[0].config.hidden_size
        out = np.zeros((len(self), len(examples), hidden), dtype=np.float32)
        for rows, input_ids, attention_mask in self._batches(examples, batch_size):
            if self.packs:
                with _pooled_output(self.packed()) as pooled:
                    out[:, rows] = pooled(input_ids, attention_mask).float().cpu().numpy()
            else:
                for k, member in enumerate(self.members):
                    pooled = member.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
                    out[k, rows] = pooled.float().cpu().numpy()
        return out

    @torch.no_grad()
    def hidden_stats(self, examples: Ragged, batch_size: int = PREDICT_BATCH) -> HiddenStats:
        """Mean and variance of every layer's hidden states over the real (non-padding) tokens of `examples`."""
        means, variances = [], []
        for member in self.members:
            sums = sq_sums = None
            tokens = 0
            for _, input_ids, attention_mask in self._batches(examples, batch_size):
                states = member.bert(input_ids=input_ids, attention_mask=attention_mask,
                                     output_hidden_states=True).hidden_states
                stacked = torch.stack(states, dim=1).double()  # [b, layers + 1, s, h]
                real = attention_mask.double()[:, None, :, None]  # [b, 1, s, 1]
                batch_sums = (stacked * real).sum(dim=(0, 2))  # [layers + 1, h]
                batch_sq = (stacked.square() * real).sum(dim=(0, 2))
                sums = batch_sums if sums is None else sums + batch_sums
                sq_sums = batch_sq if sq_sums is None else sq_sums + batch_sq
                tokens += int(attention_mask.sum())
            mean = sums / tokens
            means.append(mean.float().cpu().numpy())
            variances.append((sq_sums / tokens - mean.square()).clamp_min(0).float().cpu().numpy())
        return HiddenStats(mean=np.stack(means), var=np.stack(variances))

    def predict(self, texts: list[str], rule: str = "soft") -> "Predictions":
        """The committee's decision on raw texts: tokenized with the run's tokenizer (cut to the run's
        task.max_length), one packed forward of all members, voted with `rule` (see workers.committee.voting)."""
        from workers.committee.voting import RULES, aggregate, softmax
        from workers.text.corpus import encode

        if rule not in RULES:
            raise CommitteeError(f"unknown voting rule {rule!r}; choose from {', '.join(RULES)}")
        if self.tokenizer is None:
            raise CommitteeError("this committee has no tokenizer; load a finished run's committee with "
                                 "orchestrator.run.finished.load_committee(run_dir)")
        if not texts:
            raise CommitteeError("no texts to predict; give at least one example")
        empty = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
        if empty:
            raise CommitteeError(f"example {empty[0]} is empty or not a string ({len(empty)} such); every "
                                 f"example needs text")
        logits = self.logits(encode(self.tokenizer, list(texts), max_length=self.max_length))  # [K, n, C]
        scores = aggregate(logits, rule, self.vote_weights() if rule == "weighted" else None)  # [n, C]
        labels = scores.argmax(axis=1)  # [n]
        names = self.label_names(logits.shape[2])
        return Predictions(labels=labels, label_names=[names[i] for i in labels], rule=rule,
                           soft_labels=softmax(logits.astype(np.float64)).mean(axis=0),
                           agreement=(logits.argmax(axis=2) == labels).mean(axis=0), scores=scores)

    def label_names(self, num_classes: int) -> list[str]:
        """Class names in id order, as given (ids as text where none were given)."""
        names = self._label_names or []
        return list(names) if len(names) == num_classes else [str(i) for i in range(num_classes)]

    def vote_weights(self) -> np.ndarray:
        """The weighted vote's member weights [K]: as given (a run's own), else softmax(val acc% / 10)."""
        from workers.committee.voting import prior_weights

        if self._vote_weights is not None and len(self._vote_weights) == len(self):
            return self._vote_weights
        return prior_weights(self.val_accuracy, 10.0)


@dataclass(frozen=True)
class Predictions:
    """What `Committee.predict` decided for n examples."""

    labels: np.ndarray  # [n] int64 committee class ids
    label_names: list[str]  # [n] their class names
    soft_labels: np.ndarray  # [n, classes] float64: the members' mean class probabilities
    agreement: np.ndarray  # [n] float64: share of members whose own argmax is the committee's label
    scores: np.ndarray  # [n, classes] float64: the rule's committee scores (argmax = label)
    rule: str

    def records(self) -> list[dict]:
        """One JSON-ready dict per example: index, label, label_name, soft_labels, agreement."""
        return [{"index": i, "label": int(label), "label_name": name,
                 "soft_labels": [round(float(p), 6) for p in soft], "agreement": float(agree)}
                for i, (label, name, soft, agree) in enumerate(zip(self.labels, self.label_names, self.soft_labels,
                                                                   self.agreement))]


@contextmanager
def _pooled_output(packed: PackedCommittee):
    """`packed` with its classifiers swapped for identities, so its forward returns the pooled [CLS]
    vectors [K, b, hidden] instead of logits; the classifiers are put back on exit."""
    weight, bias = packed.w_cls, packed.b_cls
    hidden, device, dtype = weight.shape[1], weight.device, weight.dtype
    eye = torch.eye(hidden, device=device, dtype=dtype)
    packed.w_cls = torch.nn.Parameter(eye.expand(packed.members, hidden, hidden).contiguous(), requires_grad=False)
    packed.b_cls = torch.nn.Parameter(torch.zeros(packed.members, 1, hidden, device=device, dtype=dtype),
                                      requires_grad=False)
    try:
        yield packed
    finally:
        packed.w_cls, packed.b_cls = weight, bias
