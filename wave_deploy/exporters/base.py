"""The exporter interface, its lazy registry, and ``export_for_profile`` (the export stage of a build).

An exporter turns what earlier exporters produced (kept in an ``ExportContext``) into files in the output
directory and returns a JSON-able section for export.json. Order matters: "onnx" first (export, parity gate,
precision variants), then "tensorrt" (build plan; a local engine where a GPU and TensorRT are present and the
profile does not require an on-device build; otherwise an on-device bundle).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from wave_deploy.errors import ParityError, UsageError
from wave_deploy.fileio import write_json

log = logging.getLogger(__name__)

EXPORT_SCHEMA_VERSION = 1
N_VALIDATION = 64  # seeded images used for variant checks when no validation data is given

REGISTRY = {
    "onnx": "wave_deploy.exporters.base:OnnxExporter",
    "tensorrt": "wave_deploy.exporters.base:TensorRTExporter",
}


@dataclass
class ExportContext:
    model: object  # timm VisionTransformer, eval mode, fp32
    spec: object  # ViTSpec
    profile: object  # DeviceProfile
    out_dir: Path
    opset: int = 18
    exporter: str = "dynamo"
    slim: bool = False
    seed: int = 0
    build_engine: bool = True  # False: never build locally, always write a bundle for TensorRT targets
    validation: np.ndarray | None = None  # (N, C, H, W) real validation images, if the caller has them
    # Filled in by the exporters:
    onnx: dict | None = None
    onnx_path: Path | None = None
    reference_inputs: dict = field(default_factory=dict)  # batch -> (B, C, H, W) float32
    reference_outputs: dict = field(default_factory=dict)  # batch -> (B, num_classes) float32
    variant_paths: dict = field(default_factory=dict)  # "fp16" | "int8_qdq" | "int8_dynamic" -> Path


class Exporter(Protocol):
    name: str

    def export(self, ctx: ExportContext) -> dict: ...


def get_exporter(name: str) -> Exporter:
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown exporter {name!r}; known: {', '.join(REGISTRY)}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)()


class OnnxExporter:
    """model.onnx with the fp32 parity gate, plus the fp16 / int8 variant the profile's precision asks for."""

    name = "onnx"

    def export(self, ctx: ExportContext) -> dict:
        from wave_deploy.exporters import onnx as ox

        rt, spec = ctx.profile.runtime, ctx.spec
        path = ctx.out_dir / "model.onnx"
        result = ox.export_onnx(
            ctx.model, spec, path, opset=ctx.opset, exporter=ctx.exporter,
            batch_min=rt.batch_min, batch_max=rt.batch_max, slim=ctx.slim,
        )  # fmt: skip
        ctx.onnx, ctx.onnx_path = result.to_dict(), path
        for batch in sorted({rt.batch_min, rt.batch_max}):
            x = ox.seeded_inputs(spec, batch, seed=ctx.seed + batch)
            ctx.reference_inputs[batch] = x
            ctx.reference_outputs[batch] = ox.torch_outputs(ctx.model, x)
        parity = ox.check_parity(path, ctx.model, list(ctx.reference_inputs.values()))
        section = {"model": result.to_dict(), "parity": parity.to_dict(), "variants": []}
        precision = rt.precision
        if precision == "fp32":
            return section
        if ctx.validation is not None:
            validation, source = np.asarray(ctx.validation, dtype=np.float32), "given validation data"
            expected = (spec.in_chans, spec.img_size, spec.img_size)
            if validation.ndim != 4 or validation.shape[1:] != expected or len(validation) < 2:
                raise UsageError(f"validation images must be (N >= 2, {expected}), got {validation.shape}")
        else:
            validation = ox.seeded_inputs(spec, N_VALIDATION, seed=ctx.seed + 10_000)
            source = f"{N_VALIDATION} seeded random images (no validation data given)"
        section["validation_source"] = source
        if precision == "fp16":
            fp16 = ox.make_fp16(path, ctx.out_dir / "model.fp16.onnx")
            ctx.variant_paths["fp16"] = fp16
            section["variants"].append(
                ox.evaluate_variant(
                    fp16, ctx.model, validation, precision="fp16", method="float16-cast-io"
                ).to_dict()
            )
        else:  # int8: Q/DQ (static) for TensorRT, dynamic for CPU runtimes
            qdq = ctx.profile.software.runtime == "tensorrt"
            name = "model.int8.qdq.onnx" if qdq else "model.int8.onnx"
            half = max(1, len(validation) // 2)
            # Calibrate on the first half; measure on all of it (the second half was never seen).
            calibration = [validation[i : min(i + 8, half)] for i in range(0, half, 8)]
            int8 = ox.make_int8(
                path, ctx.out_dir / name, method="qdq" if qdq else "dynamic", calibration=calibration
            )
            ctx.variant_paths["int8_qdq" if qdq else "int8_dynamic"] = int8
            section["variants"].append(
                ox.evaluate_variant(
                    int8, ctx.model, validation, precision="int8", method="qdq" if qdq else "dynamic"
                ).to_dict()
            )
        return section


class TensorRTExporter:
    """Build plan + trtexec line; a local engine or an on-device bundle. CPU profiles: nothing to do."""

    name = "tensorrt"

    def export(self, ctx: ExportContext) -> dict:
        from wave_deploy.exporters import tensorrt as trt_x
        from wave_deploy.exporters.bundle import MODEL_FILES, write_bundle
        from wave_deploy.exporters.onnx import TOLERANCES, onnx_io

        profile = ctx.profile
        if not trt_x.is_tensorrt_target(profile):
            return {"target": False, "reason": f"not a TensorRT target (runtime {profile.software.runtime})"}
        plan = trt_x.make_build_plan(profile, onnx_io(ctx.onnx_path))
        write_json(ctx.out_dir / "tensorrt_plan.json", plan.to_dict())
        sources = {"fp32": ctx.onnx_path, **ctx.variant_paths}
        onnx_for_engine = sources.get(plan.onnx_variant)
        if onnx_for_engine is None:
            raise UsageError(f"the plan needs the {plan.onnx_variant} ONNX variant, which was not produced")
        section = {
            "target": True,
            "plan": plan.to_dict(),
            "trtexec": trt_x.trtexec_command(plan, onnx_for_engine, ctx.out_dir / "engine" / "model.engine"),
        }
        if plan.engine_built_on_device:
            why = "the profile requires the engine to be built on the device"
        elif not ctx.build_engine:
            why = "local engine build disabled"
        else:
            usable, detail = trt_x.tensorrt_status()
            why = None if usable else f"no local engine: {detail}"
        if why is None:
            section["engine"] = self._build_and_check(ctx, plan, onnx_for_engine, TOLERANCES[plan.precision])
            return section
        variants = {k: v for k, v in ctx.variant_paths.items() if k == plan.onnx_variant and k in MODEL_FILES}
        bundle = write_bundle(
            ctx.out_dir / "bundle", ctx.onnx_path, plan, ctx.reference_inputs, ctx.reference_outputs, profile,
            variants=variants,
        )  # fmt: skip
        section.update(bundle=str(bundle), bundle_reason=why)
        log.info("wrote on-device bundle %s (%s)", bundle, why)
        return section

    @staticmethod
    def _build_and_check(ctx: ExportContext, plan, onnx_path: Path, tol) -> dict:
        from wave_deploy.bench.runners import TensorRTRunner
        from wave_deploy.exporters.tensorrt import build_engine

        engine_path = ctx.out_dir / "engine" / "model.engine"
        meta = build_engine(plan, onnx_path, engine_path)
        runner = TensorRTRunner(engine_path)
        checks = []
        for batch, x in ctx.reference_inputs.items():
            ref = ctx.reference_outputs[batch]
            err = float(np.max(np.abs(runner.run(x).astype(np.float64) - ref)))
            checks.append({"batch": batch, "max_abs_err": err, "limit": tol.limit(ref)})
        bad = [c for c in checks if c["max_abs_err"] > c["limit"]]
        if bad:
            c = bad[0]
            raise ParityError(
                f"TensorRT {plan.precision} engine differs from PyTorch: max abs error {c['max_abs_err']:.3g} "
                f"> {c['limit']:.3g} at batch {c['batch']}"
            )
        return {"path": str(engine_path), "meta": meta, "parity": checks}


def export_for_profile(
    model,
    spec,
    profile,
    out_dir: str | Path,
    *,
    opset: int = 18,
    exporter: str = "dynamo",
    slim: bool = False,
    seed: int = 0,
    build_engine: bool = True,
    validation: np.ndarray | None = None,
) -> dict:
    """Run the exporters for ``profile`` into ``out_dir``; write and return the export.json summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExportContext(
        model=model.eval(), spec=spec, profile=profile, out_dir=out_dir, opset=opset, exporter=exporter,
        slim=slim, seed=seed, build_engine=build_engine, validation=validation,
    )  # fmt: skip
    summary = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "profile": profile.name,
        "spec": spec.to_dict(),
        "seed": seed,
    }
    for name in ("onnx", "tensorrt"):
        summary[name] = get_exporter(name).export(ctx)
    write_json(out_dir / "export.json", summary)
    return summary
