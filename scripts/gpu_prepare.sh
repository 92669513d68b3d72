#!/usr/bin/env bash
# bash scripts/gpu_prepare.sh            (here, where pip reaches the package registries; not on the GPU machine)
# Builds .gpu/ in the repository root (git-ignored) with what scripts/gpu_check.sh needs on a GPU machine
# that has Python 3.12 and PyTorch but no Ray, no pydantic and no network:
#   .gpu/ray.tar.xz    ray 2.60.0 for CPython 3.12 (manylinux x86_64), unpacked from its wheel without the Java
#                      jars, the dashboard's web build, rllib, ray.llm and the tests, xz-compressed (about 21 MB,
#                      against 79 MB for the wheel): gpu_check.sh unpacks it into /tmp/site
#   .gpu/whl/          wheels for Python 3.12 of the packages that machine lacks (pydantic and its needs;
#                      jsonschema and its needs, which ray imports), at this venv's versions
#   .gpu/data/         the data subset the checks read: wikipedia/ (the 5 shards: the seeded article order is
#                      over all of them) and ag_news/, with their SHA256SUMS lines
#   .gpu/tok30522/     the benchmark's tokenizer (vocab 30,522 on all 6,417 articles), and
#   .gpu/tok8000/      the quickstart's (vocab 8,000 on its 1,000 articles): both learned by the product
#                      (orchestrator.run.prepare.tokenizer_for, cached under ~/.cache/committee/tokenizers)
# Everything that travels to the GPU machine (the tracked files, untracked files git does not ignore, and
# .gpu/ as a carried path) must stay under 64 MiB; the script prints that total last.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${COMMITTEE_DATA:-../shared/data}
RAY_VERSION=2.60.0
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
mkdir -p .gpu/whl .gpu/data
t0=$SECONDS

# 1. ray, trimmed (cached: rebuilt only when missing)
if [ ! -s .gpu/ray.tar.xz ]; then
    tmp=$(mktemp -d)
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
        -d "$tmp" "ray==$RAY_VERSION"
    (cd "$tmp" && mkdir x && cd x && unzip -q ../ray-*.whl \
        && rm -rf ray/jars ray/dashboard/client/build ray/rllib ray/llm \
        && find . -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} + \
        && tar -cf - ray "ray-$RAY_VERSION.dist-info" | xz -9 -T2 > ../ray.tar.xz)
    mv "$tmp/ray.tar.xz" .gpu/ray.tar.xz
    rm -rf "$tmp"
fi
echo "ray: $(du -h .gpu/ray.tar.xz | cut -f1) ($((SECONDS - t0)) s)"

# 2. the other wheels, at the versions this venv runs
rm -f .gpu/whl/*.whl
for pkg in pydantic pydantic_core annotated_types typing_inspection typing_extensions \
           jsonschema jsonschema_specifications referencing rpds_py; do
    version=$($PY -c "import importlib.metadata as m; print(m.version('$pkg'))")
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
        -d .gpu/whl "$pkg==$version"
done
echo "wheels: $(ls .gpu/whl | tr '\n' ' ')"

# 3. the data subset
rm -rf .gpu/data && mkdir -p .gpu/data/wikipedia .gpu/data/ag_news
cp "$DATA"/wikipedia/train-*.parquet .gpu/data/wikipedia/
cp "$DATA"/ag_news/train.parquet "$DATA"/ag_news/test.parquet .gpu/data/ag_news/
(cd .gpu/data && grep -E "wikipedia/train-|ag_news/(train|test)\.parquet" "$DATA/SHA256SUMS" > SHA256SUMS \
    && sha256sum -c --quiet SHA256SUMS)
echo "data: $(du -sh .gpu/data | cut -f1)"

# 4. the tokenizers, learned by the product (from its cache when there)
COMMITTEE_DATA="$DATA" $PY - <<'EOF'
import shutil
from pathlib import Path

from orchestrator.run.prepare import tokenizer_for
from workers.data.loading import load_wikipedia_texts, resolve_data_root

root = resolve_data_root(None)
for name, vocab, articles in (("tok30522", 30522, len(load_wikipedia_texts(root))), ("tok8000", 8000, 1000)):
    source = tokenizer_for(root, vocab, articles, 0)
    target = Path(".gpu") / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    print(f"{name}: vocab {vocab} on {articles} articles, from {source}")
EOF

# 5. what travels
# `|| true`: du exits 1 on a tracked file deleted in the working tree (it still prints the total of the rest),
# which set -e and pipefail would turn into this script's failure after everything was built
tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)
untracked=$( (git ls-files -z --others --exclude-standard; printf '') | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)
gpu=$(du -sb .gpu | cut -f1)
total=$((tracked + ${untracked:-0} + gpu))
echo ".gpu/: $((gpu / 1048576)) MiB; the working tree that travels: $((total / 1048576)) MiB of 64 MiB" \
     "(tracked $((tracked / 1048576)), untracked $((${untracked:-0} / 1048576)), .gpu $((gpu / 1048576)))" \
     "($((SECONDS - t0)) s)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "over the 64 MiB a device call carries: trim .gpu/" >&2; exit 1; }
