"""`committee bench`: the side-by-side throughput and latency benchmark (driver side).

Sections, each on the same model shape and the same real text:
1. pre-training: the authors' loop against the member loop (real tokens/s, model FLOP/s over the
   matmul peak measured in the same run);
2. fine-tuning and prediction on AG News: pad-to-128 against length-bucketed dynamic padding;
3. committee latency, K members against one deep model: (a) in this process, members one after
   another and packed into one batched forward; (b) one member worker per core through Ray, with the
   vote, and the projection to K workers;
4. scaling of member pre-training from 1 to 2 Ray worker processes, and a member actor's peak memory;
on CUDA also members per GPU: fractional-GPU Ray actors against members in one process.
The measuring functions live in workers.bench; this module prepares data, runs Ray, prints, writes JSON.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from workers import data as wdata
from workers.errors import CommitteeError

log = logging.getLogger(__name__)

SEQ_LEN = 128
BATCH_SIZE = 32

# Model shapes: hidden = 64 x heads, FFN = 4 x hidden (the authors' BERT-1 variants); deep = 6 layers.
MODELS = {
    "bert1": {"hidden": 768, "heads": 12, "vocab": 30522, "tokenizer_articles": 6417},
    "bert1-512": {"hidden": 512, "heads": 8, "vocab": 30522, "tokenizer_articles": 6417},
    "bert1-256": {"hidden": 256, "heads": 4, "vocab": 30522, "tokenizer_articles": 6417},
    "bert6": {"hidden": 768, "heads": 12, "vocab": 30522, "tokenizer_articles": 6417, "layers": 6},
    "tiny": {"hidden": 64, "heads": 2, "vocab": 2000, "tokenizer_articles": 300},
}
# `layers` (default 1) is the depth that sections 1 and 2 train; section 3 always compares 1-layer
# members with a 6-layer model of the same width.


@dataclass(frozen=True)
class Sizes:
    pretrain_articles: int
    pretrain_rounds: int
    pretrain_steps: int  # per round
    finetune_per_class: int
    finetune_rounds: int
    latency_requests_b1: int
    latency_requests_b32: int
    scaling_rounds: int
    scaling_steps: int


FULL = Sizes(600, 6, 1, 64, 3, 24, 6, 2, 2)  # rounds of one step each: load on a shared machine drifts within seconds
QUICK = Sizes(120, 2, 1, 8, 1, 3, 1, 1, 1)
CUDA = Sizes(600, 5, 10, 250, 3, 60, 20, 2, 2)  # a GPU step takes milliseconds: more work per round


@dataclass(frozen=True)
class BenchOptions:
    model: str = "bert1"
    quick: bool = False
    device: str = "cpu"
    precision: str = "bf16"  # the member loop's precision (the reference runs fp32)
    members: int = 6
    workers: int = 2  # Ray worker processes of 1 CPU each (CPU) / fractional-GPU actors = members (CUDA)
    threads: int | None = None  # torch threads in this process; default: all cores
    data_root: str | None = None
    cache_dir: str | None = None
    tokenizer: str | None = None  # a saved tokenizer to use instead of training one
    seed: int = 0


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "committee"


def bench_tokenizer(root: Path, vocab: int, articles: int, cache_dir: Path, echo=print):
    """A WordPiece tokenizer of `vocab` ids trained on the first `articles` Wikipedia articles, cached."""
    from workers.tokenizer import load_tokenizer, train_wordpiece

    path = cache_dir / f"wordpiece-{vocab}-{articles}"
    if (path / "tokenizer.json").is_file():
        return load_tokenizer(path)
    echo(f"training a WordPiece tokenizer (vocab {vocab}) on {articles} Wikipedia articles; cached at {path}")
    tokenizer = train_wordpiece(wdata.pretraining_articles(root, articles, 0), vocab)
    tmp = path.with_name(path.name + ".tmp")
    tokenizer.save_pretrained(str(tmp))
    if not path.exists():
        tmp.replace(path)
    return tokenizer


@dataclass
class Prepared:
    tokenizer: object
    special: object
    packed: np.ndarray  # [n_blocks, 128] member-loop blocks
    truncated: np.ndarray  # [n_articles, 128] the authors' padded articles
    train: object  # Ragged AG News train examples
    train_labels: np.ndarray
    test: object  # Ragged AG News test examples (latency requests, prediction)
    member_config: object  # 1 layer: committee members
    train_config: object  # the --model's depth: trained in sections 1, 2 and 4
    deep_config: object


def prepare(opts: BenchOptions, sizes: Sizes, echo) -> Prepared:
    from workers.corpus import encode, pack_blocks, truncate_articles
    from workers.models import bert_config
    from workers.pretrain import SpecialIds

    shape = MODELS[opts.model]
    root = wdata.resolve_data_root(opts.data_root)
    cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
    if opts.tokenizer:
        from workers.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(opts.tokenizer)
    else:
        tok_articles = min(shape["tokenizer_articles"], len(wdata.load_wikipedia_texts(root)))
        tokenizer = bench_tokenizer(root, shape["vocab"], tok_articles, cache, echo)
    special = SpecialIds.of(tokenizer)
    articles = wdata.pretraining_articles(root, sizes.pretrain_articles, 0)
    packed = pack_blocks(encode(tokenizer, articles, special=False), SEQ_LEN, special.cls, special.sep, special.pad)
    truncated = truncate_articles(encode(tokenizer, articles, max_length=SEQ_LEN), SEQ_LEN, special.pad)
    task = wdata.load_task(root, "ag_news", sizes.finetune_per_class, 0, 64, 0)
    vocab = max(shape["vocab"], special.vocab_size)
    member = bert_config(vocab, shape["hidden"], shape["heads"], 1, max_position=SEQ_LEN, num_labels=4)
    trained = bert_config(vocab, shape["hidden"], shape["heads"], shape.get("layers", 1), max_position=SEQ_LEN,
                          num_labels=4)
    deep = bert_config(vocab, shape["hidden"], shape["heads"], 6, max_position=SEQ_LEN, num_labels=4)
    return Prepared(tokenizer, special, packed, truncated,
                    encode(tokenizer, task.train_texts, max_length=SEQ_LEN), task.train_labels,
                    encode(tokenizer, task.test_texts, max_length=SEQ_LEN), member, trained, deep)


# ----------------------------------------------------------------------------------------------
# Sections


def bench_peak(device: str, quick: bool) -> dict:
    import torch

    from workers.bench import matmul_peak

    size = 512 if quick else 8192 if device == "cuda" else 2048
    peaks = {"fp32": [], "bf16": []}
    for _ in range(2):  # alternate, take the best median (peak means best)
        peaks["fp32"].append(matmul_peak(device, torch.float32, size, repeats=3))
        peaks["bf16"].append(matmul_peak(device, torch.bfloat16, size, repeats=3))
    return {k: max(v) for k, v in peaks.items()} | {"matmul_size": size}


def bench_pretrain(p: Prepared, opts: BenchOptions, sizes: Sizes, peak: dict, echo) -> dict:
    import torch

    from workers.bench import PretrainLoop, alternate_rounds, loss_agreement, matmul_work, median, mlm_training_flops
    from workers.models import build_mlm
    from workers.pretrain import PretrainSettings

    def settings(precision: str) -> PretrainSettings:
        return PretrainSettings(seed=opts.seed, max_steps=10_000, batch_size=BATCH_SIZE, lr=5e-5, weight_decay=0.01,
                                warmup_steps=0, mask_prob=0.15, precision=precision, checkpoint_every=10_000,
                                log_every=10_000)

    def model():
        torch.manual_seed(opts.seed)
        return build_mlm(p.train_config).to(opts.device)

    loops = {
        "reference": PretrainLoop("reference", model(), p.truncated, p.special, settings("fp32"), True, opts.device),
        "member": PretrainLoop("member", model(), p.packed, p.special, settings(opts.precision), False, opts.device),
    }
    if opts.precision != "fp32":
        loops["member_fp32"] = PretrainLoop("member_fp32", model(), p.packed, p.special, settings("fp32"), False, opts.device)
    steps = sizes.pretrain_steps
    echo(f"pre-training: {', '.join(loops)} ({sizes.pretrain_rounds} rounds of {steps} steps, batch {BATCH_SIZE})")
    # The matmul peak runs in the same rounds, so the load of a shared machine weighs on it as on the loops.
    size = peak["matmul_size"]
    contenders = {name: (lambda lp=lp: sum(lp.step() for _ in range(steps))) for name, lp in loops.items()}
    contenders |= {f"peak_{prec}": matmul_work(opts.device, dtype, size, inner=8 if size <= 2048 else 20)
                   for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rates = alternate_rounds(contenders, sizes.pretrain_rounds, warmup=1)
    in_rounds = {prec: median(rates[f"peak_{prec}"]) for prec in ("fp32", "bf16")}
    # The peak is the best the machine did in this run, alone or between the loops' rounds.
    peak = {prec: max(in_rounds[prec], peak[prec]) for prec in ("fp32", "bf16")}
    out: dict = {"peak_flops_in_rounds": in_rounds, "peak_flops_used": peak}
    cfg = p.train_config
    positions = BATCH_SIZE * SEQ_LEN
    for name, lp in loops.items():
        tokens_per_s = median(rates[name])
        real_per_step = float((lp.blocks != p.special.pad).mean()) * positions
        masked_per_step = lp.masked / max(1, lp.step_index)
        decoded = positions if lp.reference else masked_per_step
        flops_per_step = mlm_training_flops(cfg, positions, SEQ_LEN, decoded)
        flops_per_s = flops_per_step * tokens_per_s / real_per_step
        precision = lp.settings.precision
        out[name] = {"tokens_per_s": tokens_per_s, "rounds": rates[name], "precision": precision,
                     "flops_per_s": flops_per_s, "mfu": flops_per_s / peak[precision],
                     "mask": lp.mask_stats(), "losses": lp.losses}
    out["ratio"] = out["member"]["tokens_per_s"] / out["reference"]["tokens_per_s"]
    # The same ratio taken round by round (neighbours in time see the same load), then the median.
    out["ratio_median_of_rounds"] = median([m / r for m, r in zip(rates["member"], rates["reference"])])
    out["mfu"] = out["member"]["mfu"]
    if "member_fp32" in out:
        out["ratio_fp32"] = out["member_fp32"]["tokens_per_s"] / out["reference"]["tokens_per_s"]
    out["loss_agreement"] = {
        prec: loss_agreement(loops["reference"].model, p.truncated[:BATCH_SIZE], p.special, 0.15, opts.seed, prec)
        for prec in sorted({"fp32", opts.precision})
    }
    return out


def bench_finetune(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    import torch

    from workers.bench import FinetuneEpoch, alternate_rounds, median, project_predict, reference_predict
    from workers.finetune import FinetuneSettings
    from workers.models import build_classifier

    settings = FinetuneSettings(seed=opts.seed, epochs=1, batch_size=BATCH_SIZE, lr=5e-5, weight_decay=0.01,
                                warmup_ratio=0.0, precision=opts.precision)
    pad = p.special.pad

    def model():
        torch.manual_seed(opts.seed)
        return build_classifier(p.train_config, 4).to(opts.device)

    n = len(p.train)
    echo(f"fine-tuning and prediction: {n} AG News examples, pad-to-{SEQ_LEN} against length-bucketed batches")
    ref = FinetuneEpoch(model(), p.train, p.train_labels, pad, settings, True, SEQ_LEN, opts.device)
    proj = FinetuneEpoch(model(), p.train, p.train_labels, pad, settings, False, SEQ_LEN, opts.device)
    train_rates = alternate_rounds({"reference": ref.epoch, "project": proj.epoch}, sizes.finetune_rounds, warmup=1)
    predict_model = proj.model
    test = p.test

    def ref_predict() -> int:
        reference_predict(predict_model, test, pad, SEQ_LEN, 64, opts.device)
        return len(test)

    def proj_predict() -> int:
        project_predict(predict_model, test, pad, 64, opts.precision)
        return len(test)

    predict_rates = alternate_rounds({"reference": ref_predict, "project": proj_predict}, max(2, sizes.finetune_rounds), 1)
    lengths = p.train.lengths()
    train = {k: median(v) for k, v in train_rates.items()}
    predict = {k: median(v) for k, v in predict_rates.items()}
    return {
        "examples": n, "mean_length": float(lengths.mean()), "max_length": int(lengths.max()),
        "reference_examples_per_s": train["reference"], "project_examples_per_s": train["project"],
        "ratio": train["project"] / train["reference"],
        "ratio_median_of_rounds": median([p_ / r for p_, r in zip(train_rates["project"], train_rates["reference"])]),
        "predict": {"examples": len(test), "reference_examples_per_s": predict["reference"],
                    "project_examples_per_s": predict["project"],
                    "ratio": predict["project"] / predict["reference"]},
        "precision": opts.precision,
    }


def _committee_members(config, k: int, device: str) -> list:
    import torch

    from workers.models import build_classifier

    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(build_classifier(config, 4).to(device).eval())
    return members


def bench_latency_local(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    import torch

    from workers.bench import alternate_latency, latency_requests, median, percentile, soft_vote, sync
    from workers.packed import PackedCommittee

    k = opts.members
    members = _committee_members(p.member_config, k, opts.device)
    deep = _committee_members(p.deep_config, 1, opts.device)[0]
    packed = PackedCommittee.from_members(members)
    packed_deep = PackedCommittee.from_members([deep])
    dev = opts.device

    def run(fn):
        def serve(req):
            ids, mask = (torch.from_numpy(a).to(dev) for a in req)
            with torch.no_grad():
                out = fn(ids, mask)
            sync(dev)
            return out
        return serve

    contenders = {
        "members_one_by_one": run(lambda i, m: soft_vote(np.stack([x(input_ids=i, attention_mask=m).logits.cpu().numpy()
                                                                    for x in members]))),
        "members_packed": run(lambda i, m: soft_vote(packed(i, m).cpu().numpy())),
        "deep_hf": run(lambda i, m: deep(input_ids=i, attention_mask=m).logits.argmax(-1).cpu().numpy()),
        "deep_packed_kernels": run(lambda i, m: packed_deep(i, m)[0].argmax(-1).cpu().numpy()),
    }
    out: dict = {"members": k, "deep_layers": p.deep_config.num_hidden_layers}
    for batch, count in ((1, sizes.latency_requests_b1), (BATCH_SIZE, sizes.latency_requests_b32)):
        echo(f"committee latency in one process: batch {batch}, {count} requests")
        requests = latency_requests(p.test, batch, count, p.special.pad, seed=batch)
        seconds = alternate_latency(contenders, requests, warmup=2)
        stats = {name: {"p50_ms": 1e3 * median(s), "p95_ms": 1e3 * percentile(s, 95)} for name, s in seconds.items()}
        deep_p50 = min(stats["deep_hf"]["p50_ms"], stats["deep_packed_kernels"]["p50_ms"])
        out[f"batch{batch}"] = stats
        out[f"ratio_p50_batch{batch}"] = stats["members_packed"]["p50_ms"] / deep_p50
        out[f"sequential_ratio_p50_batch{batch}"] = stats["members_one_by_one"]["p50_ms"] / deep_p50
    return out


def bench_ray_cpu(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> tuple[dict, dict, dict]:
    """Scaling 1 -> N worker processes, a member actor's peak memory, and serving one member per worker."""
    import ray

    from workers.bench import latency_requests, median, percentile, soft_vote
    from workers.bench_actors import BenchWorker
    from workers.pretrain import PretrainSettings

    n = opts.workers
    workers = [BenchWorker.options(num_cpus=1).remote(1, "cpu") for _ in range(n)]
    settings = PretrainSettings(seed=opts.seed, max_steps=10_000, batch_size=BATCH_SIZE, lr=5e-5, weight_decay=0.01,
                                warmup_steps=0, mask_prob=0.15, precision=opts.precision, checkpoint_every=10_000,
                                log_every=10_000)
    blocks = ray.put(p.packed)
    train_cfg = p.train_config.to_dict()
    ray.get([w.setup_pretrain.remote(train_cfg, blocks, p.special, settings, opts.seed + i) for i, w in enumerate(workers)])
    echo(f"scaling: member pre-training in 1 and {n} Ray worker processes of 1 CPU each")
    ray.get([w.pretrain_steps.remote(1) for w in workers])  # warm-up
    steps = sizes.scaling_steps
    rates: dict[str, list[float]] = {"1": [], str(n): []}
    cores: dict[str, list[float]] = {"1": [], str(n): []}  # CPU seconds the workers got per wall second
    per_cpu: dict[str, list[float]] = {"1": [], str(n): []}  # tokens per CPU second
    for r in range(sizes.scaling_rounds * 2):
        group = workers[:1] if (r % 2 == 0) == (r // 2 % 2 == 0) else workers
        t0 = time.perf_counter()
        done = ray.get([w.pretrain_steps.remote(steps) for w in group])
        wall = time.perf_counter() - t0
        tokens, cpu_s = sum(d[0] for d in done), sum(d[2] for d in done)
        rates[str(len(group))].append(tokens / wall)
        cores[str(len(group))].append(cpu_s / wall)
        per_cpu[str(len(group))].append(tokens / max(cpu_s, 1e-9))
    scaling = {"workers": n, "steps_per_round": steps,
               "tokens_per_s_1": median(rates["1"]), f"tokens_per_s_{n}": median(rates[str(n)]),
               "rounds": rates, "ratio": median(rates[str(n)]) / median(rates["1"]), "precision": opts.precision,
               "cores_received_1": median(cores["1"]), f"cores_received_{n}": median(cores[str(n)]),
               "tokens_per_cpu_s_1": median(per_cpu["1"]), f"tokens_per_cpu_s_{n}": median(per_cpu[str(n)]),
               "per_core_ratio": median(per_cpu[str(n)]) / median(per_cpu["1"])}
    memory = {"member_actor_peak_rss_mib": max(ray.get([w.peak_rss_mib.remote() for w in workers])),
              "what": "peak resident memory of a 1-CPU member actor after pre-training steps (model, AdamW state, "
                      "activations, torch and transformers)"}

    # Serving: worker i holds members i, i + n, ...; worker 0 also holds the deep model.
    k = opts.members
    cfg = p.member_config.to_dict()
    deep_cfg = p.deep_config.to_dict()
    ray.get([w.load_classifiers.remote(cfg, list(range(i, k, n)), 4, deep_cfg if i == 0 else None)
             for i, w in enumerate(workers)])
    serving: dict = {"members": k, "workers": n}
    for batch, count in ((1, sizes.latency_requests_b1), (BATCH_SIZE, sizes.latency_requests_b32)):
        echo(f"committee through Ray: {k} members on {n} workers, batch {batch}, {count} requests")
        requests = latency_requests(p.test, batch, count, p.special.pad, seed=100 + batch)
        rows = {"committee_e2e": [], "deep_e2e": [], "projected": [], "overhead": [], "vote": [], "slowest_member": []}
        for r, (ids, mask) in enumerate([*requests[:2], *requests]):
            order = ("committee", "deep") if r % 2 == 0 else ("deep", "committee")
            for what in order:
                t0 = time.perf_counter()
                if what == "deep":
                    ray.get(workers[0].infer_deep.remote(ids, mask))
                    e2e = time.perf_counter() - t0
                    if r >= 2:
                        rows["deep_e2e"].append(e2e)
                    continue
                answers = ray.get([w.infer.remote(ids, mask) for w in workers])
                t_vote = time.perf_counter()
                soft_vote(np.concatenate([logits for logits, _ in answers]))
                vote = time.perf_counter() - t_vote
                e2e = time.perf_counter() - t0
                if r < 2:
                    continue  # warm-up
                busiest = max(sum(times) for _, times in answers)
                slowest = max(max(times) for _, times in answers)
                overhead = max(0.0, e2e - vote - busiest)
                rows["committee_e2e"].append(e2e)
                rows["vote"].append(vote)
                rows["overhead"].append(overhead)
                rows["slowest_member"].append(slowest)
                rows["projected"].append(slowest + overhead + vote)
        stats = {name: {"p50_ms": 1e3 * median(v), "p95_ms": 1e3 * percentile(v, 95)} for name, v in rows.items()}
        serving[f"batch{batch}"] = stats
        serving[f"projected_ratio_p50_batch{batch}"] = stats["projected"]["p50_ms"] / stats["deep_e2e"]["p50_ms"]
        serving[f"measured_ratio_p50_batch{batch}"] = stats["committee_e2e"]["p50_ms"] / stats["deep_e2e"]["p50_ms"]
    for w in workers:
        ray.kill(w)
    return scaling, memory, serving


def bench_gpu_sharing(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    """Members per GPU: K fractional-GPU Ray actors pre-training at once, against K members trained in
    turn in this process; and K one-member actors answering a request against the packed committee."""
    import ray
    import torch

    from workers.bench import PretrainLoop, latency_requests, median, percentile, soft_vote, sync
    from workers.bench_actors import BenchWorker
    from workers.models import build_mlm
    from workers.packed import PackedCommittee
    from workers.pretrain import PretrainSettings

    k = opts.members
    settings = PretrainSettings(seed=opts.seed, max_steps=10_000, batch_size=BATCH_SIZE, lr=5e-5, weight_decay=0.01,
                                warmup_steps=0, mask_prob=0.15, precision=opts.precision, checkpoint_every=10_000,
                                log_every=10_000)
    cfg = p.member_config.to_dict()
    steps = max(2, sizes.pretrain_steps * 2)
    gpus = 1 / k if opts.device == "cuda" else 0  # cpu: only to exercise this code path without a GPU
    echo(f"members per GPU: {k} fractional-GPU actors (num_gpus={gpus:.3f}) against {k} members in one process")
    actors = [BenchWorker.options(num_cpus=1, num_gpus=gpus).remote(1, opts.device) for _ in range(k)]
    blocks = ray.put(p.packed)
    ray.get([a.setup_pretrain.remote(cfg, blocks, p.special, settings, opts.seed + i) for i, a in enumerate(actors)])
    ray.get([a.pretrain_steps.remote(1) for a in actors])
    loops = []
    for i in range(k):
        torch.manual_seed(opts.seed + i)
        loops.append(PretrainLoop(f"m{i}", build_mlm(p.member_config).to(opts.device), p.packed, p.special, settings,
                                  False, opts.device))
    for lp in loops:
        lp.step()
    actor_rates, process_rates = [], []
    for r in range(max(2, sizes.pretrain_rounds)):
        for what in (("actors", "process") if r % 2 == 0 else ("process", "actors")):
            t0 = time.perf_counter()
            if what == "actors":
                tokens = sum(d[0] for d in ray.get([a.pretrain_steps.remote(steps) for a in actors]))
                actor_rates.append(tokens / (time.perf_counter() - t0))
            else:
                tokens = sum(lp.step() for _ in range(steps) for lp in loops)
                sync(opts.device)
                process_rates.append(tokens / (time.perf_counter() - t0))
    gpu_mib = ray.get([a.peak_gpu_mib.remote() for a in actors])
    del loops
    if opts.device == "cuda":
        torch.cuda.empty_cache()
    for a in actors:
        ray.kill(a)

    # Serving: K one-member fractional actors through Ray against the packed committee in one process.
    actors = [BenchWorker.options(num_cpus=1, num_gpus=gpus).remote(1, opts.device) for _ in range(k)]
    ray.get([a.load_classifiers.remote(cfg, [i], 4, p.deep_config.to_dict() if i == 0 else None)
             for i, a in enumerate(actors)])
    packed = PackedCommittee.from_members(_committee_members(p.member_config, k, opts.device))
    serving = {}
    for batch in (1, BATCH_SIZE):
        requests = latency_requests(p.test, batch, max(10, sizes.latency_requests_b1), p.special.pad, seed=200 + batch)
        rows = {"actors_e2e": [], "packed": [], "deep_actor_e2e": []}
        for r, (ids, mask) in enumerate([*requests[:2], *requests]):
            t0 = time.perf_counter()
            answers = ray.get([a.infer.remote(ids, mask) for a in actors])
            soft_vote(np.concatenate([lg for lg, _ in answers]))
            t1 = time.perf_counter()
            with torch.no_grad():
                soft_vote(packed(torch.from_numpy(ids).to(opts.device), torch.from_numpy(mask).to(opts.device)).cpu().numpy())
            sync(opts.device)
            t2 = time.perf_counter()
            ray.get(actors[0].infer_deep.remote(ids, mask))
            t3 = time.perf_counter()
            if r >= 2:
                rows["actors_e2e"].append(t1 - t0)
                rows["packed"].append(t2 - t1)
                rows["deep_actor_e2e"].append(t3 - t2)
        serving[f"batch{batch}"] = {n: {"p50_ms": 1e3 * median(v), "p95_ms": 1e3 * percentile(v, 95)}
                                    for n, v in rows.items()}
    for a in actors:
        ray.kill(a)
    return {"members": k, "steps_per_round": steps,
            "fractional_actors_tokens_per_s": median(actor_rates), "one_process_tokens_per_s": median(process_rates),
            "ratio": median(actor_rates) / median(process_rates),
            "actor_peak_gpu_mib": max(gpu_mib), "serving": serving}


# ----------------------------------------------------------------------------------------------
# Driver


def _start_ray(opts: BenchOptions) -> bool:
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = {"num_cpus": max(opts.workers, opts.members if opts.device == "cuda" else opts.workers)}
    if opts.device == "cuda":
        kwargs["num_gpus"] = 1
    ray.init(address="local", include_dashboard=False, log_to_driver=False, **kwargs)
    return True


def run_bench(opts: BenchOptions, echo=print) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    if opts.model not in MODELS:
        raise CommitteeError(f"--model {opts.model!r} is not one of {', '.join(MODELS)}")
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise CommitteeError("--device cuda: torch sees no CUDA device here")
    hf_logging.set_verbosity_error()
    sizes = QUICK if opts.quick else CUDA if opts.device == "cuda" else FULL
    threads = opts.threads or (1 if opts.quick else os.cpu_count() or 1)  # quick: a smoke run, spared thread contention
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    prep = prepare(opts, sizes, echo)
    peak = bench_peak(opts.device, opts.quick)
    from workers.models import count_parameters

    shape = MODELS[opts.model]
    result: dict = {
        "command": "committee bench", "options": asdict(opts),
        "machine": {"device": opts.device, "device_name": torch.cuda.get_device_name() if opts.device == "cuda"
                    else platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
                    "torch_threads": threads, "torch": torch.__version__,
                    "peak_flops_fp32": peak["fp32"], "peak_flops_bf16": peak["bf16"], "matmul_size": peak["matmul_size"]},
        "model": {"name": opts.model, "hidden": shape["hidden"], "heads": shape["heads"],
                  "vocab": prep.member_config.vocab_size, "seq_len": SEQ_LEN, "batch_size": BATCH_SIZE,
                  "layers": prep.train_config.num_hidden_layers,
                  "member_parameters": count_parameters(_committee_members(prep.member_config, 1, "cpu")[0]),
                  "deep_layers": prep.deep_config.num_hidden_layers},
    }
    result["pretrain"] = bench_pretrain(prep, opts, sizes, peak, echo)
    result["finetune"] = bench_finetune(prep, opts, sizes, echo)
    result["latency"] = bench_latency_local(prep, opts, sizes, echo)
    started = _start_ray(opts)
    try:
        if opts.device == "cuda":
            result["members_per_gpu"] = bench_gpu_sharing(prep, opts, sizes, echo)
        else:
            scaling, memory, serving = bench_ray_cpu(prep, opts, sizes, echo)
            result["scaling"], result["memory"] = scaling, memory
            result["latency"]["ray"] = serving
            result["latency"]["projected_ratio_p50_batch1"] = serving["projected_ratio_p50_batch1"]
    finally:
        if started:
            import ray

            ray.shutdown()
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - t0
    return result


def targets(r: dict) -> dict:
    """Issue 3's targets on a 2-core CPU at the paper BERT-1 shape, with the measured values."""
    rows = {
        "pretrain.ratio": (r["pretrain"]["ratio"], ">=", 5.0),
        "pretrain.mfu": (r["pretrain"]["mfu"], ">=", 0.25),
        "finetune.ratio": (r["finetune"]["ratio"], ">=", 2.0),
        "latency.ratio_p50_batch1": (r["latency"]["ratio_p50_batch1"], "<=", 1.1),
    }
    if "projected_ratio_p50_batch1" in r["latency"]:
        rows["latency.projected_ratio_p50_batch1"] = (r["latency"]["projected_ratio_p50_batch1"], "<=", 0.35)
    if "scaling" in r:
        rows["scaling.ratio"] = (r["scaling"]["ratio"], ">=", 1.7)
    return {name: {"value": v, "target": f"{op} {t}", "met": bool(v >= t if op == ">=" else v <= t)}
            for name, (v, op, t) in rows.items()}


# ----------------------------------------------------------------------------------------------
# Output


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _flops(loop: dict) -> str:
    return f"{loop['flops_per_s'] / 1e9:,.0f} ({loop['mfu']:.0%})"


def format_table(r: dict) -> str:
    m, mach, pt, ft, lat = r["model"], r["machine"], r["pretrain"], r["finetune"], r["latency"]
    prec = pt["member"]["precision"]
    lines = [
        f"committee bench: model {m['name']} ({m.get('layers', 1)} layer(s), hidden {m['hidden']}, {m['heads']} heads, "
        f"vocab {m['vocab']:,}, "
        f"seq {m['seq_len']}, batch {m['batch_size']}; member {m['member_parameters']:,} parameters), "
        f"device {mach['device']} ({mach['torch_threads']} torch threads)",
        f"matmul peak measured in this run (GFLOP/s): alone fp32 {mach['peak_flops_fp32'] / 1e9:,.0f}, "
        f"bf16 {mach['peak_flops_bf16'] / 1e9:,.0f}" + (
            f"; between the pre-training rounds fp32 {pt['peak_flops_in_rounds']['fp32'] / 1e9:,.0f}, "
            f"bf16 {pt['peak_flops_in_rounds']['bf16'] / 1e9:,.0f} (shares use the higher)"
            if "peak_flops_in_rounds" in pt else ""),
        "",
        f"{'measure':<58}{'reference':>12}{'project':>12}{'ratio':>9}",
        "1. pre-training, real tokens/s (median of rounds)",
        f"{'   HF labels= fp32 pad-128 | member loop packed ' + prec:<58}"
        f"{_n(pt['reference']['tokens_per_s']):>12}{_n(pt['member']['tokens_per_s']):>12}{pt['ratio']:>8.2f}x",
    ]
    if "member_fp32" in pt:
        lines.append(f"{'   ... member loop in fp32':<58}{'':>12}{_n(pt['member_fp32']['tokens_per_s']):>12}"
                     f"{pt['ratio_fp32']:>8.2f}x")
    lines += [
        f"{'   model GFLOP/s (share of peak of its precision)':<58}"
        f"{_flops(pt['reference']):>12}{_flops(pt['member']):>12}",
        f"{'   masked share of maskable tokens':<58}{pt['reference']['mask']['masked_share']:>12.3f}"
        f"{pt['member']['mask']['masked_share']:>12.3f}",
        "2. AG News, examples/s (pad-128 fp32 | length buckets " + ft["precision"] + ")",
        f"{'   fine-tuning':<58}{_n(ft['reference_examples_per_s']):>12}{_n(ft['project_examples_per_s']):>12}"
        f"{ft['ratio']:>8.2f}x",
        f"{'   prediction':<58}{_n(ft['predict']['reference_examples_per_s']):>12}"
        f"{_n(ft['predict']['project_examples_per_s']):>12}{ft['predict']['ratio']:>8.2f}x",
        f"3. committee latency, {lat['members']} members vs {lat['deep_layers']}-layer model, p50 / p95 ms",
    ]
    for b in ("batch1", "batch32"):
        s = lat[b]
        deep = min(s["deep_hf"]["p50_ms"], s["deep_packed_kernels"]["p50_ms"])
        for name, label in (("members_one_by_one", "members one after another"), ("members_packed", "members packed"),
                            ("deep_hf", "deep model (HF)"), ("deep_packed_kernels", "deep model (packed kernels)")):
            ratio = f"{s[name]['p50_ms'] / deep:>8.2f}x" if name.startswith("members") else ""
            lines.append(f"{'   ' + b + ', ' + label:<58}{s[name]['p50_ms']:>12.1f}{s[name]['p95_ms']:>12.1f}{ratio}")
    if "ray" in lat:
        ray_s = lat["ray"]
        lines.append(f"   through Ray, {ray_s['members']} members on {ray_s['workers']} one-core workers + vote; "
                     "projection = slowest member + Ray overhead + vote")
        for b in ("batch1", "batch32"):
            s = ray_s[b]
            for name, label in (("committee_e2e", f"committee on {ray_s['workers']} workers"),
                                ("deep_e2e", "deep model on 1 worker"), ("projected", "projected: 1 member per worker"),
                                ("overhead", "Ray round trip (measured)")):
                ratio = ""
                if name in ("committee_e2e", "projected"):
                    ratio = f"{s[name]['p50_ms'] / s['deep_e2e']['p50_ms']:>8.2f}x"
                lines.append(f"{'   ' + b + ', ' + label:<58}{s[name]['p50_ms']:>12.1f}{s[name]['p95_ms']:>12.1f}{ratio}")
    if "scaling" in r:
        sc = r["scaling"]
        n = sc["workers"]
        lines += [f"4. scaling, member pre-training tokens/s, 1 -> {n} Ray workers of 1 CPU",
                  f"{'   aggregate':<58}{_n(sc['tokens_per_s_1']):>12}{_n(sc[f'tokens_per_s_{n}']):>12}"
                  f"{sc['ratio']:>8.2f}x",
                  f"{'   CPU cores the workers actually got (others share them)':<58}{sc['cores_received_1']:>12.2f}"
                  f"{sc[f'cores_received_{n}']:>12.2f}",
                  f"{'   tokens per CPU-second (per-core efficiency)':<58}{_n(sc['tokens_per_cpu_s_1']):>12}"
                  f"{_n(sc[f'tokens_per_cpu_s_{n}']):>12}{sc['per_core_ratio']:>8.2f}x",
                  f"5. peak memory of one member actor: {r['memory']['member_actor_peak_rss_mib']:,.0f} MiB"]
    if "members_per_gpu" in r:
        g = r["members_per_gpu"]
        lines += [f"4. members per GPU ({g['members']}): tokens/s, {g['members']} in one process | fractional-GPU actors",
                  f"{'   aggregate pre-training':<58}{_n(g['one_process_tokens_per_s']):>12}"
                  f"{_n(g['fractional_actors_tokens_per_s']):>12}{g['ratio']:>8.2f}x",
                  f"   peak GPU memory of one member actor: {g['actor_peak_gpu_mib']:,.0f} MiB"]
        for b, s in g["serving"].items():
            for name, v in s.items():
                lines.append(f"{'   ' + b + ', ' + name + ' p50 / p95 ms':<58}{v['p50_ms']:>12.2f}{v['p95_ms']:>12.2f}")
    lines += ["", f"targets (issue 3, set for a 2-core CPU at the paper BERT-1 shape; this run: {mach['device']}, "
                  f"model {m['name']}):"]
    for name, t in r["targets"].items():
        lines.append(f"   {name:<40}{t['value']:>8.3f}  target {t['target']:<8} {'met' if t['met'] else 'NOT met'}")
    lines.append(f"wall time {r['wall_s']:.0f} s")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    tmp.replace(path)
