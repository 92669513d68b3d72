"""What `committee bench` runs: model shapes, the amount of work per mode, and the command's options."""

from __future__ import annotations

from dataclasses import dataclass

from workers.errors import ConfigError

SEQ_LEN = 128
BATCH_SIZE = 32
NUM_LABELS = 4  # AG News classes
LR = 5e-5
WEIGHT_DECAY = 0.01
MASK_PROB = 0.15
NEVER_ENDS = 10_000  # max_steps and checkpoint/log periods of settings for loops that run until stopped

# Model shapes: hidden = 64 x heads, FFN = 4 x hidden (the authors' BERT-1 variants); deep = 6 layers.
# `layers` (default 1) is the depth that the throughput sections train; the latency sections always
# compare 1-layer members with a 6-layer model of the same width.
MODELS = {
    "bert1": {"hidden": 768, "heads": 12, "vocab": 30522, "tokenizer_articles": 6417},
    "bert1-512": {"hidden": 512, "heads": 8, "vocab": 30522, "tokenizer_articles": 6417},
    "bert1-256": {"hidden": 256, "heads": 4, "vocab": 30522, "tokenizer_articles": 6417},
    "quickstart": {"hidden": 128, "heads": 2, "vocab": 8000, "tokenizer_articles": 1000},  # configs/quickstart.yaml
    "bert6": {"hidden": 768, "heads": 12, "vocab": 30522, "tokenizer_articles": 6417, "layers": 6},
    "tiny": {"hidden": 64, "heads": 2, "vocab": 2000, "tokenizer_articles": 300},
}
DEEP_LAYERS = 6
TOKENIZER_ORDER_SEED = 0  # the tokenizer learns on the first articles of this seeded order (as runs do)


@dataclass(frozen=True)
class Sizes:
    """How much work each section does (rounds alternate the contenders; medians are over rounds)."""

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
    precision: str = "auto"  # the member loop's: auto (bf16 where native, else fp32), bf16 or fp32; reference fp32
    members: int = 6
    workers: int = 2  # Ray worker processes of 1 CPU each (CPU) / fractional-GPU actors = members (CUDA)
    threads: int | None = None  # torch threads in this process; default: all cores
    data_root: str | None = None
    cache_dir: str | None = None  # the tokenizer cache (default: the product's, $COMMITTEE_CACHE)
    tokenizer: str | None = None  # a saved tokenizer to use instead of training one
    seed: int = 0


def check_options(opts: BenchOptions) -> None:
    """Refuse a model, device or precision the benchmark does not know, naming the option."""
    if opts.model not in MODELS:
        raise ConfigError(f"--model {opts.model!r} is not one of {', '.join(MODELS)}")
    if opts.device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {opts.device!r}: use cpu or cuda")
    if opts.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"--precision {opts.precision!r}: use auto, bf16 or fp32")


def sizes_for(opts: BenchOptions) -> Sizes:
    return QUICK if opts.quick else CUDA if opts.device == "cuda" else FULL


def pretrain_settings(opts: BenchOptions, precision: str, seed: int | None = None):
    """The member loop's settings as the benchmark runs it: no warm-up, no checkpoints, no end."""
    from workers.train.pretrain import PretrainSettings

    return PretrainSettings(seed=opts.seed if seed is None else seed, max_steps=NEVER_ENDS, batch_size=BATCH_SIZE,
                            lr=LR, weight_decay=WEIGHT_DECAY, warmup_steps=0, mask_prob=MASK_PROB,
                            precision=precision, checkpoint_every=NEVER_ENDS, log_every=NEVER_ENDS)


def finetune_settings(opts: BenchOptions):
    from workers.train.finetune import FinetuneSettings

    return FinetuneSettings(seed=opts.seed, epochs=1, batch_size=BATCH_SIZE, lr=LR, weight_decay=WEIGHT_DECAY,
                            warmup_ratio=0.0, precision=opts.precision)
