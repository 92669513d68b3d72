"""A finished run's committee answering requests: the checks on a request and the answer per text.

`parse_request(body, limits)` turns the body of `POST /predict` into texts, or raises `BadRequest`
with the HTTP status and a message naming the field (400 malformed JSON, 422 a field of the wrong
kind, 413 a request too large). `ServedModel.answer(texts)` labels any number of texts: one batch
of several requests, in the Serve replica. Its answers are `committee predict`'s on the same texts
(the same tokenization, cut to the run's `task.max_length`, the same packed forward of all members,
the same vote), with a flag on every text the cut shortened, and with the confidence cascade
(workers.committee.cascade) when a threshold is given.

Plain Python, torch and numpy: the Serve deployment (orchestrator.serve.app) calls it, and the tests
call it without Ray.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from workers.committee.cascade import cascade_forward, member_order
from workers.committee.committee import PREDICT_BATCH, Committee
from workers.committee.voting import RULES, aggregate, softmax
from workers.errors import CommitteeError
from workers.model.packed import PackedCommittee
from workers.text.corpus import Ragged, encode
from workers.train.finetune import pad_batch

SOFT_DIGITS = 6  # decimals of probabilities in an answer (as `committee predict` writes them)
REQUEST_KEYS = ("texts", "member_probabilities")


class BadRequest(Exception):
    """A request the server refuses: `status` is the HTTP status, the message names what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold."""

    max_texts: int = 64  # texts per request
    max_text_chars: int = 20_000  # characters per text (longer token sequences are cut and flagged)


@dataclass(frozen=True)
class Request:
    texts: list[str]
    member_probabilities: bool = False


def parse_request(body: bytes, limits: RequestLimits) -> Request:
    """The texts of a `POST /predict` body `{"texts": [...], "member_probabilities": false}`, checked."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"the body is not valid JSON ({exc}); send {{\"texts\": [\"a text\", ...]}}") from None
    if not isinstance(payload, dict) or "texts" not in payload:
        raise BadRequest(422, 'the body must be a JSON object with a "texts" list, e.g. {"texts": ["a text"]}')
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise BadRequest(422, f"unknown key {unknown[0]!r} in the body; the keys are {', '.join(REQUEST_KEYS)}")
    texts = payload["texts"]
    if not isinstance(texts, list) or not texts:
        raise BadRequest(422, '"texts" must be a non-empty list of strings')
    if len(texts) > limits.max_texts:
        raise BadRequest(413, f'{len(texts)} texts in one request; at most {limits.max_texts} (split the request)')
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(422, f"texts[{i}] is not a string (it is {type(text).__name__})")
        if not text.strip():
            raise BadRequest(422, f"texts[{i}] is empty; every text needs words")
        if len(text) > limits.max_text_chars:
            raise BadRequest(413, f"texts[{i}] has {len(text):,} characters; at most {limits.max_text_chars:,}")
    with_members = payload.get("member_probabilities", False)
    if not isinstance(with_members, bool):
        raise BadRequest(422, '"member_probabilities" must be true or false')
    return Request(texts=texts, member_probabilities=with_members)


def _rounded(values) -> list[float]:
    return [round(float(p), SOFT_DIGITS) for p in values]


class ServedModel:
    """A committee (or a committee of one: the deep model) answering texts, with counters for /metadata.

    With `cascade_threshold`, members are asked one at a time in order of validation accuracy and a
    text stops once the running soft vote's top probability reaches the threshold (soft rule only).
    """

    def __init__(self, committee: Committee, rule: str = "soft", cascade_threshold: float | None = None):
        if rule not in RULES:
            raise CommitteeError(f"unknown voting rule {rule!r}; choose from {', '.join(RULES)}")
        if cascade_threshold is not None and rule != "soft":
            raise CommitteeError(f"the cascade stops on the running soft vote; it cannot serve the {rule} rule")
        if committee.tokenizer is None or committee.max_length is None:
            raise CommitteeError("a served committee needs its run's tokenizer and task.max_length")
        self.committee = committee
        self.rule = rule
        self.cascade_threshold = cascade_threshold
        self.num_classes = int(committee.members[0].config.num_labels)
        self.label_names = committee.label_names(self.num_classes)
        self.weights = committee.vote_weights() if rule == "weighted" else None
        self.order = member_order(committee.val_accuracy)
        if cascade_threshold is None:
            committee.packed()  # built now, not on the first request
            self._singles = None
        else:  # one pack per member: the cascade asks them one at a time
            self._singles = [PackedCommittee.from_members([m]) for m in committee.members]
        self._lock = threading.Lock()
        self.reset_counters()

    def reset_counters(self) -> None:
        with self._lock:
            self.stats = {"requests": 0, "texts": 0, "batches": 0, "truncated_texts": 0, "compute_s": 0.0,
                          "members_used": [0] * len(self.committee)}

    def encode(self, texts: list[str]) -> tuple[Ragged, np.ndarray]:
        """Token ids as `committee predict` makes them (cut to task.max_length) and [n] bool: was the text cut."""
        tokenizer, max_length = self.committee.tokenizer, self.committee.max_length
        examples = encode(tokenizer, texts, max_length=max_length)
        truncated = np.zeros(len(texts), dtype=bool)
        at_limit = np.flatnonzero(examples.lengths() >= max_length)  # only these can have been cut
        if len(at_limit):
            full = tokenizer([texts[i] for i in at_limit], add_special_tokens=True)["input_ids"]
            truncated[at_limit] = [len(ids) > max_length for ids in full]
        return examples, truncated

    def _member_logits(self, examples: Ragged, k: int, rows: np.ndarray) -> np.ndarray:
        """Member k's logits [len(rows), classes] for these example rows, in batches of similar length."""
        pack = self._singles[k]
        out = np.zeros((len(rows), self.num_classes), dtype=np.float32)
        order = np.argsort(examples.lengths()[rows], kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), PREDICT_BATCH):
                at = order[start:start + PREDICT_BATCH]
                ids, mask = pad_batch(examples, rows[at], self.committee.pad_id, self.committee.device)
                out[at] = pack(ids, mask)[0].float().cpu().numpy()
        return out

    def answer(self, texts: list[str], member_probabilities: bool = False, requests: int = 1) -> list[dict]:
        """One JSON-ready answer per text: label, label_name, soft_labels, agreement, truncated (and
        members_used with the cascade; member_probabilities on request). `requests` counts the requests
        these texts came in (for the counters)."""
        t0 = time.perf_counter()
        examples, truncated = self.encode(texts)
        if self.cascade_threshold is None:
            logits = self.committee.logits(examples)  # [K, n, C]: the packed forward `committee predict` runs
            scores = aggregate(logits, self.rule, self.weights)  # [n, C]
            labels = scores.argmax(axis=1)
            soft = softmax(logits.astype(np.float64)).mean(axis=0)
            used = np.full(len(texts), len(self.committee), dtype=np.int64)
        else:
            decisions, logits = cascade_forward(lambda k, rows: self._member_logits(examples, k, rows), len(texts),
                                                self.num_classes, self.order, self.cascade_threshold)
            labels, soft, used = decisions.labels, decisions.soft_labels, decisions.members_used
        asked = ~np.isnan(logits[:, :, 0])  # [K, n]
        agreement = ((logits.argmax(axis=2) == labels) & asked).sum(axis=0) / asked.sum(axis=0)
        answers = []
        for i, label in enumerate(labels):
            record = {"label": int(label), "label_name": self.label_names[label], "soft_labels": _rounded(soft[i]),
                      "agreement": float(agreement[i]), "truncated": bool(truncated[i])}
            if self.cascade_threshold is not None:
                record["members_used"] = int(used[i])
            if member_probabilities:
                record["member_probabilities"] = {
                    name: _rounded(softmax(logits[k, i].astype(np.float64))) if asked[k, i] else None
                    for k, name in enumerate(self.committee.names)}
            answers.append(record)
        self._count(requests, truncated, used, time.perf_counter() - t0)
        return answers

    def _count(self, requests: int, truncated: np.ndarray, used: np.ndarray, seconds: float) -> None:
        with self._lock:
            s = self.stats
            s["requests"] += requests
            s["texts"] += len(truncated)
            s["batches"] += 1
            s["truncated_texts"] += int(truncated.sum())
            s["compute_s"] += seconds
            for k, count in enumerate(np.bincount(used - 1, minlength=len(self.committee))):
                s["members_used"][k] += int(count)

    def counters(self) -> dict:
        """The counters since start: requests, texts, batches (mean texts per batch), compute seconds, and
        the share of texts that stopped after 1..K members (all K without the cascade)."""
        with self._lock:
            s = dict(self.stats, members_used=list(self.stats["members_used"]))
        texts = max(s["texts"], 1)
        s["mean_batch_texts"] = s["texts"] / max(s["batches"], 1)
        s["members_used_share"] = [c / texts for c in s["members_used"]]
        s["early_exit_share"] = sum(s["members_used"][:-1]) / texts
        return s

