"""Claim 4's latency, on a block's own checkpoints: the committee as `committee predict` runs it against BERT-6.

The contenders answer the same requests of real test examples, alternating request by request (the order
flips every request), in this process and on the CPU, so load from other processes weighs on both alike
and their ratio is what to read (`bench.timing.alternate_latency`, as `committee bench` times them):
- `committee_packed`: the run's fine-tuned members in one packed forward (`Committee.packed`, what
  `committee predict` runs), then the soft vote;
- `deep_packed_kernels`: the run's fine-tuned BERT-6 through the same packed kernels (K = 1, its last layer
  at [CLS] only, the same trick the members get);
- `deep_hf`: the same BERT-6 as Hugging Face runs it.
The ratio is the committee's median over the faster of BERT-6's two medians.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from orchestrator.run.finished import load_committee
from orchestrator.run.prepare import load_cfg_task
from orchestrator.run.rundir import RunLayout, read_finished
from workers.errors import CommitteeError
from workers.storage import checkpoint

LATENCY_FILE = "latency.json"
DEEP = "deep"


def _deep_model(run):
    """The run's fine-tuned deep model (BertForSequenceClassification, eval mode, CPU)."""
    from workers.committee.committee import load_members

    classifier = checkpoint.join(RunLayout.of(run.config, run.run_dir).member_dir(DEEP), "classifier")
    if not checkpoint.exists(checkpoint.join(classifier, checkpoint.MODEL_FILE)):
        raise CommitteeError(f"{run.run_dir} holds no fine-tuned deep model ({classifier}); claim 4 needs a run with "
                             f"deep.enabled: true")
    return load_members([classifier])[0]


def _served(fn):
    def serve(request):
        ids, mask = (torch.from_numpy(a) for a in request)
        with torch.no_grad():
            return fn(ids, mask)
    return serve


def contenders(run_dir: Path) -> tuple[dict, object]:
    """{name: request -> decision} for the committee and BERT-6 of a finished run, and its test examples."""
    from bench.serving import soft_vote
    from workers.committee.committee import Committee
    from workers.text.corpus import encode

    run = read_finished(run_dir)
    committee = load_committee(run)
    if not committee.packs:
        raise CommitteeError(f"{run_dir}: the members do not share one shape, so they cannot run packed")
    deep = _deep_model(run)
    deep_packed = Committee([deep], [DEEP], np.zeros(1), committee.pad_id).packed()
    members_packed = committee.packed()
    texts = load_cfg_task(run.config).test_texts
    examples = encode(committee.tokenizer, texts, max_length=run.config.task.max_length)
    fns = {"committee_packed": lambda ids, mask: soft_vote(members_packed(ids, mask).float().numpy()),
           "deep_packed_kernels": lambda ids, mask: deep_packed(ids, mask)[0].argmax(-1).numpy(),
           "deep_hf": lambda ids, mask: deep(input_ids=ids, attention_mask=mask).logits.argmax(-1).numpy()}
    return {name: _served(fn) for name, fn in fns.items()}, (examples, committee.pad_id, len(committee))


def measure(run_dir: Path, batch_sizes: list[int], requests: int, warmup: int, seed: int) -> dict:
    """Median and 95th-percentile latency (ms) of each contender per batch size, and the committee's ratio to
    BERT-6 (its median over the faster of BERT-6's two medians)."""
    from bench.serving import latency_requests
    from bench.timing import alternate_latency, latency_ms

    served, (examples, pad_id, members) = contenders(Path(run_dir))
    out = {"members": members, "threads": torch.get_num_threads(), "requests": requests, "warmup": warmup,
           "device": "cpu", "batches": {}}
    for batch in batch_sizes:
        batch_requests = latency_requests(examples, batch, warmup + requests, pad_id, seed, f"claims/{batch}")
        seconds = alternate_latency(served, batch_requests, warmup=warmup)
        stats = {name: latency_ms(s[warmup:]) for name, s in seconds.items()}
        deep_p50 = min(stats["deep_packed_kernels"]["p50_ms"], stats["deep_hf"]["p50_ms"])
        out["batches"][str(batch)] = {"latency": stats, "ratio_p50": stats["committee_packed"]["p50_ms"] / deep_p50}
    out["load_average"] = list(os.getloadavg())
    return out
