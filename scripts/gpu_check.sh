#!/usr/bin/env bash
# bash scripts/gpu_check.sh OUT                    on a GPU machine without Ray or network,
#                                                  from the repository root, with .gpu/ beside the checkout
# GPU_CHECK_DRY=1 bash scripts/gpu_check.sh OUT    here, on the CPU: the same steps at tiny sizes (tests this script)
#
# One GPU session's checks, under 9 minutes of wall on an H200 (each part has a time limit and prints its time):
#   setup      unpack .gpu/ray.tar.xz and install .gpu/whl/*.whl into /tmp/site (scripts/gpu_prepare.sh builds
#              .gpu/ where pip works); nvidia-smi, versions
#   groups     `committee bench`'s section 6, members per GPU (scripts/gpu_groups.py): both shapes, K = 1, 6, 32,
#              64, fractional-GPU actors against one stack, the stack and one member alone with and without
#              torch.compile; tokens/s, share of the bf16 peak, peak GPU memory
#   quickstart `committee run configs/quickstart.yaml` through Ray on the GPU, resources.members_per_actor=auto
#   budget65m  the quickstart at 65.5 M pre-training tokens per member (8,000 steps x 64 x 128) with
#              deep.enabled=true, members_per_actor=auto: the report puts the committee and the deep model side by side
#   compilecheck  compiled against eager loss curves on the GPU (scripts/gpu_compile_check.py), if time is left
#   fractional the quickstart again as fractional-GPU actors (members_per_actor=1), if time is left
#   bench      the whole `committee bench --device cuda` (off unless GPU_CHECK_PARTS names it: it takes minutes)
# Section 6 skips rows that would start after GPU_CHECK_GROUPS_BUDGET_S (default 170) and is stopped at
# GPU_CHECK_GROUPS_LIMIT_S (default 240); its JSON is saved after every row.
# GPU_CHECK_PARTS (comma-separated, default groups,quickstart,budget65m,compilecheck,fractional) picks parts,
# e.g. for a second call on a still-warm machine; GPU_CHECK_TOTAL_S (default 530) is the wall this script keeps
# within (a part that would get under 30 s is skipped); GPU_CHECK_COMPILE_RUNS=1 adds pretrain.compile=true to
# the committee runs (where the config has that key).
# OUT gets at most 6 files, none in subfolders: check.log (everything printed), summary.md (the tables:
# scripts/gpu_summary.py), groups.json, runs.tar.gz (each run's report.md, report.json, config.yaml,
# metrics.jsonl and log), compile_check.json, and bench_cuda.json when the whole benchmark ran.
set -uo pipefail
OUT=$(mkdir -p "${1:?usage: scripts/gpu_check.sh OUT}" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
TOTAL=${GPU_CHECK_TOTAL_S:-530}
PARTS=",${GPU_CHECK_PARTS:-groups,quickstart,budget65m,compilecheck,fractional},"
RUNS=/tmp/gpu-check-runs
PARTS_FILE=/tmp/gpu-check-parts.txt
START=$SECONDS
exec > >(tee -a "$OUT/check.log") 2>&1

left() { echo $((TOTAL - (SECONDS - START))); }
wants() { [[ "$PARTS" == *",$1,"* ]]; }

# part NAME LIMIT_S COMMAND...: run it (a program or a function of this script) within min(LIMIT_S, time
# left - 15 s), print its wall and exit status (124: stopped at its limit); a Ray it left behind is stopped
part() {
    local name=$1 limit=$2; shift 2
    local room=$(( $(left) - 15 ))
    [ "$room" -lt "$limit" ] && limit=$room
    if [ "$limit" -lt 30 ]; then
        echo "== $name: skipped, $(left) s left of ${TOTAL} s"; echo "$name skipped -" >> "$PARTS_FILE"; return
    fi
    echo "== $name (limit ${limit} s, $(left) s left) $(date -u +%H:%M:%S)"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    echo "$name $rc $((SECONDS - t0))" >> "$PARTS_FILE"
    # not in a dry run: `ray stop` ends every Ray of the machine, other users' on a shared one too
    [ "$rc" = 0 ] || [ "$DRY" = 1 ] || timeout 20 $PY -m ray.scripts.scripts stop --force > /dev/null 2>&1
}

rm -f "$PARTS_FILE"
echo "== setup $(date -u +%H:%M:%S) dry=$DRY parts=$PARTS total=${TOTAL} s"
export COMMITTEE_DATA=$PWD/.gpu/data COMMITTEE_CACHE=/tmp/gpu-check-cache RAY_USAGE_STATS_ENABLED=0 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 RAY_TMPDIR=/tmp/ray-gc
for need in .gpu/ray.tar.xz .gpu/data/wikipedia .gpu/data/ag_news .gpu/tok30522/tokenizer.json .gpu/tok8000/tokenizer.json; do
    [ -e "$need" ] || { echo "missing $need: run scripts/gpu_prepare.sh where pip works, and carry .gpu"; exit 2; }
done
if [ "$DRY" = 1 ]; then
    # this Python is not the GPU machine's 3.12: check the archives whole, run with this venv's packages
    PY=${PY:-.venv/bin/python}
    xz -t .gpu/ray.tar.xz && for w in .gpu/whl/*.whl; do unzip -tq "$w" > /dev/null || exit 2; done
    [ "$(tar -tJf .gpu/ray.tar.xz | grep -c '^ray/_raylet.so$')" = 1 ] || { echo "ray.tar.xz lacks ray/_raylet.so"; exit 2; }
    echo "dry: ray archive and $(ls .gpu/whl/*.whl | wc -l) wheels checked (not installed: this Python is $($PY -V 2>&1))"
    export PYTHONPATH=$PWD
else
    PY=${PY:-python3}
    mkdir -p /tmp/site
    tar -xJf .gpu/ray.tar.xz -C /tmp/site || exit 2
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm --format=csv
fi
$PY -c "import torch, transformers, ray, pydantic; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'ray', ray.__version__, 'pydantic', pydantic.__version__)" || exit 2
echo "== setup: $((SECONDS - START)) s"

# the committee runs' overrides: the carried tokenizer (the quickstart's own: vocab 8,000 on its 1,000 articles)
QS="tokenizer.path=.gpu/tok8000"
if [ "$DRY" = 1 ]; then
    SIZES="pretrain.articles=120 pretrain.max_steps=12 pretrain.batch_size=8 pretrain.warmup_steps=2 pretrain.checkpoint_every=6
           pretrain.log_every=4 task.train_per_class=16 task.val_per_class=8 task.test_per_class=16 finetune.epochs=1"
    BIG="pretrain.articles=120 pretrain.max_steps=16 pretrain.batch_size=8 pretrain.warmup_steps=2 pretrain.lr=1e-3
         pretrain.checkpoint_every=8 pretrain.log_every=8 task.train_per_class=16 task.val_per_class=8
         task.test_per_class=16 finetune.epochs=1 deep.num_layers=2"
    GROUPED="resources.members_per_actor=2"  # on a CPU `auto` is 1: two per actor exercise the stack through Ray
    FRACTIONAL="resources.members_per_actor=1"
    GROUPS_ARGS="--dry"
    COMPILE_ARGS="--device cpu --backend aot_eager"
else
    SIZES=""
    BIG="pretrain.max_steps=8000 pretrain.batch_size=64 pretrain.warmup_steps=800 pretrain.lr=1e-3
         pretrain.checkpoint_every=2000 pretrain.log_every=500"
    GROUPED="resources.gpus_per_member=0.1 resources.members_per_actor=auto"
    FRACTIONAL="resources.gpus_per_member=0.1 resources.members_per_actor=1"
    GROUPS_ARGS="--device cuda --tokenizer .gpu/tok30522 --budget-s ${GPU_CHECK_GROUPS_BUDGET_S:-170}"
    COMPILE_ARGS="--device cuda"
fi
if [ "${GPU_CHECK_COMPILE_RUNS:-0}" = 1 ] && $PY -m orchestrator.config.reference 2>/dev/null | grep -q "compile"; then
    QS="$QS pretrain.compile=true"
fi

run() {  # run NAME OVERRIDES...: `committee run` of the quickstart into $RUNS/NAME, its output in NAME.log
    local name=$1; shift
    mkdir -p "$RUNS"
    $PY -m orchestrator.cli run configs/quickstart.yaml $QS "$@" name="$name" --run-dir "$RUNS/$name" --overwrite \
        > "$RUNS/$name.log" 2>&1
    local rc=$?
    grep -E "members per actor|wall|error|Error" "$RUNS/$name.log" | tail -n 8
    return $rc
}
export PY QS RUNS
export -f run

wants groups && part groups "${GPU_CHECK_GROUPS_LIMIT_S:-240}" $PY scripts/gpu_groups.py $GROUPS_ARGS \
    --tokenizer-8000 .gpu/tok8000 --json "$OUT/groups.json"
wants quickstart && part quickstart 100 run quickstart-gpu $SIZES $GROUPED
wants budget65m && part budget65m 220 run quickstart-65m $BIG deep.enabled=true $GROUPED
wants compilecheck && part compilecheck 90 $PY scripts/gpu_compile_check.py $COMPILE_ARGS --tokenizer .gpu/tok8000 \
    --json "$OUT/compile_check.json"
wants fractional && part fractional 100 run quickstart-fractional $SIZES $FRACTIONAL
if wants bench; then
    BENCH_ARGS="--device cuda --tokenizer .gpu/tok30522"
    [ "$DRY" = 1 ] && BENCH_ARGS="--quick --model tiny"
    part bench 400 $PY -m orchestrator.cli bench $BENCH_ARGS --json "$OUT/bench_cuda.json"
fi

echo "== outputs $(date -u +%H:%M:%S)"
if [ -d "$RUNS" ]; then
    (cd "$RUNS" && tar -czf "$OUT/runs.tar.gz" --ignore-failed-read *.log \
        $(for d in */; do for f in report.md report.json config.yaml metrics.jsonl; do
              [ -f "$d$f" ] && echo "$d$f"; done; done))
fi
$PY scripts/gpu_summary.py "$OUT" "$RUNS" "$PARTS_FILE" > "$OUT/summary.md" || echo "summary failed (exit $?)"
cat "$OUT/summary.md"
echo "== done: $((SECONDS - START)) s of ${TOTAL} s; OUT holds: $(cd "$OUT" && ls | tr '\n' ' ')"
