"""Member groups: one actor pre-trains G members of one shape as one stacked model (workers/model/stacked.py).

This module trains the stack: its optimizer and clip, one step of every member, and running a group with
per-member checkpoints. What stays each member's own:
- weights and AdamW state: slice [g] of the stacked tensors. AdamW is elementwise, so one fused AdamW
  over the stacked tensors is G AdamWs (with the solo loop's groups: no decay on biases and LayerNorm);
- the gradient-norm clip: each member's norm over its own slices, as `clip_grad_norm_` clips it alone;
- the loss: the sum of the members' mean losses, so each member's gradient is the one it gets alone;
- data order, masks and dropout: from its own named seed streams (workers.train.seeds), drawn as the solo
  loop draws them: `batch_at`, `mask_tokens`, and dropout masks from a generator seeded like the solo
  loop's `pretrain/dropout` stream (`workers.model.stacked.DropoutStreams`). On a CPU a member's loss curve in
  a group therefore equals its curve alone (to float rounding; tests/test_groups.py).

Checkpoints are per member and in the solo format (workers.storage.checkpoint: a `BertForMaskedLM`'s weights and a
solo AdamW's state dict), so a member's checkpoint from a group resumes alone and the other way round.
Members resuming from different steps train in segments: those furthest behind train (as a smaller
stack) until they reach the next ones, which then join the stack.
Fine-tuning stays per member: after the group's pre-training each member fine-tunes as it would alone.

With `compile` on (PretrainSettings), a step runs the stack's forward pass and losses through
`workers.model.stacked.compiled_stack_losses`, its dropout masks drawn ahead (the eager pass's masks), so a
compiled group's loss curves are the eager group's (tests/test_compile.py).
The losses are read back from the device only when logged or checkpointed.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from workers.model.devices import describe, to_device
from workers.model.precision import choice_stats, resolve_here
from workers.model.stacked import DropoutStreams, StackedMLM, compiled_stack_losses, masked_rows, stack_losses
from workers.storage import checkpoint
from workers.text.masking import mask_tokens
from workers.train import pretrain as member_loop
from workers.train.pretrain import RESUME_KEYS, PretrainSettings, SpecialIds, autocast, batch_at
from workers.train.schedule import warmup_linear
from workers.train.seeds import torch_generator

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # the solo loop's clip


# ----------------------------------------------------------------------------------------------
# optimizer, clip, one step


def group_optimizer(model: StackedMLM, settings: PretrainSettings):
    """`workers.train.schedule.make_optimizer` for a stack: one fused AdamW with the solo loop's parameter groups
    (decay on a member's weights of 2+ axes, none on biases and LayerNorm), in the solo order, so parameter
    i of its state dict is parameter i of a member's solo optimizer; the same warm-up/linear-decay schedule."""
    decay = [w for w in model.weights if w.dim() - 1 >= 2]
    no_decay = [w for w in model.weights if w.dim() - 1 < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(settings.warmup_steps, settings.max_steps))
    return optimizer, scheduler


@torch.no_grad()
def clip_member_grad_norms_(weights, max_norm: float = MAX_GRAD_NORM) -> torch.Tensor:
    """Clip each member's gradient to `max_norm` over its own slices, as `clip_grad_norm_` clips it alone;
    returns the members' norms [G] before clipping."""
    grads = [w.grad for w in weights if w.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [tensors, G]
    total = torch.linalg.vector_norm(norms, dim=0)  # [G]
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return total


def group_train_step(model: StackedMLM, optimizer, scheduler, batches: torch.Tensor, special: SpecialIds,
                     settings: list[PretrainSettings], step: int, precision: str) -> tuple[list[float], list[int]]:
    """One optimizer step of every member on its own batch: batches [G, b, s] (CPU). Member g's masks and
    dropout come from its streams at `step`, as in `workers.train.pretrain.train_step`.
    Returns (each member's loss, each member's real tokens)."""
    losses, real_tokens = queue_group_step(model, optimizer, scheduler, batches, special, settings, step, precision)
    return losses.tolist(), real_tokens


def queue_group_step(model: StackedMLM, optimizer, scheduler, batches: torch.Tensor, special: SpecialIds,
                     settings: list[PretrainSettings], step: int, precision: str) -> tuple[torch.Tensor, list[int]]:
    """`group_train_step` without reading the losses back: returns (the losses [G] on the model's device, each
    member's real tokens). On a GPU nothing here waits for the device. With `settings[0].compile` the forward
    pass runs compiled, its dropout masks drawn ahead (the same masks as the eager pass)."""
    masked = [mask_tokens(batches[g], special.never_masked(), special.mask, special.vocab_size, s.mask_prob,
                          torch_generator(s.seed, "pretrain/mask", step)) for g, s in enumerate(settings)]
    inputs = torch.stack([m[0] for m in masked])  # [G, b, s]
    order, targets, counts = masked_rows(torch.stack([m[1] for m in masked]).flatten(1))  # on the CPU
    is_real = batches != special.pad
    real_tokens = is_real.flatten(1).sum(1).tolist()
    key_padding = None if bool(is_real.all()) else is_real
    device = model.device
    if device.type != "cpu":
        inputs, order, targets, counts = (to_device(t, device) for t in (inputs, order, targets, counts))
        key_padding = None if key_padding is None else to_device(key_padding, device)
    drop = DropoutStreams([torch_generator(s.seed, "pretrain/dropout", step, device=device) for s in settings])
    with autocast(precision, device):
        if settings[0].compile:
            masks = drop.draw(model.dropout_shapes(batches.shape[1], batches.shape[2]), device)
            torch._dynamo.mark_dynamic(order, 1)
            torch._dynamo.mark_dynamic(targets, 1)
            compiled = compiled_stack_losses(member_loop.COMPILE_BACKEND)
            losses = compiled(model, inputs, key_padding, order, targets, counts, masks)
        else:
            losses = stack_losses(model, inputs, key_padding, order, targets, counts, drop)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    clip_member_grad_norms_(model.weights)
    optimizer.step()
    scheduler.step()
    return losses.detach(), real_tokens


# ----------------------------------------------------------------------------------------------
# per-member state in the solo format


def member_optimizer_state(group_state: dict, member: int) -> dict:
    """Member `member`'s solo AdamW state dict (CPU tensors) from the stack's optimizer state dict."""
    state = {index: {key: (value if key == "step" else value[member]).to("cpu", copy=True)
                     for key, value in entries.items()}
             for index, entries in group_state["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(group_state["param_groups"])}


def stack_optimizer_states(states: list[dict]) -> dict:
    """The stack's optimizer state dict from its members' solo state dicts (all at the same step)."""
    first = states[0]
    stacked = {}
    for index, entries in first["state"].items():
        stacked[index] = {}
        for key, value in entries.items():
            if key == "step":
                steps = {float(s["state"][index][key]) for s in states}
                if len(steps) != 1:
                    raise ValueError(f"members stacked together must be at one optimizer step (got {sorted(steps)})")
                stacked[index][key] = value
            else:
                stacked[index][key] = torch.stack([s["state"][index][key] for s in states])
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


@dataclass
class GroupMember:
    """One member's side of a group: its model (on the CPU) and counters, as its solo loop would keep them."""

    name: str
    settings: PretrainSettings
    model: torch.nn.Module  # BertForMaskedLM on the CPU; holds the weights between segments and at the end
    checkpoint_dir: object | None = None
    step: int = 0
    tokens: int = 0
    train_s: float = 0.0
    loss: float = math.nan
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None

    def resume(self) -> None:
        """Load the newest checkpoint (from a group or from the solo loop), if there is one."""
        ckpt = checkpoint.latest(self.checkpoint_dir, RESUME_KEYS) if self.checkpoint_dir else None
        if ckpt is None:
            return
        state = checkpoint.load_state(ckpt, RESUME_KEYS)  # safetensors + JSON only, never a pickle
        self.model.load_state_dict(checkpoint.load_weights(ckpt, "cpu"), strict=False)
        self.model.tie_weights()
        self.optimizer_state, self.scheduler_state = state["optimizer"], state["scheduler"]
        self.step, self.tokens, self.train_s, self.loss = state["step"], state["tokens"], state["train_s"], state["loss"]
        log.info("%s resumed pre-training from %s (step %d)", self.name, ckpt, self.step)

    def save_checkpoint(self) -> None:
        checkpoint.save(self.checkpoint_dir, self.step, self.model, {
            "optimizer": self.optimizer_state, "scheduler": self.scheduler_state,
            "step": self.step, "tokens": self.tokens, "train_s": self.train_s, "loss": self.loss,
        })


def check_groupable(settings: list[PretrainSettings]) -> None:
    """Members of a group step together: every pre-training setting but the seed must be the same."""
    base = replace(settings[0], seed=0)
    for s in settings[1:]:
        if replace(s, seed=0) != base:
            raise ValueError(f"members of a group must share every pre-training setting but the seed: "
                             f"{base} against {replace(s, seed=0)}")


# ----------------------------------------------------------------------------------------------
# the group loop


def _record(member: GroupMember, window_tokens: int, window_s: float, lr: float, group_size: int) -> dict:
    return {"phase": "pretrain", "step": member.step, "max_steps": member.settings.max_steps, "loss": member.loss,
            "lr": lr, "tokens_per_s": window_tokens / max(window_s, 1e-9), "group_size": group_size}


def _sync_members(active: list[GroupMember], model: StackedMLM, optimizer, scheduler) -> None:
    """Write the stack's weights and optimizer state back into each member (the solo format)."""
    model.write_back([m.model for m in active])
    group_state = optimizer.state_dict()
    for g, member in enumerate(active):
        member.optimizer_state = member_optimizer_state(group_state, g)
        member.scheduler_state = scheduler.state_dict()


def train_segment(active: list[GroupMember], stop: int, blocks: np.ndarray, special: SpecialIds, precision: str,
                  device, on_log: Callable[[str, dict], None] | None = None) -> None:
    """Train `active` (all at one step) as one stack up to step `stop`, checkpointing each member as its
    solo loop would; the members hold the weights and optimizer state afterwards."""
    settings = active[0].settings
    model = StackedMLM([m.model for m in active], device=device).train()
    optimizer, scheduler = group_optimizer(model, settings)
    if active[0].optimizer_state is not None:
        optimizer.load_state_dict(stack_optimizer_states([m.optimizer_state for m in active]))
        scheduler.load_state_dict(active[0].scheduler_state)
    window_tokens, window_t0 = [0] * len(active), time.perf_counter()
    for step in range(active[0].step, stop):
        t0 = time.perf_counter()
        rows = np.stack([batch_at(blocks, step, m.settings.batch_size, m.settings.seed) for m in active])
        losses, real = queue_group_step(model, optimizer, scheduler, torch.from_numpy(rows).long(), special,
                                        [m.settings for m in active], step, precision)
        done = step + 1
        logs = on_log is not None and (done % settings.log_every == 0 or done == settings.max_steps)
        saves = done % settings.checkpoint_every == 0 or done == settings.max_steps
        read = logs or saves or done == stop
        values = losses.tolist() if read else None  # waits for the device: the queued steps count here
        spent = time.perf_counter() - t0
        for g, member in enumerate(active):
            member.step = step + 1
            member.loss = values[g] if read else member.loss
            member.tokens += real[g]
            member.train_s += spent  # each member spent the group's time
            window_tokens[g] += real[g]
        if logs:
            now = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            for g, member in enumerate(active):
                on_log(member.name, _record(member, window_tokens[g], now - window_t0, lr, len(active)))
            window_tokens, window_t0 = [0] * len(active), now
        if saves:
            _sync_members(active, model, optimizer, scheduler)
            for member in active:
                if member.checkpoint_dir:
                    member.save_checkpoint()
    _sync_members(active, model, optimizer, scheduler)


def pretrain_group(members: list[GroupMember], blocks: np.ndarray, special: SpecialIds, device=None,
                   on_log: Callable[[str, dict], None] | None = None) -> list[dict]:
    """Pre-train `members` (BertForMaskedLM models of one shape on the CPU, one pre-training setting but the
    seed) as stacks on `device`; each resumes from its newest checkpoint (solo or group). Returns each member's
    stats as `workers.train.pretrain.pretrain` returns them, plus "group_size"; the models hold the trained weights."""
    device = torch.device(device or "cpu")
    check_groupable([m.settings for m in members])
    choice = resolve_here(members[0].settings.precision, device)  # resolved where the group runs
    for member in members:
        member.settings = replace(member.settings, precision=choice.precision)
        member.resume()
    max_steps = members[0].settings.max_steps
    while True:
        behind = [m for m in members if m.step < max_steps]
        if not behind:
            break
        start = min(m.step for m in behind)
        active = [m for m in behind if m.step == start]
        stop = min((m.step for m in behind if m.step > start), default=max_steps)
        train_segment(active, stop, blocks, special, choice.precision, device, on_log)
    return [{"steps": max_steps, "tokens": m.tokens, "train_s": m.train_s,
             "tokens_per_s": m.tokens / m.train_s if m.train_s else 0.0, "final_loss": m.loss,
             "group_size": len(members), "device": describe(device), **choice_stats(choice)} for m in members]


# ----------------------------------------------------------------------------------------------
# members of a run: pre-train as a group, then each member as it would run alone


def pretrain_members(specs: list, arrays, on_log: Callable[[str, dict], None] | None = None) -> None:
    """Pre-train the pre-training members of `specs` (MemberSpecs) as one group and save each member's
    masked LM and stats where `workers.train.member.run_member` looks for them (members already finished are
    skipped): each then fine-tunes as it would alone."""
    from workers.model.devices import member_device
    from workers.train.member import finished_pretraining, initial_mlm, pretrain_checkpoints, save_pretrained_mlm

    todo = [s for s in specs if s.pretrains and finished_pretraining(s) is None]
    if not todo:
        return
    members = [GroupMember(s.name, s.pretrain, initial_mlm(s, arrays), pretrain_checkpoints(s)) for s in todo]
    stats = pretrain_group(members, arrays.blocks, arrays.special, device=member_device(), on_log=on_log)
    for spec, member, member_stats in zip(todo, members, stats):
        save_pretrained_mlm(spec, member.model, member_stats)


def run_group(specs: list, arrays, on_log: Callable[[str, dict], None] | None = None) -> dict:
    """Run a group of members start to finish: {name: MemberResult}. Members that already finished (a
    restarted actor) are loaded; two or more that pre-train do so as one stack; then each member runs
    `run_member` (its pre-training found finished), so fine-tuning and results are exactly per member.
    A group of one is the solo loop."""
    from workers.train.member import load_result, run_member

    results = {}
    for spec in specs:
        done = load_result(spec.out_dir)
        if done is not None:
            results[spec.name] = done
    todo = [s for s in specs if s.name not in results]
    if sum(s.pretrains for s in todo) > 1:
        pretrain_members(todo, arrays, on_log)
    for spec in todo:
        member_log = None if on_log is None else functools.partial(on_log, spec.name)
        results[spec.name] = run_member(spec, arrays, on_log=member_log)
    return results


def member_training_bytes(model, pretrain: PretrainSettings, vocab_size: int) -> int:
    """A rough upper estimate of one member's GPU memory while it pre-trains in a group (fp32 weights,
    gradients and two AdamW moments; fp32 activations of its batch; logits at its masked positions).
    `model` is a `ModelSettings`. At hidden 768, vocab 30,522, batch 32 x 128 it gives about 1.2 GB
    (64 members were measured at 58 GiB together on an H200)."""
    h, layers = model.hidden_size, model.num_layers
    ffn = model.intermediate_size or 4 * h
    params = (vocab_size + model.max_position + 2) * h + vocab_size + 4 * h  # embeddings, MLM bias, LayerNorms
    params += layers * (4 * h * h + 2 * h * ffn + 9 * h + ffn) + h * h + 3 * h  # encoder layers, MLM transform
    tokens = pretrain.batch_size * model.max_position
    heads = model.num_heads
    activations = tokens * layers * (16 * h + 3 * ffn + 3 * heads * model.max_position)
    logits = int(pretrain.mask_prob * tokens) * vocab_size * 3
    return 4 * (4 * params + activations + logits)
