#!/usr/bin/env bash
# OUT=DIR bash scripts/gpu_budget.sh STEPS
# The quickstart's four members and their scratch twins with STEPS x 64 x 128 pre-training tokens each,
# four processes side by side on one NVIDIA GPU with PyTorch but without Ray or network (see
# scripts/gpu_budget.py), from the .gpu/ that scripts/gpu_prepare.sh builds beside the checkout (whl/: pydantic
# and its needs; data/; tok8000/: the quickstart's tokenizer). scripts/gpu_check.sh runs the same experiment
# through Ray and `committee run` (its part `budget65m`, members_per_actor: auto, with the deep model).
# With Ray on the GPU machine the same experiment is
#   committee run configs/quickstart.yaml pretrain.max_steps=STEPS pretrain.batch_size=64 \
#     pretrain.warmup_steps=STEPS/10 pretrain.lr=1e-3 resources.gpus_per_member=0.25
set -u
S=${1:-8000}
python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD COMMITTEE_DATA=$PWD/.gpu/data TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, pydantic, yaml, pyarrow; print('torch', torch.__version__, 'transformers', transformers.__version__)"
O="tokenizer.path=.gpu/tok8000 pretrain.max_steps=$S pretrain.batch_size=64 pretrain.warmup_steps=$((S/10)) pretrain.lr=1e-3 pretrain.checkpoint_every=$S pretrain.log_every=100"
echo "overrides: $O" | tee $OUT/overrides.txt
pids=""
for i in 0 1 2 3; do python3 scripts/gpu_budget.py $i $OUT $O > $OUT/p$i.txt 2>&1 & pids="$pids $!"; done
( while sleep 20; do tail -qn 1 $OUT/member-0*.log 2>/dev/null; done ) & watcher=$!
wait $pids
kill $watcher
for i in 0 1 2 3; do grep -v "Writing\|Loading" $OUT/p$i.txt | tail -n 5; done
python3 scripts/gpu_budget.py vote $OUT $O 2>&1 | grep -v "Writing\|Loading" | tail -n 80
