"""The text-distillation anchor as a method: synthetic input embeddings with learned soft labels and [CLS]
attention labels, trained through the student's own update (Maekawa et al., ACL 2023), the committee
supplying the labels.

A distilled set is n synthetic examples in the input-embedding space of the students' pre-trained base
(word-embedding level: the model adds positions and its LayerNorm): embeddings [n, seq, h], soft labels
(logits [n, classes]), attention labels (for every layer and head, a distribution over the positions that
[CLS] attends to, [n, layers, heads, seq]) and one learned step size. A student trained on it takes
`inner_steps` plain gradient steps of that size on the whole set at once, from the base with a freshly drawn
pooler and classifier, dropout off, on the inner loss:

    soft cross-entropy(student logits, softmax(soft labels)) + attention_weight x mean KL(attention label ||
    student's [CLS] attention)

`distill_attention` learns the set by differentiating through that update (create_graph): each outer step
draws a new head (stream distill/attention-head: the set must teach any head, Maekawa's random-init setting
re-initialises the last two linear layers), takes the inner step(s), and scores the updated student on a
batch of real training examples against the committee's soft labels (soft cross-entropy; stream
distill/attention-real). Adam on the embeddings, labels and log step size. Initialisation: the embeddings of
random real examples of each class, the committee's prior-weighted logits on them as soft labels, and the
members' mean [CLS] attention on them as attention labels (members have the students' shape).

`train_attention_student` is the post-evaluation: the student's own head (its seed's stream), the same
update, then the test split. Sets are learned per IPC (they are not nested: every example moves).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workers.model.bert import HEAD_PREFIXES
from workers.text.corpus import Ragged
from workers.train.seeds import numpy_rng, torch_generator

LOG_FLOOR = 1e-12


@dataclass(frozen=True)
class AttentionSettings:
    steps: int  # outer Adam steps
    lr: float  # Adam learning rate of the embeddings, labels and attention labels
    inner_steps: int  # gradient steps of a student on the set (Maekawa: 1 beat 3)
    inner_lr: float  # the student's step size at the start (learned)
    attention_weight: float  # weight of the attention-label term of the inner loss
    real_batch: int  # real training examples per outer step
    seed: int


@dataclass
class AttentionSet:
    """A learned distilled set (plain arrays: it crosses the Ray boundary and is saved as safetensors)."""

    embeds: np.ndarray  # [n, seq, h] float32 input embeddings (word-embedding level)
    lengths: np.ndarray  # [n] int64 real positions of each example ([CLS] ... [SEP])
    labels: np.ndarray  # [n] int64 the class each example stands for
    soft_labels: np.ndarray  # [n, classes] float32 learned logits
    attention_labels: np.ndarray  # [n, layers, heads, seq] float32 distributions over positions
    inner_lr: float  # learned step size of the student's update
    loss_curve: np.ndarray | None = None  # [steps] outer loss
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    def mask(self) -> np.ndarray:
        return (np.arange(self.embeds.shape[1])[None, :] < self.lengths[:, None]).astype(np.int64)  # [n, seq]


def eager_attention(model):
    """`model` with attention computed in plain torch, so it returns attention probabilities (and their
    second derivatives)."""
    model.set_attn_implementation("eager")
    return model


def cls_attention(attentions) -> torch.Tensor:
    """[CLS]'s attention distributions [b, layers, heads, seq] from a model's per-layer attentions."""
    return torch.stack([a[:, :, 0, :] for a in attentions], dim=1)


def inner_loss(model, params: dict, embeds: torch.Tensor, mask: torch.Tensor, soft_logits: torch.Tensor,
               attention_probs: torch.Tensor, attention_weight: float) -> torch.Tensor:
    """The student's loss on the distilled set with weights `params`: soft cross-entropy against
    softmax(soft_logits) plus attention_weight x mean over examples, layers and heads of KL(attention label ||
    the student's [CLS] attention)."""
    out = torch.func.functional_call(model, params, args=(), kwargs={
        "inputs_embeds": embeds, "attention_mask": mask, "output_attentions": True})
    ce = -(F.softmax(soft_logits, dim=-1) * F.log_softmax(out.logits, dim=-1)).sum(dim=-1).mean()
    student = cls_attention(out.attentions)  # [n, L, H, s]
    labels = attention_probs
    kl = (labels * (labels.clamp_min(LOG_FLOOR).log() - student.clamp_min(LOG_FLOOR).log())).sum(dim=-1)
    return ce + attention_weight * kl.mean()


def inner_update(model, params: dict, embeds, mask, soft_logits, attention_probs, settings: AttentionSettings,
                 step_size: torch.Tensor, create_graph: bool) -> dict:
    """`settings.inner_steps` gradient steps of size `step_size` on the whole set (through the graph when
    `create_graph`: what the outer step differentiates)."""
    names = [k for k, p in params.items() if p.requires_grad]
    for _ in range(settings.inner_steps):
        loss = inner_loss(model, params, embeds, mask, soft_logits, attention_probs, settings.attention_weight)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True)
        params = {**params, **{k: params[k] - step_size * g for k, g in zip(names, grads) if g is not None}}
    return params


