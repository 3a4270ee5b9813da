# wave-deploy, CPU image: builds, exports and benchmarks with PyTorch + ONNX Runtime on the CPU.
#
#   docker build -t wave-deploy .
#   docker run --rm wave-deploy                                  # = wave-deploy doctor
#   docker run --rm wave-deploy profiles list
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" wave-deploy profiles validate my-device.yaml
#
# The default image is CPU-only: torch and torchvision come from the PyTorch CPU wheel index (no CUDA libraries,
# unlike PyPI's Linux x86-64 wheels), at the versions constraints.txt pins. Every other
# package comes from PyPI at its constraints.txt version, the same set .ci/run tests with. To take torch from
# PyPI instead (CUDA wheels, several GB), pass an empty index:
#
#   docker build --build-arg TORCH_INDEX_URL= -t wave-deploy:pypi-torch .
#
# Layers: the dependencies install from pyproject.toml + constraints.txt alone, so a code change rebuilds only
# the last, small layer (pip install --no-deps of the package). Not built or run on this project's machines
# (no container engine there); `pip install -c constraints.txt .` with the same files is what CI checks.
#
# GPU hosts (x86-64 with an NVIDIA GPU, e.g. the nvidia-l4 profile): derive from a CUDA PyTorch base image
# instead of python:3.11-slim, and add the tensorrt extra so that engines are built on the host:
#
#   FROM pytorch/pytorch:<torch>-cuda<12.x|13.x>-cudnn9-runtime     (or nvcr.io/nvidia/pytorch:<yy.mm>-py3)
#   ... same COPY lines as below ...
#   RUN pip install '.[tensorrt]'          (no -c constraints.txt: its torch pin would replace the image's)
#   docker run --rm --gpus all wave-deploy doctor                  # shows the GPU and the TensorRT version
#
# Keep the base image's torch (pip sees it as installed and does not replace it). The TensorRT wheel must match
# the profile's software.tensorrt_version: an engine only loads on the TensorRT version and GPU that built it.
#
# Jetson (Orin Nano / NX / AGX): do not use this image. PyPI's aarch64 torch has no Jetson CUDA support and
# TensorRT comes with JetPack, so start from JetPack's own container for the device's L4T release:
#   nvcr.io/nvidia/l4t-jetpack:r36.x     CUDA + TensorRT + numpy: enough for the on-device kit in the bundle
#                                         that wave-deploy writes for a Jetson profile (the kit needs no torch)
#   an l4t-pytorch image (NVIDIA NGC or dusty-nv/jetson-containers) matching the L4T release, to run
#                                         wave-deploy itself on the device
# and install wave-deploy without letting pip replace the container's torch, torchvision or TensorRT:
#   pip install --no-deps .
#   pip install click pyyaml "pydantic>=2" rich safetensors huggingface_hub onnx onnxscript matplotlib
#   pip install --no-deps timm
#   (ONNX Runtime: the CPU wheel from PyPI, or a Jetson onnxruntime-gpu build matching JetPack)
#   docker run --rm --runtime nvidia ...

FROM python:3.11-slim

# The PyTorch CPU wheel index; empty: torch from PyPI (or the base image's own torch, when it has one).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: the OpenMP runtime that CPU kernels of ONNX Runtime and friends load; the slim image lacks it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/wave-deploy

# 1. Dependencies only: this layer is rebuilt when pyproject.toml or constraints.txt change, not the code.
COPY pyproject.toml constraints.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install -c constraints.txt torch torchvision --index-url "$TORCH_INDEX_URL"; \
    fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt

# 2. The package itself, without touching the dependencies; pip check fails the build if one is missing.
COPY README.md ./
COPY wave_deploy ./wave_deploy
COPY profiles ./profiles
COPY export ./export
RUN pip install --no-deps . \
    && pip check \
    && wave-deploy --version

# Run as an unprivileged user; build outputs go to the mounted working directory (see --user above).
RUN useradd --create-home --uid 1000 wave
USER wave
WORKDIR /work

ENTRYPOINT ["wave-deploy"]
CMD ["doctor"]
