"""ONNX export of a timm VisionTransformer, and its fp32 parity gate (DESIGN section 6).

The exporter (dynamo or legacy TorchScript) and the opset are explicit and recorded; the file is one
self-contained ``.onnx`` (no external-data sidecar); the batch axis is dynamic; ``onnx.checker`` runs with
``full_check``. Opset >= 17 keeps each LayerNorm a single ``LayerNormalization`` node. The parity gate runs
the file in ONNX Runtime against the PyTorch model on seeded inputs and raises ``ParityError`` (exit 7).

The fp16 and int8 variants, and the accuracy gate that judges them, live in ``quantize.py``.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from wave_deploy.errors import InvalidInputError, MissingDependencyError, ParityError, UsageError
from wave_deploy.fileio import atomic_path, sha256_file
from wave_deploy.spec import ViTSpec

log = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization appeared in opset 17
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "legacy")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class Tolerance:
    """Pass when max |onnx - torch| <= atol + rtol * max |torch|."""

    atol: float
    rtol: float = 0.0

    def limit(self, reference: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.max(np.abs(reference)))


# Max-abs tolerances against fp32 PyTorch. fp32 gates the export (ParityError). fp16 gates a TensorRT
# engine built locally and the on-device kit's fp16 run. Quantized models are judged by accuracy instead
# (quantize.judge_variant); the int8 line is what the kit and a local engine report for them, not a gate.
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),
    "int8": Tolerance(atol=5e-2, rtol=5e-2),
}


@dataclass(frozen=True)
class OnnxExportResult:
    path: str
    opset: int
    exporter: str
    torch_version: str
    onnx_version: str
    input_name: str
    input_shape: list  # ["batch", C, H, W] when the batch axis is dynamic
    output_name: str
    output_shape: list  # ["batch", num_classes]
    batch_min: int
    batch_max: int
    sha256: str
    size_bytes: int
    layernorm_nodes: int
    slimmed: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParityReport:
    precision: str
    max_abs_err: float
    limit: float
    batches: list  # [{"batch": B, "max_abs_err": e, "limit": l}]
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _dim(d) -> int | str:
    return d.dim_param if d.dim_param else int(d.dim_value)


def onnx_io(path: str | Path) -> dict:
    """Names and shapes of the first graph input and output: {"input_name", "input_shape", ...}."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inp, out = model.graph.input[0], model.graph.output[0]
    return {
        "input_name": inp.name,
        "input_shape": [_dim(d) for d in inp.type.tensor_type.shape.dim],
        "output_name": out.name,
        "output_shape": [_dim(d) for d in out.type.tensor_type.shape.dim],
    }


