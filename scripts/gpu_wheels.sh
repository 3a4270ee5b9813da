#!/usr/bin/env bash
# Fetch, where PyPI is reachable, the wheels that the offline GPU host lacks, into .whl/ (docs/gpu.md).
# The host this project checks on runs Python 3.12 with torch, timm, onnx, onnxruntime, onnxscript, click,
# safetensors, pyyaml, rich, numpy and matplotlib installed; pydantic and its helpers are missing, and
# typing-extensions is carried at the version pydantic 2.14 needs. scripts/gpu_check.sh installs .whl/*.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0
ls -l .whl
