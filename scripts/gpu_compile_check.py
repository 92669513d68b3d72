"""Compiled against eager on this machine's device: the loss curves of the member loop and of a group of 3.

tests/test_compile.py checks this on the CPU; here the same comparison runs where the speed is wanted (a GPU),
in fp32 with dropout on, at a small shape, from the same seeds, data and masks. The member loop's compiled
dropout draws from torch's generator (inductor's fallback_random) and a group's masks are drawn ahead, so on a
CPU both curves equal the eager ones to float rounding; on a GPU a fused kernel may draw other values than its
decomposition, and this check says how close the curves stay there.

python scripts/gpu_compile_check.py --device cuda --tokenizer DIR --json FILE [--backend inductor]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = 6
SEEDS = (3, 4, 5)


def blocks_and_special(tokenizer_dir: str):
    """64-token blocks of the first 60 articles of the seeded order, with the given tokenizer."""
    from workers.data.loading import pretraining_articles, resolve_data_root
    from workers.text.corpus import encode, pack_blocks
    from workers.text.tokenizer import load_tokenizer
    from workers.train.pretrain import SpecialIds

    tokenizer = load_tokenizer(tokenizer_dir)
    special = SpecialIds.of(tokenizer)
    raw = encode(tokenizer, pretraining_articles(resolve_data_root(None), 60, 0), special=False)
    return pack_blocks(raw, 64, special.cls, special.sep, special.pad), special


def member(special, seed: int):
    from workers.model.bert import bert_config, build_mlm, init_from_streams

    model = build_mlm(bert_config(special.vocab_size, 64, 2, 1, max_position=64))
    init_from_streams(model, seed, "init/pretrained")
    return model.train()


def settings(seed: int, compiled: bool):
    from workers.train.pretrain import PretrainSettings

    return PretrainSettings(seed=seed, max_steps=STEPS, batch_size=16, lr=5e-3, weight_decay=0.01, warmup_steps=0,
                            mask_prob=0.15, precision="fp32", checkpoint_every=1000, log_every=1000, compile=compiled)


def solo_curve(blocks, special, device: str, compiled: bool) -> list[float]:
    from workers.train.pretrain import batch_at, train_step
    from workers.train.schedule import make_optimizer

    s = settings(SEEDS[0], compiled)
    model = member(special, s.seed).to(device)
    optimizer, scheduler = make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
    return [train_step(model, optimizer, scheduler, torch.from_numpy(batch_at(blocks, step, 16, s.seed)).long(),
                       special, s, step)[0] for step in range(STEPS)]


def group_curves(blocks, special, device: str, compiled: bool) -> list[list[float]]:
    from workers.model.stacked import StackedMLM
    from workers.train.groups import group_optimizer, group_train_step
    from workers.train.pretrain import batch_at

    group = [settings(seed, compiled) for seed in SEEDS]
    model = StackedMLM([member(special, seed) for seed in SEEDS], device=device).train()
    optimizer, scheduler = group_optimizer(model, group[0])
    curves = []
    for step in range(STEPS):
        rows = torch.from_numpy(np.stack([batch_at(blocks, step, 16, s.seed) for s in group])).long()
        curves.append(group_train_step(model, optimizer, scheduler, rows, special, group, step, "fp32")[0])
    return curves


def compare(name: str, run) -> dict:
    """Eager, then compiled (timed: the first step compiles); the largest relative difference of the curves."""
    eager = np.array(run(False))
    t0 = time.perf_counter()
    compiled = np.array(run(True))
    seconds = time.perf_counter() - t0
    rel = float(np.max(np.abs(compiled - eager) / np.abs(eager)))
    print(f"{name}: eager {np.round(eager, 4).tolist()}\n{name}: compiled {np.round(compiled, 4).tolist()}\n"
          f"{name}: largest relative difference {rel:.2e}; compiled run {seconds:.1f} s (compilation included)",
          flush=True)
    return {"eager": eager.tolist(), "compiled": compiled.tolist(), "max_relative_difference": rel,
            "compiled_s": seconds}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--backend", default="inductor", help="torch.compile's backend (aot_eager: no code generation)")
    ap.add_argument("--tokenizer", required=True, help="a saved tokenizer")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    from workers.train import pretrain as member_loop

    member_loop.COMPILE_BACKEND = args.backend
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 on both sides: the comparison is of the compiler alone
    torch.backends.cudnn.allow_tf32 = False
    blocks, special = blocks_and_special(args.tokenizer)
    result = {"device": args.device, "backend": args.backend, "steps": STEPS}
    # saved after each comparison: a run stopped at its time limit (each compiles once) keeps the first
    result["member_loop"] = compare("member loop", lambda c: solo_curve(blocks, special, args.device, c))
    Path(args.json).write_text(json.dumps(result, indent=1))
    result["group_of_3"] = compare("group of 3", lambda c: group_curves(blocks, special, args.device, c))
    Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
