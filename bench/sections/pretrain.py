"""Section 1: pre-training throughput, the authors' loop against the member loop, and model FLOP/s
over the matmul peak measured in the same rounds."""

from __future__ import annotations

from bench.flops import PEAK_PRECISIONS, matmul_work, mlm_training_flops
from bench.loops import PretrainLoop, loss_agreement, seeded_mlm
from bench.options import BATCH_SIZE, MASK_PROB, SEQ_LEN, BenchOptions, Sizes, pretrain_settings
from bench.prepare import Prepared
from bench.timing import alternate_rounds, median

PEAK_WHY = ("the higher of the matmul peak measured alone before the sections and between the pre-training "
            "rounds: load from other processes lowers either, and a peak is the best the machine does")


def _loops(p: Prepared, opts: BenchOptions) -> dict[str, PretrainLoop]:
    """The contenders, each on a model with the same initial weights."""
    def loop(name: str, blocks, precision: str, reference: bool) -> PretrainLoop:
        model = seeded_mlm(p.train_config, opts.seed, opts.device)
        return PretrainLoop(name, model, blocks, p.special, pretrain_settings(opts, precision), reference, opts.device)

    loops = {"reference": loop("reference", p.truncated, "fp32", True),
             "member": loop("member", p.packed, opts.precision, False)}
    if opts.precision != "fp32":
        loops["member_fp32"] = loop("member_fp32", p.packed, "fp32", False)
    return loops


def peak_used(peak_alone: dict, peak_in_rounds: dict) -> tuple[dict, dict]:
    """({precision: FLOP/s}, {precision: "alone" | "between rounds"}): the peak each share divides by."""
    used, source = {}, {}
    for prec in PEAK_PRECISIONS:
        alone_wins = peak_alone[prec] >= peak_in_rounds[prec]
        used[prec] = peak_alone[prec] if alone_wins else peak_in_rounds[prec]
        source[prec] = "alone" if alone_wins else "between rounds"
    return used, source


def _loop_figures(lp: PretrainLoop, p: Prepared, rates: list[float], peak: dict) -> dict:
    """Real tokens/s, model FLOP/s and its share of the peak of the loop's precision, masking statistics."""
    tokens_per_s = median(rates)
    positions = BATCH_SIZE * SEQ_LEN
    real_per_step = float((lp.blocks != p.special.pad).mean()) * positions
    decoded = positions if lp.reference else lp.masks.masked / max(1, lp.step_index)
    flops_per_s = mlm_training_flops(p.train_config, positions, SEQ_LEN, decoded) * tokens_per_s / real_per_step
    precision = lp.amp.precision if lp.reference else lp.settings.precision
    # fp16 and bf16 share the tensor cores' peak on the GPUs this runs on: the fp16 reference divides by bf16's
    peak_of = "bf16" if precision.startswith("fp16") else precision
    return {"tokens_per_s": tokens_per_s, "rounds": rates, "precision": precision, "flops_per_s": flops_per_s,
            "mfu": flops_per_s / peak[peak_of], "mask": lp.masks.stats(), "losses": lp.losses}


def bench_pretrain(p: Prepared, opts: BenchOptions, sizes: Sizes, peak_alone: dict, echo) -> dict:
    loops = _loops(p, opts)
    steps = sizes.pretrain_steps
    echo(f"pre-training: {', '.join(loops)} ({sizes.pretrain_rounds} rounds of {steps} steps, batch {BATCH_SIZE})")
    # The matmul peak runs in the same rounds, so the load of a shared machine weighs on it as on the loops.
    size = peak_alone["matmul_size"]
    contenders = {name: (lambda lp=lp: sum(lp.step() for _ in range(steps))) for name, lp in loops.items()}
    contenders |= {f"peak_{prec}": matmul_work(opts.device, dtype, size, inner=8 if size <= 2048 else 20)
                   for prec, dtype in PEAK_PRECISIONS.items()}
    rates = alternate_rounds(contenders, sizes.pretrain_rounds, warmup=1)
    in_rounds = {prec: median(rates[f"peak_{prec}"]) for prec in PEAK_PRECISIONS}
    peak, source = peak_used(peak_alone, in_rounds)
    out: dict = {"peak_flops_in_rounds": in_rounds, "peak_flops_used": peak, "peak_source": source,
                 "peak_why": PEAK_WHY}
    for name, lp in loops.items():
        out[name] = _loop_figures(lp, p, rates[name], peak)
    out["ratio"] = out["member"]["tokens_per_s"] / out["reference"]["tokens_per_s"]
    # The same ratio taken round by round (neighbours in time see the same load), then the median.
    out["ratio_median_of_rounds"] = median([m / r for m, r in zip(rates["member"], rates["reference"])])
    out["mfu"] = out["member"]["mfu"]
    if "member_fp32" in out:
        out["ratio_fp32"] = out["member_fp32"]["tokens_per_s"] / out["reference"]["tokens_per_s"]
    batch = p.truncated[:BATCH_SIZE]
    out["loss_agreement"] = {prec: loss_agreement(loops["reference"].model, batch, p.special, MASK_PROB, opts.seed, prec)
                             for prec in sorted({"fp32", opts.precision})}
    return out
