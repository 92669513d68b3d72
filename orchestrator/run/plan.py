"""Plans: pure functions from a validated config to the frozen settings the workers take.

This is the one place where the config's sections become what crosses into `workers/`: the settings the
training loops take (`ModelSettings`, `PretrainSettings`, `FinetuneSettings`), members (`MemberSpec`), a sweep
trial's pair of members (`TrialMembers`), a distillation's students (`StudentSpec`) and recover settings
(`RecoverSettings`). Every command (run, sweep, distill) plans here; nothing under `workers/` reads a config.
"""

from __future__ import annotations

import math
from dataclasses import replace

from workers.distill.attention import AttentionSettings
from workers.distill.recover import RecoverSettings
from workers.distill.students import StudentSpec, ViewTeacher
from workers.model.bert import ModelSettings
from workers.storage.checkpoint import join
from workers.train.finetune import FinetuneSettings
from workers.train.member import MemberSpec, Role
from workers.train.pretrain import PretrainSettings
from workers.train.trial import TrialMembers

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
                            checkpoint_every=p.checkpoint_every, log_every=p.log_every, compile=p.compile)


def finetune_settings(cfg, seed: int) -> FinetuneSettings:
    f = cfg.finetune
    return FinetuneSettings(seed=seed, epochs=f.epochs, batch_size=f.batch_size, lr=f.lr,
                            weight_decay=f.weight_decay, warmup_ratio=f.warmup_ratio, precision=f.precision)


def member_spec(cfg, role: Role, index: int, out_dir: str, pretrain_steps: int | None = None) -> MemberSpec:
    """One member of `role` at committee index `index` (member and scratch twin share seed = base + index);
    `pretrain_steps`: a pre-trained member's steps where they are not pretrain.max_steps (a sweep's budget)."""
    if role is Role.DEEP:
        seed = cfg.seed + DEEP_SEED_OFFSET
        steps = cfg.pretrain.max_steps * (cfg.committee.members if cfg.deep.token_budget == "committee" else 1)
        return MemberSpec("deep", role, index, seed, model_settings(cfg, cfg.deep.num_layers),
                          pretrain_settings(cfg, seed, steps), finetune_settings(cfg, seed), out_dir)
    seed = cfg.seed + index
    pretrain = pretrain_settings(cfg, seed, pretrain_steps) if role is Role.PRETRAINED else None
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


# ----------------------------------------------------------------------------------------------
# a sweep trial, and a distillation's non-member base, students and recover


def trial_members(cfg, point_id: str, index: int, pretrain_steps: int, out_root) -> TrialMembers:
    """A sweep trial at one point: the scratch twin and the pre-trained member of index `index` of the point's
    config `cfg`, the latter pre-training for `pretrain_steps`, both under `out_root` (a path or URI)."""
    scratch = member_spec(cfg, Role.SCRATCH, index, str(join(out_root, member_name(Role.SCRATCH, index))))
    pre = member_spec(cfg, Role.PRETRAINED, index, str(join(out_root, member_name(Role.PRETRAINED, index))),
                      pretrain_steps)
    return TrialMembers(scratch, pre, point_id)


STUDENT_BASE = "student-base"  # the pre-trained non-member a "pretrained" student starts from


def student_base_spec(cfg, out_dir: str) -> MemberSpec:
    """A member pre-trained like the committee's with seed + committee.members (an index outside the
    committee), of the students' shape; its fine-tuning is cut to one epoch (only its encoder is used)."""
    index, seed = cfg.committee.members, cfg.seed + cfg.committee.members
    finetune = finetune_settings(cfg, seed)
    return MemberSpec(STUDENT_BASE, Role.PRETRAINED, index, seed, model_settings(cfg, cfg.distill.student.num_layers),
                      pretrain_settings(cfg, seed), replace(finetune, epochs=1), out_dir)


def student_specs(cfg, method: str, ipc: int | None, base_dir, teacher: ViewTeacher | None = None,
                  seeds: int | None = None) -> list[StudentSpec]:
    """The students of one distilled set: seeds distill.seed + 0..n-1 (n = distill.student.seeds, or `seeds`),
    a fixed number of steps each (kd_full: distill.kd.steps). A student on a distilled set sees the augmented
    views of distill.student.augment, relabelled by `teacher` when one is given; the full split's row trains on
    its examples as they are (the members' own recipe: the reference every distilled set is measured against)."""
    st = cfg.distill.student
    steps = cfg.distill.kd.steps if method == "kd_full" else st.steps
    augment = "none" if method == "full" else st.augment
    specs = []
    for i in range(st.seeds if seeds is None else seeds):
        seed = cfg.distill.seed + i
        settings = FinetuneSettings(seed=seed, epochs=1, batch_size=st.batch_size, lr=st.lr,
                                    weight_decay=st.weight_decay, warmup_ratio=st.warmup_ratio,
                                    precision=cfg.finetune.precision, max_steps=steps,
                                    soft_target_temperature=st.temperature)
        specs.append(StudentSpec(method, ipc, seed, model_settings(cfg, st.num_layers), settings, st.init,
                                 None if base_dir is None else str(base_dir), augment=augment,
                                 crop_min_share=st.crop_min_share, teacher=teacher))
    return specs


