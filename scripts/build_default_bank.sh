#!/usr/bin/env bash
# Rebuild the default template bank shipped as wave_deploy/assets/default_bank.safetensors, from scratch:
#   1. train the ancestry ViT (depth 6, width 128, patch 7) on the built-in MNIST-5k train split;
#   2. distil it into a template bank with `wave-deploy templates build` (elastic stage 1);
#   3. copy the bank into the package (with --install).
# Usage: scripts/build_default_bank.sh [OUT_DIR] [--install]      (OUT_DIR default: recipe/)
# Timings on this project's 2-core machine are in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=recipe
INSTALL=0
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    *) OUT="$arg" ;;
  esac
done
PY=${PYTHON:-python3}
mkdir -p "$OUT"
start=$(date +%s)
"$PY" scripts/train_ancestry.py --out "$OUT/ancestry.safetensors" --depth 6 --embed-dim 128 --heads 4 \
    --patch-size 7 --epochs 30 --seed 0
mid=$(date +%s)
"$PY" -m wave_deploy.cli.main templates build --teacher-checkpoint "$OUT/ancestry.safetensors" \
    --out "$OUT/bank.safetensors" --aux-depth 6 --aux-embed-dim 128 --template-size 32 --head-dim 32 \
    --patch-size 7 --templates-per-kind 16 --vector-templates 4 --epochs "${STAGE1_EPOCHS:-40}" \
    --checkpoint-dir "$OUT/stage1.ckpt" --resume --seed 0
end=$(date +%s)
echo "ancestry $((mid - start)) s, stage 1 $((end - mid)) s, total $((end - start)) s" >&2
"$PY" -m wave_deploy.cli.main templates info "$OUT/bank.safetensors"
if [ "$INSTALL" = 1 ]; then
  cp "$OUT/bank.safetensors" wave_deploy/assets/default_bank.safetensors
  echo "installed wave_deploy/assets/default_bank.safetensors" >&2
fi
