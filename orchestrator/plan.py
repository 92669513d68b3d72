"""Plans: pure functions from a validated config to the typed member specs of a run.

This is the one place where the config's sections become the settings the training loops take
(`ModelSettings`, `PretrainSettings`, `FinetuneSettings`); every command (run, sweep, distill) plans
its members here.
"""

from __future__ import annotations

from workers.finetune import FinetuneSettings
from workers.member import MemberSpec, Role
from workers.models import ModelSettings
from workers.pretrain import PretrainSettings

DEEP_SEED_OFFSET = 10_000  # the deep baseline's seed: base seed + this (never a member's seed)


def model_settings(cfg, num_layers: int | None = None) -> ModelSettings:
    m = cfg.model
    return ModelSettings(hidden_size=m.hidden_size, num_heads=m.num_heads,
                         num_layers=m.num_layers if num_layers is None else num_layers,
                         intermediate_size=m.intermediate_size, max_position=m.max_position, dropout=m.dropout)


def pretrain_settings(cfg, seed: int, max_steps: int | None = None) -> PretrainSettings:
    p = cfg.pretrain
    return PretrainSettings(seed=seed, max_steps=p.max_steps if max_steps is None else max_steps,
                            batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay,
                            warmup_steps=p.warmup_steps, mask_prob=p.mask_prob, precision=p.precision,
                            checkpoint_every=p.checkpoint_every, log_every=p.log_every)


def finetune_settings(cfg, seed: int) -> FinetuneSettings:
    f = cfg.finetune
    return FinetuneSettings(seed=seed, epochs=f.epochs, batch_size=f.batch_size, lr=f.lr,
                            weight_decay=f.weight_decay, warmup_ratio=f.warmup_ratio, precision=f.precision)


def member_spec(cfg, role: Role, index: int, out_dir: str) -> MemberSpec:
    """One member of `role` at committee index `index` (member and scratch twin share seed = base + index)."""
    if role is Role.DEEP:
        seed = cfg.seed + DEEP_SEED_OFFSET
        steps = cfg.pretrain.max_steps * (cfg.committee.members if cfg.deep.token_budget == "committee" else 1)
        return MemberSpec("deep", role, index, seed, model_settings(cfg, cfg.deep.num_layers),
                          pretrain_settings(cfg, seed, steps), finetune_settings(cfg, seed), out_dir)
    seed = cfg.seed + index
    pretrain = pretrain_settings(cfg, seed) if role is Role.PRETRAINED else None
    return MemberSpec(member_name(role, index), role, index, seed, model_settings(cfg), pretrain,
                      finetune_settings(cfg, seed), out_dir)


def member_name(role: Role, index: int) -> str:
    return {Role.PRETRAINED: f"member-{index:02d}", Role.SCRATCH: f"scratch-{index:02d}", Role.DEEP: "deep"}[role]


def member_specs(cfg, layout) -> list[MemberSpec]:
    """K pre-trained members, the deep model (if enabled), then K scratch members, in launch order.

    Member outputs go to `layout.member_dir(name)` (a `RunLayout`: a path, or a storage URI).
    """
    k = cfg.committee.members
    roles = [(Role.PRETRAINED, i) for i in range(k)]
    if cfg.deep.enabled:
        roles.append((Role.DEEP, 0))
    if cfg.committee.scratch:
        roles += [(Role.SCRATCH, i) for i in range(k)]
    return [member_spec(cfg, role, i, str(layout.member_dir(member_name(role, i)))) for role, i in roles]

