#!/usr/bin/env bash
# bash scripts/gpu_bench.sh OUT_DIR
# `committee bench --device cuda` on a machine with one NVIDIA GPU and PyTorch but without Ray or
# network access. It expects beside the checkout (prepared on a machine with network, not committed):
#   .gpu/whl/        wheels for Python 3.12: ray 2.60.0 (the Java jars and dashboard build may be left
#                    out to fit a transfer limit) and what that machine lacks: jsonschema,
#                    jsonschema-specifications, referencing, rpds-py
#   .gpu/data/       a data root with wikipedia/ (one shard is enough) and ag_news/
#   .gpu/tokenizer/  the WordPiece tokenizer (vocab 30,522) that `committee bench` trained and cached
#                    (a directory under ~/.cache/committee/tokenizers/, or under --cache-dir)
# Writes OUT_DIR/bench_cuda.json and OUT_DIR/bench_cuda.txt.
set -euo pipefail
out="${1:?usage: scripts/gpu_bench.sh OUT_DIR}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" COMMITTEE_DATA="$PWD/.gpu/data" RAY_USAGE_STATS_ENABLED=0 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 RAY_TMPDIR=/tmp/ray-gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, ray; print('torch', torch.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__)"
python3 -m orchestrator.cli bench --device cuda --model bert1 --tokenizer .gpu/tokenizer \
    --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.txt"
