"""What a calibration will cost before it starts: memory (checked, exit 3 when the machine lacks it) and time.

``check_memory`` bounds the design by a memory estimate before anything is allocated: the largest design
model's runtime memory (the memory model's ONNX Runtime factors, ``planning.memory.RUNTIME_FACTORS``) and the
export of its depth-1 model, against the memory this machine has available. A geometry inside the CLI's
ranges that needs more (e.g. 4096 px at patch 1: 16.8 M tokens, attention scores of petabytes) is one line
and exit 3, not an exhausted machine. ``check_export_memory`` is the same bound for a bundle's design, which
the build machine only exports (``calibration.bundle.bundle_design``).

``estimate`` is the up-front time: a GEMM probe (one ONNX Runtime MatMul, about 0.2 s) gives this machine's
speed, each point's latency is guessed from its FLOPs (``kit_design.estimate_latency_ms``, shared with the
on-device kit) and priced with the design's timing settings; exporting costs EXPORT_S (a fixed part and a
part per width: all widths are exported in one call).
It is an estimate: the progress lines correct it as the measurements come in.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from wave_deploy import probe
from wave_deploy.calibration.graphs import probe_graph
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning.memory import MIB, RUNTIME_FACTORS
from wave_deploy.spec import ViTSpec, activation_bytes, flops, model_ops, weight_bytes

OVERHEAD_MIB = 64.0  # Python, numpy and ONNX Runtime or torch, measured for ONNX Runtime (docs/latency.md)
# (seconds per export call, seconds per width) of design_export on this project's 2-core machine, quiet
EXPORT_S = {"dynamo": (4.0, 2.0), "legacy": (0.5, 0.3)}
VARIANT_S = 1.0  # seconds to make an fp16 or int8 variant of one depth-1 model
WRITE_MB_S = 300.0  # MB/s of random weights written (kit_design.write_data) and loaded into a session
PROBE_SHAPE = (256, 512, 512)  # the probe's MatMul: (m, k) x (k, n)


def kit_design():
    """The kit's design module (numpy only), shared with the device: ``wave_deploy._kit.kit_design``."""

    return importlib.import_module("wave_deploy._kit.kit_design")


def point_memory_mib(spec: ViTSpec, batch: int, weight_prec: str, act_prec: str, runtime: str) -> float:
    """Resident memory while timing ``spec`` at ``batch``: the memory model's ONNX Runtime factors (torch eager
    holds about as much), plus the fixed overhead."""
    weight_factor, act_factor = RUNTIME_FACTORS["onnxruntime" if runtime != "tensorrt" else "tensorrt"]
    weights = weight_bytes(spec, weight_prec) / MIB
    return OVERHEAD_MIB + weight_factor * weights + act_factor * activation_bytes(spec, batch, act_prec) / MIB


def export_memory_mib(spec: ViTSpec) -> float:
    """Exporting and quantizing one depth-1 model: fp32 weights a few times over, and a forward pass at batch 8
    (int8 calibration) keeping every intermediate tensor."""
    one = spec.replace(depth=1)
    return OVERHEAD_MIB + (4 * weight_bytes(one, "fp32") + 16 * activation_bytes(one, 8, "fp32")) / MIB


def check_memory(
    points: list[tuple[ViTSpec, int]],
    *,
    weight_prec: str,
    act_prec: str,
    runtime: str,
    exports: bool,
    available: float | None = None,
) -> float:
    """The design's peak memory estimate (MiB); InvalidInputError (exit 3) when it exceeds ``available``
    (default: this machine's). Nothing is allocated here."""
    spec, batch = max(points, key=lambda p: point_memory_mib(p[0], p[1], weight_prec, act_prec, runtime))
    need = point_memory_mib(spec, batch, weight_prec, act_prec, runtime)
    if exports:
        need = max(need, max(export_memory_mib(s) for s, _ in points))
    model = f"depth {spec.depth}, width {spec.embed_dim}, batch {batch}, {spec.seq_len} tokens per image"
    needs = f"the calibration design needs about {_size(need)} of memory (its largest model: {model})"
    hint = "lower --img-size, raise --patch-size, or lower --max-embed-dim / --max-depth"
    return _within_memory(need, available, needs, hint)


def check_export_memory(specs: list[ViTSpec], *, available: float | None = None) -> float:
    """A bundle's design at build time: the peak memory estimate (MiB) of exporting its depth-1 models
    (``export_memory_mib`` of the most demanding); InvalidInputError (exit 3) when it exceeds ``available``
    (default: this machine's). Only the exports run here: timing the models is the device's, and the kit checks
    that memory there. Nothing is allocated here."""
    spec = max(specs, key=export_memory_mib)
    need = export_memory_mib(spec)
    model = f"width {spec.embed_dim}, {spec.seq_len} tokens per image"
    needs = (
        f"the bundle's calibration design needs about {_size(need)} of memory to export "
        f"(its widest model: {model})"
    )
    hint = (
        "export on a machine with more memory, or train the model at a smaller image or a larger patch size"
    )
    return _within_memory(need, available, needs, hint)


def _within_memory(need: float, available: float | None, needs: str, hint: str) -> float:
    """``need`` (MiB) when it fits ``available`` (default: this machine's available memory; None: unknown, not
    judged); else InvalidInputError (exit 3): ``needs``, then what the machine has."""
    available = probe.available_memory_mib() if available is None else available
    if available is not None and need > available:
        raise InvalidInputError(f"{needs} but this machine has {_size(available)} available", hint=hint)
    return need


def _size(mib: float) -> str:
    return f"{mib / 1024:.3g} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def probe_gflops(threads: int) -> float:
    """This machine's GEMM speed in ONNX Runtime at ``threads`` intra-op threads (GFLOP/s, about 0.2 s)."""
    import onnxruntime as ort

    m, k, n = PROBE_SHAPE
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(probe_graph(m, k, n), options, providers=["CPUExecutionProvider"])
    return kit_design().gemm_gflops(session, m, k, n)


@dataclass(frozen=True)
class Estimate:
    """The up-front estimate: seconds to prepare (export) and to measure, and what it was based on."""

    prepare_s: float
    measure_s: float
    gflops: float  # the probe's GEMM speed
    memory_mib: float  # peak memory estimate
    point_s: dict  # (spec, batch) -> estimated seconds over all passes

    @property
    def total_s(self) -> float:
        return self.prepare_s + self.measure_s


def estimate(
    points: list[tuple[ViTSpec, int]],
    timing: dict,
    passes: int,
    *,
    gflops: float,
    widths: int,
    exporter: str | None,
    variant_made: bool,
    memory_mib: float,
    weight_prec: str = "fp32",
) -> Estimate:
    """Seconds the design will take: ``widths`` exports (none when ``exporter`` is None), writing each
    model's weights once per pass (WRITE_MB_S), and every point."""
    kd = kit_design()
    point_s = {}
    for spec, batch in points:
        kernels = sum(op.count for op in model_ops(spec, batch))
        latency = kd.estimate_latency_ms(flops(spec, batch) / 1e9, kernels, gflops)
        point_s[(spec, batch)] = kd.point_seconds(latency, timing, passes)
    specs = {spec for spec, _ in points}
    writes = passes * sum(weight_bytes(s, weight_prec) for s in specs) / 1e6 / WRITE_MB_S
    fixed, per_width = EXPORT_S.get(exporter or "dynamo", EXPORT_S["dynamo"])
    prepare = 0.0 if exporter is None else fixed + widths * (per_width + VARIANT_S * variant_made)
    return Estimate(prepare, sum(point_s.values()) + writes, gflops, memory_mib, point_s)
