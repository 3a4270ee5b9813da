#!/usr/bin/env bash
# The GPU checks of issues #4 and #7 as one command for a GPU host without network access (docs/gpu.md):
#   1. the WAVE core tests on CUDA (expansion, WaveViT, folding, training incl. exact resume) and the CUDA
#      runner test;
#   2. benchmarks/gpu_throughput.py: training images/s and inference latency, GPU vs that machine's CPU;
#   3. `wave-deploy build --profile nvidia-l4 --device cuda`: the whole pipeline with training on the GPU;
#   4. a 224 px stage-2 run on the GPU: `wave-deploy init` of 6 x 192 from the shipped bank at --img-size 224
#      (MNIST resized at load, pos_embed resampled), scaler and dense phases; its images/s are in init.json;
#   5. benchmarks/loop_speed.py at DeiT-Tiny shape (12 x 192, 224 px, batch 128): images/s of the training
#      loop before (fp32, pageable copies) and after bf16 autocast, pinned buffers, the training set on the
#      GPU and torch.compile, side by side.
# Prepare here with scripts/gpu_wheels.sh, then run there with `.whl` carried:
#   bash scripts/gpu_check.sh            (logs and the build report land in $OUT, else artifacts/gpu_check)
# TensorRT is not installed on those machines: the engine build is not part of this check.
# STEPS="1 4 3" runs a subset in that order; STEP_TIMEOUT=N caps each step at N seconds (default: per step),
# so the check fits a short lease.
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-1 2 3 4 5}
t() { echo "${STEP_TIMEOUT:-$1}"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }
LOG_DIR=${OUT:-artifacts/gpu_check}
mkdir -p "$LOG_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

SITE=/tmp/wave-deploy-site
rm -rf "$SITE"
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 4
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" . || exit 4
export PYTHONPATH="$SITE"
export CUBLAS_WORKSPACE_CONFIG=:4096:8  # deterministic cuBLAS, for the bit-identical resume test
# -P: do not put the working directory on sys.path, so the installed package (with its profiles) is used

echo "== device"
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

step1() {
echo "== 1. WAVE core tests on CUDA"
WAVE_DEPLOY_TEST_DEVICE=cuda timeout "$(t 300)" $PY -P -m pytest -q -p no:cacheprovider \
    tests/test_kron.py tests/test_wave_model.py tests/test_folding.py tests/test_training.py tests/test_bench.py \
    2>&1 | tee "$LOG_DIR/tests_cuda.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

step2() {
echo "== 2. GPU vs CPU throughput and latency"
timeout "$(t 240)" $PY benchmarks/gpu_throughput.py 2>&1 | tee "$LOG_DIR/gpu_throughput.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

step3() {
echo "== 3. wave-deploy build on the GPU"
BUILD_DIR=$(mktemp -d)
timeout "$(t 240)" $PY -P -m wave_deploy.cli.main build --profile nvidia-l4 --device cuda --out "$BUILD_DIR" --json \
    > "$LOG_DIR/build.json" 2> "$LOG_DIR/build.log"
rc=$?
echo "build exit code $rc"; tail -5 "$LOG_DIR/build.log"; cat "$LOG_DIR/build.json"
cp "$BUILD_DIR/nvidia-l4/report.md" "$LOG_DIR/" 2>/dev/null || true
[ "$rc" -eq 0 ] || status=1
}

step4() {
echo "== 4. 224 px stage 2 on the GPU"
timeout "$(t 240)" $PY -P -m wave_deploy.cli.main init --depth 6 --embed-dim 192 --img-size 224 --scaler-steps 50 \
    --dense-steps 50 --device cuda --out "$(mktemp -d)" --json > "$LOG_DIR/init224.json" 2> "$LOG_DIR/init224.log"
rc=$?
echo "init 224 px exit code $rc"; tail -3 "$LOG_DIR/init224.log"
$PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: (r[k] or {}).get('images_per_s') for k in ('scaler_phase','dense_phase')}, 'val_acc', r['val_acc'])" "$LOG_DIR/init224.json" || true
[ "$rc" -eq 0 ] || status=1
}

step5() {
echo "== 5. training-loop speed options at DeiT-Tiny shape on the GPU"
timeout "$(t 300)" $PY -P benchmarks/loop_speed.py --device cuda --shape 12x192@224 --batch 128 --steps 100 \
    2>&1 | tee "$LOG_DIR/loop_speed.log" | tail -9
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

for step in $STEPS; do "step$step"; done
exit $status
