"""Plans: pure functions from a config to the member specs of a run."""

from __future__ import annotations

from pathlib import Path

from workers import checkpoint
from workers.member import MemberSpec

DEEP_SEED_OFFSET = 10_000  # the deep baseline's seed: base seed + this (never a member's seed)


def member_specs(cfg, run_dir: str | Path, members_root: str | Path | None = None) -> list[MemberSpec]:
    """K pre-trained members, the deep model (if enabled), then K scratch members, in launch order.

    Member i (pre-trained or scratch) has seed = cfg.seed + i; the deep model pre-trains on the
    token budget of one member (same steps) or of the whole committee (K x steps). Member outputs go
    under `members_root` (a path or a storage URI), by default `run_dir/members`.
    """
    root = members_root if members_root is not None else Path(run_dir) / "members"

    def out(name: str) -> str:
        return str(checkpoint.join(root, name))

    k = cfg.committee.members
    layers = cfg.model.num_layers
    steps = cfg.pretrain.max_steps
    specs = [MemberSpec(f"member-{i:02d}", i, cfg.seed + i, True, layers, steps, out(f"member-{i:02d}"))
             for i in range(k)]
    if cfg.deep.enabled:
        deep_steps = steps * (k if cfg.deep.token_budget == "committee" else 1)
        specs.append(MemberSpec("deep", 0, cfg.seed + DEEP_SEED_OFFSET, True, cfg.deep.num_layers, deep_steps,
                                out("deep")))
    if cfg.committee.scratch:
        specs += [MemberSpec(f"scratch-{i:02d}", i, cfg.seed + i, False, layers, 0, out(f"scratch-{i:02d}"))
                  for i in range(k)]
    return specs