def recover_settings(cfg) -> RecoverSettings:
    """CV-DD's recover as `distill.recover` sets it."""
    r = cfg.distill.recover
    return RecoverSettings(iterations=r.iterations, lr=r.lr, stats_weight=r.stats_weight, temperature=r.temperature,
                           init_probability=r.init_probability, keep_top=r.keep_top, augment=r.augment,
                           crop_min_share=r.crop_min_share, seed=cfg.distill.seed)


def attention_settings(cfg) -> AttentionSettings:
    """The attention-label distillation (Maekawa et al. 2023) as `distill.attention` sets it."""
    a = cfg.distill.attention
    return AttentionSettings(steps=a.steps, lr=a.lr, inner_steps=a.inner_steps, inner_lr=a.inner_lr,
                             attention_weight=a.attention_weight, real_batch=a.real_batch, seed=cfg.distill.seed)


# ----------------------------------------------------------------------------------------------
# member groups: members one actor trains as one stacked model (workers/train/groups.py)

MAX_MEMBERS_PER_ACTOR = 64  # beyond this a stack gains nothing measurable on an H200
GPU_MEMORY_SHARE = 0.8  # of a GPU's memory that `auto` plans to fill (the rest: CUDA context, allocator slack)


def group_key(spec: MemberSpec) -> tuple:
    """Members with equal keys can share a stack: pre-training members of one shape and one pre-training setting
    but the seed. A member that does not pre-train has a key of its own: it only fine-tunes, one member at a time
    in any actor, so in a group it would wait for the others where an actor of its own runs beside them."""
    if spec.pretrain is None:
        return ("alone", spec.name)
    return spec.model, replace(spec.pretrain, seed=0)


def group_specs(specs: list[MemberSpec], members_per_actor: int) -> list[list[MemberSpec]]:
    """The specs in groups of at most `members_per_actor` that can share a stack, in launch order (a group
    goes where its first member would); with 1, one group per member; members that do not pre-train (scratch
    twins) are groups of one."""
    buckets: dict[tuple, list[MemberSpec]] = {}
    for spec in specs:
        buckets.setdefault(group_key(spec), []).append(spec)
    groups = [bucket[i:i + members_per_actor] for bucket in buckets.values()
              for i in range(0, len(bucket), members_per_actor)]
    position = {spec.name: i for i, spec in enumerate(specs)}
    return sorted(groups, key=lambda group: position[group[0].name])


def auto_gpu_share(gpus_per_member: float, member_bytes: int, gpu_memory_bytes: int | None) -> float:
    """The GPU share each member of an `auto` group asks Ray for: `gpus_per_member`, or the share of
    GPU_MEMORY_SHARE of the GPU's memory that one member takes, when that is more. Ray packs actors on a GPU
    by their shares alone, so without this a group cut short by memory (24 members where the share allows
    100) would leave room for more groups on the same GPU, and together they would exceed its memory."""
    if gpus_per_member <= 0 or not gpu_memory_bytes:
        return gpus_per_member
    return min(1.0, max(gpus_per_member, member_bytes / (GPU_MEMORY_SHARE * gpu_memory_bytes)))


def auto_members_per_actor(gpus_per_member: float, member_bytes: int, gpu_memory_bytes: int | None,
                           members: int) -> int:
    """`resources.members_per_actor: auto`: 1 on CPU (a stack gains nothing there); on a GPU as many members as
    one GPU holds by both measures: their GPU shares (`gpus_per_member` each, so a stack stays on one GPU)
    and GPU_MEMORY_SHARE of its memory (`member_bytes` each); at most MAX_MEMBERS_PER_ACTOR and `members`."""
    if gpus_per_member <= 0:
        return 1
    by_share = math.floor(1.0 / auto_gpu_share(gpus_per_member, member_bytes, gpu_memory_bytes) + 1e-9)
    by_memory = MAX_MEMBERS_PER_ACTOR if not gpu_memory_bytes else math.floor(GPU_MEMORY_SHARE * gpu_memory_bytes
                                                                              / max(1, member_bytes))
    return max(1, min(by_share, by_memory, MAX_MEMBERS_PER_ACTOR, members))