def draw_head(params: dict, std: float, seed: int, stream: str, *index) -> dict:
    """`params` with the pooler and classifier drawn anew (BERT's rule: normal(0, std) weights, zero biases)."""
    out = dict(params)
    for name, p in params.items():
        if name.startswith(HEAD_PREFIXES):
            if name.endswith("weight"):
                draw = torch.empty(p.shape).normal_(0.0, std, generator=torch_generator(seed, stream, *index, name))
                out[name] = draw.to(p.device).requires_grad_(True)
            else:
                out[name] = torch.zeros_like(p).requires_grad_(True)
    return out


def _padded(examples: Ragged, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = examples.lengths()
    ids = np.full((len(examples), int(lengths.max())), pad_id, dtype=np.int64)
    for i in range(len(examples)):
        ids[i, :lengths[i]] = examples.row(i)
    ids_t = torch.from_numpy(ids)
    return ids_t, (ids_t != pad_id).long()


def distill_attention(model, init: Ragged, init_labels: np.ndarray, init_soft: np.ndarray,
                      init_attention: np.ndarray, train: Ragged, train_soft: np.ndarray,
                      settings: AttentionSettings, pad_id: int, on_log=None) -> AttentionSet:
    """Learn a set from the real examples `init` (labels [n]; the committee's logits on them `init_soft`
    [n, classes] and mean [CLS] attention `init_attention` [n, layers, heads, seq]) so that the student `model`
    (the pre-trained base as a classifier, eager attention) taught by it scores well on `train` against the
    committee's logits `train_soft` [n_train, classes]."""
    t0 = time.perf_counter()
    model.eval()  # dropout off, as in Maekawa et al.
    for p in model.parameters():
        p.requires_grad_(True)
    base = {k: v.detach() for k, v in model.named_parameters()}
    ids, mask = _padded(init, pad_id)
    with torch.no_grad():
        start = model.get_input_embeddings()(ids)  # [n, seq, h]
    embeds = start.clone().requires_grad_(True)
    soft = torch.tensor(init_soft, dtype=torch.float32).requires_grad_(True)
    real = mask[:, None, None, :].bool()  # [n, 1, 1, seq]
    attention_logits = torch.where(real, torch.tensor(init_attention, dtype=torch.float32).clamp_min(LOG_FLOOR).log(),
                                   torch.zeros(())).requires_grad_(True)
    log_step = torch.tensor(float(np.log(settings.inner_lr)), requires_grad=True)
    optimizer = torch.optim.Adam([embeds, soft, attention_logits, log_step], lr=settings.lr)
    train_soft_t = torch.tensor(np.asarray(train_soft), dtype=torch.float32)
    std = model.config.initializer_range
    losses = []
    for step in range(settings.steps):
        params = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        params = draw_head(params, std, settings.seed, "distill/attention-head", step)
        probs = _attention_probs(attention_logits, real)
        updated = inner_update(model, params, embeds, mask, soft, probs, settings, log_step.exp(), create_graph=True)
        rows = numpy_rng(settings.seed, "distill/attention-real", step).choice(
            len(train), size=min(settings.real_batch, len(train)), replace=False)
        from workers.train.finetune import pad_batch

        real_ids, real_mask = pad_batch(train, rows, pad_id)
        logits = torch.func.functional_call(model, updated, args=(), kwargs={
            "input_ids": real_ids, "attention_mask": real_mask}).logits
        target = F.softmax(train_soft_t[rows], dim=-1)
        loss = -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_log and (step + 1) % max(1, settings.steps // 10) == 0:
            on_log({"phase": "attention", "step": step + 1, "steps": settings.steps, "loss": losses[-1]})
    with torch.no_grad():
        probs = _attention_probs(attention_logits, real)
    return AttentionSet(embeds.detach().numpy().astype(np.float32), mask.sum(dim=1).numpy().astype(np.int64),
                        np.asarray(init_labels, dtype=np.int64), soft.detach().numpy().astype(np.float32),
                        probs.numpy().astype(np.float32), float(log_step.detach().exp()), np.array(losses),
                        time.perf_counter() - t0)


def _attention_probs(attention_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Attention labels as distributions over each example's real positions [n, L, H, seq]."""
    return F.softmax(attention_logits.masked_fill(~real, float("-inf")), dim=-1)


@torch.no_grad()
def mean_cls_attention(members: list, examples: Ragged, pad_id: int) -> np.ndarray:
    """The members' mean [CLS] attention [n, layers, heads, longest] on `examples` (members of one shape)."""
    ids, mask = _padded(examples, pad_id)
    total = None
    for member in members:
        was = member.config._attn_implementation
        eager_attention(member)
        out = member(input_ids=ids, attention_mask=mask, output_attentions=True)
        member.set_attn_implementation(was)
        att = cls_attention(out.attentions)
        total = att if total is None else total + att
    return (total / len(members)).numpy().astype(np.float32)


def train_on_attention_set(model, aset: AttentionSet, settings: AttentionSettings) -> float:
    """A student's update on the set (no graph): the inner steps with the learned step size; the last loss."""
    model.eval()
    embeds = torch.from_numpy(aset.embeds)
    mask = torch.from_numpy(aset.mask())
    soft = torch.from_numpy(aset.soft_labels)
    probs = torch.from_numpy(aset.attention_labels)
    params = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
    params = inner_update(model, params, embeds, mask, soft, probs, settings, torch.tensor(aset.inner_lr),
                          create_graph=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name].detach())
        return float(inner_loss(model, dict(model.named_parameters()), embeds, mask, soft, probs,
                                settings.attention_weight))


def attention_with_base(base_dir: str, model_settings, vocab_size: int, num_classes: int, init: Ragged,
                        init_labels, init_soft, classifier_dirs, train: Ragged, train_soft,
                        settings: AttentionSettings, pad_id: int, num_threads: int | None = None) -> AttentionSet:
    """`distill_attention` with the students' base and the members loaded from their directories (a Ray task)."""
    from transformers import BertForMaskedLM

    from workers.committee.committee import load_members
    from workers.model.bert import build_classifier, transfer_encoder
    from workers.storage import checkpoint

    if num_threads:
        torch.set_num_threads(num_threads)
    attention = mean_cls_attention(load_members(classifier_dirs), init, pad_id)
    model = build_classifier(model_settings.bert_config(vocab_size, num_classes), num_classes)
    transfer_encoder(model, checkpoint.load_pretrained(BertForMaskedLM, base_dir))
    return distill_attention(eager_attention(model), init, init_labels, init_soft, attention, train, train_soft,
                             settings, pad_id)


def train_attention_student(spec, aset: AttentionSet, settings: AttentionSettings, test: Ragged,
                            test_labels: np.ndarray, pad_id: int, vocab_size: int, num_classes: int,
                            num_threads: int | None = None) -> dict:
    """Post-evaluation of an attention set: the student `spec` (pre-trained base, its seed's head) takes the
    set's update, then is scored on `test` (a Ray task; the row has the fields of `train_student`'s)."""
    from workers.committee.voting import accuracy
    from workers.distill.students import build_student
    from workers.train.finetune import predict_logits

    if num_threads:
        torch.set_num_threads(num_threads)
    t0 = time.perf_counter()
    model = eager_attention(build_student(spec, vocab_size, num_classes))
    final_loss = train_on_attention_set(model, aset, settings)
    train_s = time.perf_counter() - t0
    test_logits = predict_logits(model, test, pad_id)
    return {"method": spec.method, "ipc": spec.ipc, "seed": spec.seed, "examples": len(aset),
            "test_accuracy": accuracy(test_logits, test_labels), "final_loss": final_loss,
            "steps": settings.inner_steps, "train_s": round(train_s, 3)}
