"""Section 2: fine-tuning and prediction on AG News, the authors' pad-to-128 loop in their precision (fp16
autocast with a GradScaler on CUDA, fp32 on a CPU; their prediction in fp32) against length-bucketed batches in
the member loop's precision."""

from __future__ import annotations

from bench.loops import AuthorsAmp, FinetuneEpoch, reference_predict, seeded_classifier
from bench.options import NUM_LABELS, SEQ_LEN, BenchOptions, Sizes, finetune_settings
from bench.prepare import Prepared
from bench.timing import alternate_rounds, median
from workers.train.finetune import predict_logits

PREDICT_BATCH = 64


def _train_rates(p: Prepared, opts: BenchOptions, sizes: Sizes) -> tuple[dict, object]:
    """Examples/s of every round for both loops, and the project's model (trained) for prediction."""
    settings = finetune_settings(opts)

    def epoch(reference: bool) -> FinetuneEpoch:
        model = seeded_classifier(p.train_config, NUM_LABELS, opts.seed, opts.device)
        return FinetuneEpoch(model, p.train, p.train_labels, p.special.pad, settings, reference, SEQ_LEN, opts.device)

    ref, proj = epoch(True), epoch(False)
    rates = alternate_rounds({"reference": ref.epoch, "project": proj.epoch}, sizes.finetune_rounds, warmup=1)
    return rates, proj.model


def _predict_rates(model, p: Prepared, opts: BenchOptions, sizes: Sizes) -> dict:
    test, pad = p.test, p.special.pad

    def ref_predict() -> int:
        reference_predict(model, test, pad, SEQ_LEN, PREDICT_BATCH, opts.device)
        return len(test)

    def proj_predict() -> int:
        predict_logits(model, test, pad, batch_size=PREDICT_BATCH, precision=opts.precision)
        return len(test)

    return alternate_rounds({"reference": ref_predict, "project": proj_predict}, max(2, sizes.finetune_rounds), 1)


def bench_finetune(p: Prepared, opts: BenchOptions, sizes: Sizes, echo) -> dict:
    n = len(p.train)
    echo(f"fine-tuning and prediction: {n} AG News examples, pad-to-{SEQ_LEN} against length-bucketed batches")
    train_rates, model = _train_rates(p, opts, sizes)
    predict_rates = _predict_rates(model, p, opts, sizes)
    lengths = p.train.lengths()
    train = {k: median(v) for k, v in train_rates.items()}
    predict = {k: median(v) for k, v in predict_rates.items()}
    return {
        "examples": n, "mean_length": float(lengths.mean()), "max_length": int(lengths.max()),
        "reference_examples_per_s": train["reference"], "project_examples_per_s": train["project"],
        "ratio": train["project"] / train["reference"],
        "ratio_median_of_rounds": median([pr / r for pr, r in zip(train_rates["project"], train_rates["reference"])]),
        "predict": {"examples": len(p.test), "reference_examples_per_s": predict["reference"],
                    "project_examples_per_s": predict["project"],
                    "ratio": predict["project"] / predict["reference"]},
        "precision": opts.precision,
        "reference_precision": AuthorsAmp(opts.device).precision,
    }
