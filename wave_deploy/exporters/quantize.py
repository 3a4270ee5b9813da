"""Reduced-precision variants of the exported ONNX model, and the accuracy gate that judges them.

Variants keep fp32 inputs and outputs, so the same images drive every file.

- fp16: initializers and compute in float16, Cast nodes at the graph boundary
  (``onnxruntime.transformers.float16``, shipped inside onnxruntime).
- int8 "static-qdq": ``quantize_static`` in QDQ format with per-channel symmetric int8 weights, calibrated
  (min/max) on real training images. For ONNX Runtime targets activations are asymmetric uint8 (the u8s8
  kernels of x86 and Arm); for TensorRT targets activations are symmetric int8 with zero point 0 and biases
  stay float, which is the explicit quantization TensorRT builds from. ``KEEP_FLOAT`` names the sets of
  layers that can stay in float; the default was chosen by measurement (docs/export.md, docs/decisions.md).
- int8 "dynamic": ``quantize_dynamic`` (int8 weights, activations quantized at run time); ONNX Runtime only.

A variant is judged by top-1 accuracy against the ONNX fp32 model on the same labelled images
(``judge_variant``), with a stated confidence: it fails when its drop exceeds ``max_drop_points`` percentage
points with 95% confidence (an exact test on the images whose correctness changed), and reports "not enough
data to judge" below 100 images; the rule is the kit's (``export/kit_accuracy.py``, docs/export.md). Without
labels the gate falls back to the share of images whose top-1 class changed, which bounds the accuracy drop
from above. Max-abs logit error is recorded, never gated here (quantization error in logits says little
about the class a model picks).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wave_deploy._kit.kit_accuracy import NOT_ENOUGH_DATA, judge_changes, judge_drop, paired_counts
from wave_deploy.errors import UsageError
from wave_deploy.exporters.onnx import onnx_io
from wave_deploy.fileio import atomic_path
from wave_deploy.target import Variant

log = logging.getLogger(__name__)

INT8_METHODS = ("static", "dynamic")
# Which layers stay in float. Every set also keeps what ONNX Runtime would not quantize anyway.
KEEP_FLOAT = {
    # nothing kept: every op ONNX Runtime can quantize (also LayerNorm, Softmax, GELU, Add, Reshape, ...)
    "none": "quantize every op ONNX Runtime can quantize",
    # only Conv / MatMul / Gemm are quantized: LayerNorm, Softmax, GELU and the residual adds stay float
    "norms": "LayerNorm, Softmax, GELU and residual adds stay float",
    # as "norms", and attention's activation x activation MatMuls (Q K^T, attention x V) stay float too
    "norms-attention": "as 'norms', plus the attention score and attention-weighted-value MatMuls",
    # as "norms-attention", and the first and last layers (patch embedding conv, classifier head) stay float
    "norms-attention-ends": "as 'norms-attention', plus the patch embedding and the classifier head",
}
DEFAULT_KEEP_FLOAT = "norms-attention-ends"
# Activations: int8 with zero point 0, or uint8 with a zero point (ONNX Runtime's u8s8 kernels). TensorRT
# always gets int8-symmetric. The default was chosen by measurement (docs/export.md).
ACTIVATIONS = ("int8-symmetric", "uint8-asymmetric")
DEFAULT_ACTIVATIONS = "int8-symmetric"
_WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


def calibration_reader(input_name: str, images: np.ndarray, batch: int = 32):
    """An onnxruntime.quantization CalibrationDataReader over ``images`` (N, C, H, W), ``batch`` at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    images = np.ascontiguousarray(images, dtype=np.float32)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._starts = iter(range(0, len(images), batch))

        def get_next(self):
            start = next(self._starts, None)
            return None if start is None else {input_name: images[start : start + batch]}

        def rewind(self):
            self._starts = iter(range(0, len(images), batch))

    return _Reader()


def quantized_nodes(proto, keep_float: str) -> list[str] | None:
    """Names of the nodes to quantize for a ``KEEP_FLOAT`` set (None: let ONNX Runtime pick every op)."""
    if keep_float not in KEEP_FLOAT:
        raise UsageError(f"unknown int8 keep-float set {keep_float!r}; known: {', '.join(KEEP_FLOAT)}")
    if keep_float == "none":
        return None
    weights = {init.name for init in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in _WEIGHT_OPS]
    if keep_float != "norms":  # keep activation x activation products (attention) in float
        nodes = [n for n in nodes if len(n.input) > 1 and n.input[1] in weights]
    if keep_float == "norms-attention-ends" and len(nodes) > 2:
        nodes = nodes[1:-1]  # graph order: the patch embedding comes first, the classifier head last
    return [n.name for n in nodes]


