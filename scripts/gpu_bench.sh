#!/usr/bin/env bash
# bash scripts/gpu_bench.sh OUT_DIR
# `committee bench --device cuda` on a machine with one NVIDIA GPU and PyTorch but without Ray or
# network access, from the .gpu/ that scripts/gpu_prepare.sh builds beside the checkout (ray.tar.xz,
# whl/, data/, tok30522/). scripts/gpu_check.sh runs the same as its part `bench`
# (GPU_CHECK_PARTS=bench bash scripts/gpu_check.sh OUT), within a time limit, with the other GPU checks.
# Writes OUT_DIR/bench_cuda.json and OUT_DIR/bench_cuda.txt.
set -euo pipefail
out="${1:?usage: scripts/gpu_bench.sh OUT_DIR}"
mkdir -p "$out"
mkdir -p /tmp/site && tar -xJf .gpu/ray.tar.xz -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" COMMITTEE_DATA="$PWD/.gpu/data" RAY_USAGE_STATS_ENABLED=0 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 RAY_TMPDIR=/tmp/ray-gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, ray; print('torch', torch.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__)"
python3 -m orchestrator.cli bench --device cuda --model bert1 --tokenizer .gpu/tok30522 \
    --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.txt"
