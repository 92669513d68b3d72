"""Section 3: committee latency in this process, K one-layer members against one deep model of the same
width: members one after another and packed into one batched forward, the deep model as Hugging Face
runs it and through the same packed kernels."""

from __future__ import annotations

import numpy as np
import torch

from bench.options import BATCH_SIZE, NUM_LABELS, BenchOptions, Sizes
from bench.prepare import Prepared
from bench.serving import committee_members, latency_requests, soft_vote
from bench.timing import alternate_latency, latency_ms, sync
from workers.model.packed import PackedCommittee


def _served(fn, device: str):
    """A contender for `alternate_latency`: a request of numpy arrays -> the decision, synced."""
    def serve(request):
        ids, mask = (torch.from_numpy(a).to(device) for a in request)
        with torch.no_grad():
            out = fn(ids, mask)
        sync(device)
        return out
    return serve


def _contenders(p: Prepared, opts: BenchOptions) -> dict:
    members = committee_members(p.member_config, NUM_LABELS, range(opts.members), opts.device)
    deep = committee_members(p.deep_config, NUM_LABELS, [0], opts.device)[0]
    packed = PackedCommittee.from_members(members)
    packed_deep = PackedCommittee.from_members([deep])

    def one_by_one(ids, mask):
        return soft_vote(np.stack([m(input_ids=ids, attention_mask=mask).logits.cpu().numpy() for m in members]))

    fns = {
        "members_one_by_one": one_by_one,
        "members_packed": lambda ids, mask: soft_vote(packed(ids, mask).cpu().numpy()),
        "deep_hf": lambda ids, mask: deep(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu().numpy(),
        "deep_packed_kernels": lambda ids, mask: packed_deep(ids, mask)[0].argmax(-1).cpu().numpy(),
    }
    return {name: _served(fn, opts.device) for name, fn in fns.items()}


def bench_latency_local(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    contenders = _contenders(p, opts)
    out: dict = {"members": opts.members, "deep_layers": p.deep_config.num_hidden_layers}
    for batch, count in ((1, sizes.latency_requests_b1), (BATCH_SIZE, sizes.latency_requests_b32)):
        echo(f"committee latency in one process: batch {batch}, {count} requests")
        requests = latency_requests(p.test, batch, count, p.special.pad, opts.seed, f"local/{batch}")
        seconds = alternate_latency(contenders, requests, warmup=2)
        stats = {name: latency_ms(s) for name, s in seconds.items()}
        deep_p50 = min(stats["deep_hf"]["p50_ms"], stats["deep_packed_kernels"]["p50_ms"])
        out[f"batch{batch}"] = stats
        out[f"ratio_p50_batch{batch}"] = stats["members_packed"]["p50_ms"] / deep_p50
        out[f"sequential_ratio_p50_batch{batch}"] = stats["members_one_by_one"]["p50_ms"] / deep_p50
    return out