def make_int8_static(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    *,
    target: str = "onnxruntime",
    keep_float: str = DEFAULT_KEEP_FLOAT,
    activations: str = DEFAULT_ACTIVATIONS,
) -> dict:
    """Static QDQ int8, calibrated on ``calibration`` images; returns the settings used (for export.json)."""
    import onnx
    from onnxruntime import quantization as q

    if target not in ("onnxruntime", "tensorrt"):
        raise UsageError(f"int8 target must be onnxruntime or tensorrt, got {target!r}")
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) < 1:
        raise UsageError(f"static int8 needs calibration images (N, C, H, W), got shape {calibration.shape}")
    proto = onnx.load(str(onnx_path))
    nodes = quantized_nodes(proto, keep_float)
    if activations not in ACTIVATIONS:
        raise UsageError(f"int8 activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}")
    tensorrt = target == "tensorrt"
    symmetric = tensorrt or activations == "int8-symmetric"  # TensorRT: zero point 0 everywhere
    extra = {
        "WeightSymmetric": True,
        "ActivationSymmetric": symmetric,
        "QuantizeBias": not tensorrt,  # TensorRT fuses float biases itself
    }
    settings = {
        "format": "QDQ",
        "target": target,
        "weights": "int8 symmetric per-channel",
        "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
        "calibration": f"minmax over {len(calibration)} images",
        "keep_float": keep_float,
        "quantized_nodes": len(nodes) if nodes is not None else None,
    }
    reader = calibration_reader(proto.graph.input[0].name, calibration)
    with atomic_path(out_path) as tmp, _quiet():
        q.quantize_static(
            str(onnx_path), str(tmp), reader, quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QInt8 if symmetric else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
            op_types_to_quantize=list(_WEIGHT_OPS) if nodes is not None else None,
            nodes_to_quantize=nodes, extra_options=extra,
        )  # fmt: skip
    return settings


def make_int8_dynamic(onnx_path: str | Path, out_path: str | Path) -> dict:
    """Dynamic int8 (weights int8, activations quantized at run time by ONNX Runtime)."""
    from onnxruntime import quantization as q

    with atomic_path(out_path) as tmp, _quiet():
        q.quantize_dynamic(str(onnx_path), str(tmp), weight_type=q.QuantType.QInt8)
    return {"format": "QOperator", "weights": "int8", "activations": "quantized at run time"}


def make_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (Cast nodes at the boundary)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    wrapped = OnnxModel(half)
    wrapped.topological_sort()  # the converter appends the boundary Casts after their consumers
    onnx.checker.check_model(wrapped.model, full_check=True)
    with atomic_path(out_path) as tmp:
        onnx.save(wrapped.model, str(tmp))
    return Path(out_path)


def make_variant(
    variant: Variant, onnx_path: str | Path, out_path: str | Path, calibration: np.ndarray | None = None
) -> dict | None:
    """Make ``variant`` (a ``wave_deploy.target.Variant``: fp16, or int8 as the target quantizes it) from the
    fp32 ONNX model; return its quantization settings (None for fp16). Static Q/DQ calibrates on
    ``calibration`` images (N, C, H, W); None: 8 seeded random images, which is enough to time a model (latency
    calibration) and nothing else."""
    if variant.method == "float16-cast-io":
        make_fp16(onnx_path, out_path)
        return None
    if variant.method == "dynamic":
        return make_int8_dynamic(onnx_path, out_path)
    if variant.method != "static-qdq":
        raise UsageError(f"cannot make an ONNX variant by method {variant.method!r}")
    if calibration is None:
        shape = [d if isinstance(d, int) else 8 for d in onnx_io(onnx_path)["input_shape"]]
        calibration = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return make_int8_static(onnx_path, out_path, calibration, target=variant.quantized_for or "onnxruntime")


class _quiet:
    """ONNX Runtime's quantizer logs advice at WARNING for every call; keep it at ERROR while it runs."""

    def __enter__(self):
        self._logger = logging.getLogger()
        self._level = self._logger.level
        self._logger.setLevel(max(self._level, logging.ERROR))

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)


# --- accuracy -------------------------------------------------------------------------------------------


def ort_logits(model_path: str | Path, images: np.ndarray, batch: int = 64, threads: int = 1) -> np.ndarray:
    """Logits of ``model_path`` in ONNX Runtime (CPU) over ``images``, ``batch`` at a time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = np.asarray(images, dtype=np.float32)
    parts = [session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float32)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose highest logit is the label's class."""
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def judge_variant(
    path: str | Path,
    logits: np.ndarray,
    fp32_logits: np.ndarray,
    labels: np.ndarray | None,
    *,
    precision: str,
    method: str,
    max_drop_points: float,
) -> dict:
    """The accuracy gate for one variant: its record (export.json ``onnx.variants[]`` fields, less files)."""
    pred, ref_pred = np.argmax(logits, axis=1), np.argmax(fp32_logits, axis=1)
    agreement = float(np.mean(pred == ref_pred))
    max_abs = float(np.max(np.abs(logits.astype(np.float64) - fp32_logits)))
    if labels is not None:
        acc = top1(logits, labels)
        losses, gains = paired_counts(ref_pred.tolist(), pred.tolist(), np.asarray(labels).tolist())
        gate = judge_drop(losses, gains, len(labels), max_drop_points)
        drop = gate.drop_points
    else:  # no labels: the share of changed predictions bounds the accuracy drop from above
        acc, drop = None, None
        gate = judge_changes(int(np.sum(pred != ref_pred)), len(logits), max_drop_points)
    passed = gate.passed
    failure = None if passed else f"{precision} ({method}): {gate.reason}"
    if gate.decision == NOT_ENOUGH_DATA:
        log.warning("%s (%s): %s; the file is kept", precision, method, gate.reason)
    log.info("%s (%s): top-1 %s, agreement %.4f, %s", precision, method, acc, agreement, gate.decision)
    return {
        "precision": precision,
        "method": method,
        "top1": acc,
        "top1_drop_points": drop,
        "max_drop_points": float(max_drop_points),
        "top1_agreement": agreement,
        "max_abs_err": max_abs,
        "n_images": len(logits),
        "passed": bool(passed),
        "failure": failure,
        "gate": gate.to_dict(),  # decision, interval, losses/gains, confidence, minimum images
    }
