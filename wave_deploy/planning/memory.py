"""Memory model: what a ViT needs resident at run time on a device, and what a TensorRT build needs.

    runtime = weight_factor x weights at the deployed precision
            + activation_factor x peak live activations at the batch (``spec.activation_bytes``, an estimate)
            + the runtime's fixed overhead (``profile.latency_model.runtime_overhead_mib``)
            + TensorRT scratch in use (TensorRT profiles only, see ``tensorrt_scratch``)

The factors are 1 for TensorRT (it plans activation memory ahead and keeps one copy of the weights) and
RUNTIME_FACTORS["onnxruntime"] for ONNX Runtime, measured here (below).

    engine build peak (TensorRT engines built on the device, e.g. unified-memory Jetsons)
            = runtime overhead + BUILD_WEIGHT_COPIES x fp32 weights + the builder workspace limit
              + peak activations

Every number here is an estimate from shapes and profile facts, not a measurement;
benchmarks/latency_model.py compares the ONNX Runtime estimate with measured peak RSS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wave_deploy.profiles import DeviceProfile
from wave_deploy.spec import ViTSpec, activation_bytes, weight_bytes
from wave_deploy.target import Target

MIB = 1 << 20

# ONNX Runtime (CPU provider, dynamic batch) holds more than the ideal: the graph's initializers plus MLAS's
# pre-packed GEMM weights at session creation, and an arena whose freed activation chunks stay resident
# (dynamic shapes turn off its memory-pattern planning). Measured with ONNX Runtime 1.32 on x86 (21 runs,
# depth 1-12, width 32-384, batch 1-16): peak RSS above the imported library = 19.7 MiB + 1.32 x weights +
# 6.3 x the live-activation estimate (docs/latency.md). (weight factor, activation factor):
RUNTIME_FACTORS = {"onnxruntime": (1.3, 6.0), "tensorrt": (1.0, 1.0)}

# The TensorRT builder holds the parsed fp32 ONNX weights, its converted (fp16/int8) copy and the serialized
# engine at once: three copies, counted at fp32 as the upper bound. An estimate: measure the real peak on the
# device (`/usr/bin/time -v trtexec ...`) before trusting a tight build budget.
BUILD_WEIGHT_COPIES = 3.0


@dataclass(frozen=True)
class MemoryEstimate:
    batch: int
    weights_mib: float  # at the deployed precision, one copy
    activations_mib: float  # peak live activations estimate, ideal runtime
    weight_factor: float  # resident copies of the weights the runtime keeps (RUNTIME_FACTORS)
    activation_factor: float  # the runtime's activation memory over the ideal estimate
    runtime_overhead_mib: float
    scratch_mib: float  # TensorRT scratch in use; 0 for ONNX Runtime
    total_mib: float  # runtime memory: the number budgets.memory_mib is compared with
    build_peak_mib: float | None  # engine build on the device; None where nothing is built there
    weight_precision: str
    activation_precision: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return data


def tensorrt_scratch(profile: DeviceProfile, activations_mib: float) -> float:
    """TensorRT scratch actually in use: tactics rarely need more than one more activation-sized buffer, and
    never more than the workspace limit. An estimate."""
    limit = profile.runtime.workspace_mib
    return min(float(limit), activations_mib) if limit else activations_mib


def predict_memory(spec: ViTSpec, profile: DeviceProfile, batch: int | None = None) -> MemoryEstimate:
    """Runtime memory (and, for on-device TensorRT builds, the build peak) of ``spec`` on ``profile``."""
    batch = profile.budgets.latency_batch if batch is None else batch
    target = Target.of(profile)
    w_prec, a_prec = target.weight_dtype, target.activation_dtype
    weights = weight_bytes(spec, w_prec) / MIB
    activations = activation_bytes(spec, batch, a_prec) / MIB
    overhead = profile.latency_model.runtime_overhead_mib
    tensorrt = profile.software.runtime == "tensorrt"
    scratch = tensorrt_scratch(profile, activations) if tensorrt else 0.0
    weight_factor, activation_factor = RUNTIME_FACTORS[profile.software.runtime]
    notes = [
        f"estimate: {weight_factor:g} x weights + {activation_factor:g} x peak live activations + runtime overhead"
        + (" + TensorRT scratch" if tensorrt else "")
    ]
    build_peak = None
    if tensorrt and profile.software.engine_built_on_device:
        workspace = float(profile.runtime.workspace_mib or 0)
        build_peak = (
            overhead + BUILD_WEIGHT_COPIES * weight_bytes(spec, "fp32") / MIB + workspace + activations
        )
        notes.append(
            f"build peak estimate: runtime overhead + {BUILD_WEIGHT_COPIES:g} x fp32 weights + workspace limit"
            " + activations"
        )
    return MemoryEstimate(
        batch=batch,
        weights_mib=weights,
        activations_mib=activations,
        weight_factor=weight_factor,
        activation_factor=activation_factor,
        runtime_overhead_mib=overhead,
        scratch_mib=scratch,
        total_mib=weight_factor * weights + activation_factor * activations + overhead + scratch,
        build_peak_mib=build_peak,
        weight_precision=w_prec,
        activation_precision=a_prec,
        notes=tuple(notes),
    )