def _export_graph(
    model, x, path: Path, *, opset: int, exporter: str, batch_min: int, batch_max: int, dynamic: bool
):

    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]  # they log every pass at INFO
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter; the checker and parity gate decide
            if exporter == "dynamo":
                shapes = (
                    {"x": {0: torch.export.Dim("batch", min=batch_min, max=batch_max)}} if dynamic else None
                )
                torch.onnx.export(
                    model, (x,), str(path), dynamo=True, opset_version=opset, external_data=False,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes, verbose=False,
                )  # fmt: skip
            else:
                axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
                torch.onnx.export(
                    model, (x,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                )  # fmt: skip
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def export_onnx(
    model,
    spec: ViTSpec,
    out_path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    batch_min: int = 1,
    batch_max: int = 8,
    dynamic_batch: bool = True,
    slim: bool = False,
) -> OnnxExportResult:
    """Export ``model`` (a timm VisionTransformer built from ``spec``) to one self-contained ONNX file."""
    import onnx

    if opset < MIN_OPSET:
        raise UsageError(f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    if exporter not in EXPORTERS:
        raise UsageError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if not 1 <= batch_min <= batch_max:
        raise UsageError(f"need 1 <= batch_min <= batch_max, got {batch_min}/{batch_max}")
    out_path = Path(out_path)
    model = model.eval().float().cpu()
    dynamic = dynamic_batch and batch_max > 1
    example_batch = min(max(2, batch_min), batch_max) if dynamic else batch_max
    # (B, C, H, W) example input; values do not matter for export, shapes do.
    x = torch.zeros(example_batch, spec.in_chans, spec.img_size, spec.img_size)
    with atomic_path(out_path) as tmp:
        raw = tmp.with_name(tmp.name + ".raw.onnx")
        try:
            _export_graph(model, x, raw, opset=opset, exporter=exporter, batch_min=batch_min,
                          batch_max=batch_max, dynamic=dynamic)  # fmt: skip
            if raw.with_name(raw.name + ".data").exists():
                raise InvalidInputError("the exporter wrote an external-data sidecar; expected one file")
            proto = onnx.load(str(raw))
        finally:
            raw.unlink(missing_ok=True)
            raw.with_name(raw.name + ".data").unlink(missing_ok=True)
        if slim:
            proto = _slim(proto, model, spec, batch_min)
        _strip_local_metadata(proto)
        for key, value in (("wave_deploy.spec", json.dumps(spec.to_dict(), sort_keys=True)),
                           ("wave_deploy.exporter", exporter)):  # fmt: skip
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
    io = onnx_io(out_path)
    result = OnnxExportResult(
        path=str(out_path),
        opset=opset,
        exporter=exporter,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        batch_min=batch_min,
        batch_max=batch_max,
        sha256=sha256_file(out_path),
        size_bytes=out_path.stat().st_size,
        layernorm_nodes=sum(n.op_type == "LayerNormalization" for n in proto.graph.node),
        slimmed=slim,
        **io,
    )
    log.info("exported %s (%s, opset %d, %d bytes)", out_path, exporter, opset, result.size_bytes)
    return result


def _strip_local_metadata(proto) -> None:
    """Drop exporter provenance (per-node stack traces with this machine's file paths, FX node dumps).

    The shipped file then depends only on the model, exporter and opset, not on where torch is installed.
    """
    del proto.metadata_props[:]
    for item in [*proto.graph.node, *proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
        if hasattr(item, "metadata_props"):
            del item.metadata_props[:]


def _slim(proto, model, spec: ViTSpec, batch: int):
    """Graph slimming with onnxslim (optional extra); refuses a slimmed graph that changes the outputs."""
    try:
        import onnxslim
    except ImportError as exc:
        raise MissingDependencyError(
            "slimming needs the onnxslim package", hint="pip install 'wave-deploy[slim]' or drop --slim"
        ) from exc
    slimmed = onnxslim.slim(proto)
    x = seeded_inputs(spec, batch, seed=1234)
    before, after = _ort_run(proto.SerializeToString(), x), _ort_run(slimmed.SerializeToString(), x)
    err = float(np.max(np.abs(before - after)))
    if err > 1e-6:
        raise ParityError(f"onnxslim changed the model's outputs (max abs error {err:.3g} > 1e-6)")
    return slimmed


def _ort_session(model: str | Path | bytes, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _ort_run(model: str | Path | bytes, inputs: np.ndarray) -> np.ndarray:
    session = _ort_session(model)
    return session.run(None, {session.get_inputs()[0].name: inputs.astype(np.float32)})[0]


def seeded_inputs(spec: ViTSpec, batch: int, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 images (B, C, H, W), identical for the same seed."""
    shape = (batch, spec.in_chans, spec.img_size, spec.img_size)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_outputs(model, inputs: np.ndarray) -> np.ndarray:
    """fp32 PyTorch outputs (the reference every runtime is compared with)."""

    model = model.eval().float().cpu()
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()


def check_parity(
    onnx_path: str | Path,
    model,
    inputs: list[np.ndarray],
    tol: Tolerance | float = TOLERANCES["fp32"],
    *,
    precision: str = "fp32",
) -> ParityReport:
    """Run ``onnx_path`` in ONNX Runtime (CPU) and ``model`` in PyTorch on each input batch; raise on mismatch."""
    if isinstance(tol, (int, float)):
        tol = Tolerance(atol=float(tol))
    if not inputs:
        raise UsageError("check_parity needs at least one input batch")
    session = _ort_session(onnx_path)
    name = session.get_inputs()[0].name
    batches = []
    for x in inputs:
        ref = torch_outputs(model, x)
        got = session.run(None, {name: x.astype(np.float32)})[0]
        if got.shape != ref.shape:
            raise ParityError(
                f"{onnx_path}: output shape {got.shape} != PyTorch {ref.shape} at batch {len(x)}"
            )
        err = float(np.max(np.abs(got.astype(np.float64) - ref)))
        batches.append({"batch": len(x), "max_abs_err": err, "limit": tol.limit(ref)})
    worst = max(batches, key=lambda b: b["max_abs_err"] - b["limit"])
    report = ParityReport(
        precision=precision,
        max_abs_err=max(b["max_abs_err"] for b in batches),
        limit=worst["limit"],
        batches=batches,
        passed=all(b["max_abs_err"] <= b["limit"] for b in batches),
    )
    if not report.passed:
        raise ParityError(
            f"{precision} ONNX {onnx_path} differs from PyTorch: max abs error {worst['max_abs_err']:.3g} "
            f"> {worst['limit']:.3g} at batch {worst['batch']}"
        )
    log.info("parity %s: max abs error %.3g (limit %.3g)", precision, report.max_abs_err, report.limit)
    return report
