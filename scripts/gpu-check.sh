#!/usr/bin/env bash
# GPU checks, in one go: the CUDA tests (bf16, batched), a few LoRA steps of the Qwen2.5-VL-3B and
# -7B recipes on random weights (the real architectures' memory and speed, nothing downloaded), and
# the shipped model's latency on the GPU. Each step runs even if one before it failed.
#   bash scripts/gpu-check.sh                  # results in results/gpu-check/
#   PY=python3 OUT_DIR=/tmp/out STEPS=6 SIZES=3b bash scripts/gpu-check.sh   # the 3B recipe only
#   SIZES= bash scripts/gpu-check.sh           # no recipe benchmarks: the CUDA tests and the latency only
#   PY=python3 WHEELS=.whl bash scripts/gpu-check.sh   # first install the wheels in .whl into /tmp/site
# WHEELS: for a GPU machine without network whose Python lacks part of the pinned stack (a lent
# machine had torch but transformers 5.17 and no trl, datasets or outlines): wheels downloaded
# elsewhere for its Python (pip download --no-deps --only-binary=:all: --python-version 3.12 ...
# transformers==5.24.0 trl==1.16.0 datasets outlines and what they need that is missing there).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT_DIR=${OUT_DIR:-results/gpu-check}
DATA=${DATA:-data/phantom-gpu-check}
STEPS=${STEPS:-8}
SIZES=${SIZES-3b 7b}        # set but empty: none
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
failed=()
step() {  # step NAME COMMAND...: run it, log it to OUT_DIR/NAME.log, remember a failure
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$OUT_DIR/$name.log" | grep -vE "Warning|warn\(|^\s*$|it/s\]|s/it\]" | tail -40
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || failed+=("$name")
}

$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
[ -f "$DATA/dataset_dict.json" ] || step phantom $PY -m casiqa.phantom --n 200 --seed 1 --out "$DATA" --workers 8
step pytest-gpu $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
for size in $SIZES; do
    step "train-$size" $PY -m benchmarks.bench_train --config "finetune/recipes/qwen2.5-vl-$size.yaml" \
        --model_name_or_path "random:qwen2.5-vl-$size" --data "$DATA" --max_steps "$STEPS" \
        --json_out "$OUT_DIR/train-$size.json"
done
step assess-tiny $PY -m benchmarks.bench_assess --model models/cas-iqa-tiny --device cuda --repeats 10
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all GPU checks passed"
