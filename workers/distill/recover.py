"""CV-DD's recover for text, in the soft-token space every member shares (`workers.distill.sets.SoftTokens`).

`recover` optimises per-position token logits, initialised from real examples of the class, with Adam
(betas 0.5, 0.9) on a cosine schedule (the first half of the iterations over the whole vocabulary, the
second half over each position's `keep_top` most probable tokens, which is what is saved) so that each
IPC index's guiding members (a pair drawn per index by `draw_guides`, mixed by softmax(alpha% / T),
`guide_weights`; or one expert) classify them as their class while their per-layer hidden-state means and
variances match those recorded on the real training split. An IPC index's examples are one group (CV-DD's
batch), and the loss is a sum over groups, so recovering indices in separate tasks gives what one task
would. `recover_with_members` is what a Ray task runs (members loaded from their weight directories).

With `augment: crop` every iteration shows the guiding members a random span crop of each example
(`workers.distill.augment`; CV-DD crops, flips and jitters every iteration): the same crop for both members of
a pair, drawn from the example's own stream (the seed and the example's place in the whole set), so splitting
the indices into tasks still changes nothing. The statistics are matched on the view, as CV-DD matches
BatchNorm statistics on its augmented batch; the positions outside the view get no gradient that iteration.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workers.committee.voting import softmax
from workers.distill.augment import crop_index, draw_windows, gather_positions
from workers.distill.sets import SoftTokens
from workers.text.corpus import Ragged
from workers.train.finetune import predict_logits
from workers.train.seeds import numpy_rng

FIRST_LAYER_WEIGHT = 10.0  # CV-DD weighs the first statistics layer (here: the embeddings' output) x10


@dataclass(frozen=True)
class RecoverSettings:
    iterations: int
    lr: float
    stats_weight: float  # CV-DD's r_bn
    temperature: float  # T of the pair weights softmax(val_accuracy% / T)
    init_probability: float  # probability of the real token at each free position at the start
    keep_top: int  # vocabulary entries kept per position in the result
    augment: str = "none"  # "crop": a random span crop of every example at every iteration
    crop_min_share: float = 0.5  # a crop keeps at least this share of an example's content
    seed: int = 0  # of the crops (stream distill/recover-crop, per example)


@dataclass
class RecoverResult:
    tokens: SoftTokens  # the saved form (top-k per position)
    labels: np.ndarray  # [n] int64
    ipc_index: np.ndarray  # [n] int64
    loss_curve: np.ndarray  # [iterations] total loss before each step
    guide_accuracy_before: float  # share of (example, guiding member) pairs classified as the example's class,
    # on the real examples recover starts from
    guide_accuracy_after: float  # the same on the saved result
    seconds: float
    phase_seconds: tuple[float, float] = (0.0, 0.0)  # (whole-vocabulary phase, top-k phase)


def guide_weights(members: tuple[int, ...], val_accuracy: np.ndarray, temperature: float) -> np.ndarray:
    """Weights of an IPC index's guiding members: softmax(alpha% / T) over them (1 for one expert); `val_accuracy`
    is the members' prior alpha in [0, 1] (CV-DD's: the accuracy of a student of each member's labels)."""
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

    def __init__(self, members, stats, val_accuracy, init: Ragged, labels, ipc_index, guides, settings, pad_id,
                 example_keys=None):
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
        self.lengths = lengths
        self.windows = None  # (starts, widths) [n, iterations] of each example's crops
        if settings.augment == "crop":
            keys = np.arange(n) if example_keys is None else np.asarray(example_keys)
            drawn = [draw_windows(np.array([max(0, int(lengths[i]) - 2)]), numpy_rng(settings.seed,
                                  "distill/recover-crop", int(keys[i])), settings.crop_min_share,
                                  size=settings.iterations) for i in range(n)]
            self.windows = (np.concatenate([d[0] for d in drawn]), np.concatenate([d[1] for d in drawn]))

    def view(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(gather index [n, s'], attention mask [n, s']) of iteration's crops; None without augmentation."""
        if self.windows is None:
            return None
        index, view_lengths = crop_index(self.lengths, self.windows[0][:, iteration], self.windows[1][:, iteration])
        index = torch.from_numpy(index).to(self.device)
        mask = (torch.arange(index.shape[1], device=self.device)[None, :]
                < torch.from_numpy(view_lengths).to(self.device)[:, None]).long()
        return index, mask

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

    def loss(self, probs: torch.Tensor, view=None) -> torch.Tensor:
        """Sum over guiding members and groups of weight x (mean CE + r * statistics), on the examples or,
        with `view` (`self.view(iteration)`), on their crops."""
        total = 0.0
        for part in self.plan:
            rows = part["rows"]
            embeds, mask = self._embed(part, probs), self.mask[rows]
            if view is not None:
                embeds, mask = gather_positions(embeds, view[0][rows]), view[1][rows]
            out = self.members[part["member"]](inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
            ce = F.cross_entropy(out.logits, self.labels[rows], reduction="none")  # [rows]
            groups = part["groups"]
            ce_group = (groups @ ce) / groups.sum(dim=1)  # [G]
            term = ce_group + self.settings.stats_weight * self._stats_loss(part, out.hidden_states, mask)
            total = total + (part["weights"] * term).sum()
        return total

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
            on_log=None, example_keys: np.ndarray | None = None) -> RecoverResult:
    """CV-DD's recover on real examples `init` (labels [n], ipc_index [n] in 0..G-1 with guides[g] the
    guiding members of index g); `stats` the members' real-data HiddenStats; members frozen, in eval mode;
    `val_accuracy` the members' prior alpha in [0, 1]; `example_keys` [n] each example's place in the whole
    set (its crop stream; default 0..n-1)."""
    t0 = time.perf_counter()
    problem = _RecoverProblem(members, stats, val_accuracy, init, labels, ipc_index, guides, settings, pad_id,
                              example_keys)
    before = guided_accuracy(members, real_tokens(init, pad_id), labels, ipc_index, guides, pad_id)
    dense_steps = settings.iterations - settings.iterations // 2
    losses, phase_seconds = [], []  # losses: 0-d tensors on the device, read at the end
    log_every = max(1, settings.iterations // 10)
    for phase_steps in (dense_steps, settings.iterations - dense_steps):
        phase_start = time.perf_counter()
        if phase_steps == 0:
            phase_seconds.append(0.0)
            continue
        if len(losses) == dense_steps:
            problem.sparsify()  # the second half optimises the distributions that will be saved
        optimizer = torch.optim.Adam([problem.logits], lr=settings.lr, betas=(0.5, 0.9))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=phase_steps)
        for _ in range(phase_steps):
            loss = problem.loss(torch.softmax(problem.logits, dim=1), problem.view(len(losses)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
            if on_log and len(losses) % log_every == 0:  # reads the device: only at the logged iterations
                on_log({"phase": "recover", "step": len(losses), "iterations": settings.iterations,
                        "loss": losses[-1].item()})
        if problem.device.type == "cuda":
            torch.cuda.synchronize(problem.device)  # once per phase: the phase's time includes its queued work
        phase_seconds.append(time.perf_counter() - phase_start)
    curve = torch.stack(losses).tolist() if losses else []
    tokens = problem.result_tokens(pad_id)
    after = guided_accuracy(members, tokens, labels, ipc_index, guides, pad_id)
    return RecoverResult(tokens, np.asarray(labels, dtype=np.int64), np.asarray(ipc_index, dtype=np.int64),
                         np.array(curve), before, after, time.perf_counter() - t0, tuple(phase_seconds))


def recover_with_members(classifier_dirs, val_accuracy: np.ndarray, stats, init: Ragged, labels: np.ndarray,
                         ipc_index: np.ndarray, guides: list[tuple[int, ...]], settings: RecoverSettings, pad_id: int,
                         num_threads: int | None = None, example_keys: np.ndarray | None = None) -> RecoverResult:
    """`recover` with the members loaded from their weight directories (what a Ray task is given)."""
    from workers.committee.committee import load_members
    from workers.model.devices import member_device

    if num_threads:
        torch.set_num_threads(num_threads)
    members = [m.to(member_device()) for m in load_members(classifier_dirs)]
    return recover(members, stats, val_accuracy, init, labels, ipc_index, guides, settings, pad_id,
                   example_keys=example_keys)


def real_tokens(examples: Ragged, pad_id: int) -> SoftTokens:
    """Real examples as SoftTokens (each position its token with probability 1)."""
    lengths = examples.lengths()
    ids = np.full((len(examples), int(lengths.max()), 1), pad_id, dtype=np.int32)
    for i in range(len(examples)):
        ids[i, :lengths[i], 0] = examples.row(i)
    return SoftTokens(ids, np.ones(ids.shape, dtype=np.float32), lengths.astype(np.int64))


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
