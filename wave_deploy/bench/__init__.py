"""Runners (torch, ONNX Runtime, TensorRT) behind one small interface, and latency statistics.

``RUNNERS`` maps a runner name to its class, imported only when asked for (``get_runner_class``), so importing
this package imports neither torch nor onnxruntime nor tensorrt.
"""

from __future__ import annotations

import importlib

from wave_deploy.errors import UsageError

RUNNERS = {
    "torch": "wave_deploy.bench.runners:TorchRunner",
    "onnxruntime": "wave_deploy.bench.runners:OrtRunner",
    "tensorrt": "wave_deploy.bench.runners:TensorRTRunner",
}


def get_runner_class(name: str):

    if name not in RUNNERS:
        raise UsageError(f"unknown runner {name!r}; known: {', '.join(RUNNERS)}")
    module, attr = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), attr)
