"""The exporter interface, its lazy registry, and ``export_for_profile`` (the export stage of a build).

An exporter turns what earlier exporters produced (kept in an ``ExportContext``) into files in the output
directory and returns a JSON-able section for export.json. Order matters: "onnx" first (export, parity gate,
fp16 and int8 variants judged by accuracy), then "tensorrt" (build plan; a local engine where a GPU and
TensorRT are present and the profile does not require an on-device build; otherwise an on-device bundle),
then "onnxruntime" (the on-device bundle of ONNX Runtime profiles).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from wave_deploy.errors import ParityError, UsageError
from wave_deploy.fileio import REJECTED_DIR, reject_file, sha256_file, write_json

log = logging.getLogger(__name__)

EXPORT_SCHEMA_VERSION = 1
N_VALIDATION = 64  # seeded images used for variant checks when no validation data is given
MAX_VALIDATION = 1000  # validation images the variants are judged on (the first ones of the split)
N_CALIBRATION = 256  # training images, drawn with the seed, that calibrate static int8

REGISTRY = {
    "onnx": "wave_deploy.exporters.base:OnnxExporter",
    "tensorrt": "wave_deploy.exporters.base:TensorRTExporter",
    "onnxruntime": "wave_deploy.exporters.base:OnnxRuntimeKitExporter",
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
    validation_labels: np.ndarray | None = None  # (N,) their class indices: accuracy is measured with them
    calibration: np.ndarray | None = None  # (N, C, H, W) training images that calibrate static int8
    # Filled in by the exporters:
    onnx: dict | None = None
    onnx_path: Path | None = None
    reference_inputs: dict = field(default_factory=dict)  # batch -> (B, C, H, W) float32
    reference_outputs: dict = field(default_factory=dict)  # batch -> (B, num_classes) float32
    variant_paths: dict = field(default_factory=dict)  # passed variants: "fp16" | "int8" | "int8_qdq" -> Path
    chosen_passed: bool = True  # False: the profile's own precision failed its accuracy gate
    validation_used: tuple | None = (
        None  # (images, labels or None, ONNX fp32 logits) the variants were judged on
    )


class Exporter(Protocol):
    name: str

    def export(self, ctx: ExportContext) -> dict: ...


def get_exporter(name: str) -> Exporter:
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown exporter {name!r}; known: {', '.join(REGISTRY)}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)()


def _images(ctx: ExportContext) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The images variants are judged on: (images, labels or None, where they came from)."""
    from wave_deploy.exporters import onnx as ox

    spec = ctx.spec
    expected = (spec.in_chans, spec.img_size, spec.img_size)
    if ctx.validation is None:
        if ctx.validation_labels is not None:
            raise UsageError("validation labels were given without validation images")
        images = ox.seeded_inputs(spec, N_VALIDATION, seed=ctx.seed + 10_000)
        return images, None, f"{N_VALIDATION} seeded random images (no validation data given)"
    images = np.asarray(ctx.validation, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != expected or len(images) < 2:
        raise UsageError(f"validation images must be (N >= 2, {expected}), got {images.shape}")
    if ctx.validation_labels is None:
        return images, None, "given validation data (unlabelled)"
    labels = np.asarray(ctx.validation_labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise UsageError(f"{len(images)} validation images but {len(labels)} labels")
    return images, labels, "given validation data"


def _calibration(ctx: ExportContext, images: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    spec = ctx.spec
    if ctx.calibration is None:
        return images, f"the validation images ({source})"
    calib = np.asarray(ctx.calibration, dtype=np.float32)
    expected = (spec.in_chans, spec.img_size, spec.img_size)
    if calib.ndim != 4 or calib.shape[1:] != expected or len(calib) < 1:
        raise UsageError(f"calibration images must be (N >= 1, {expected}), got {calib.shape}")
    return calib, f"{len(calib)} given training images"


def _torch_logits(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    from wave_deploy.exporters.onnx import torch_outputs

    return np.concatenate([torch_outputs(model, images[i : i + batch]) for i in range(0, len(images), batch)])


def data_inputs(data, seed: int = 0) -> dict:
    """export_for_profile's validation / validation_labels / calibration arguments from a data.Dataset."""
    import torch

    val_x, val_y = data.val_x[:MAX_VALIDATION], data.val_labels[:MAX_VALIDATION]
    generator = torch.Generator().manual_seed(seed)
    n = min(N_CALIBRATION, len(data.train_x))
    picked = torch.randperm(len(data.train_x), generator=generator)[:n].sort().values
    return {
        "validation": val_x.numpy(),
        "validation_labels": val_y.numpy(),
        "calibration": data.train_x[picked].numpy(),
    }


class OnnxExporter:
    """model.onnx with the fp32 parity gate, then the fp16 and int8 variants, each judged by accuracy.

    Both variants are made and measured for every profile (so every build reports fp32, fp16 and int8
    top-1); ``chosen`` marks the profile's precision. A variant that fails its gate is moved to rejected/
    and recorded; the exporter does not raise for it. The fp32 parity gate raises ParityError after moving
    model.onnx to rejected/.
    """

    name = "onnx"

    def export(self, ctx: ExportContext) -> dict:
        from wave_deploy.exporters import onnx as ox
        from wave_deploy.exporters import quantize as qz

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
        try:
            parity = ox.check_parity(path, ctx.model, list(ctx.reference_inputs.values()))
        except ParityError as exc:
            reject_file(path, f"fp32 parity gate: {exc}")
            raise
        images, labels, source = _images(ctx)
        calibration, calibration_source = _calibration(ctx, images, source)
        fp32_logits = qz.ort_logits(path, images)
        accuracy = None
        if labels is not None:
            accuracy = {
                "split": "validation",
                "n_images": len(labels),
                "torch_fp32_top1": qz.top1(_torch_logits(ctx.model, images), labels),
                "onnx_fp32_top1": qz.top1(fp32_logits, labels),
            }
        ctx.validation_used = (images, labels, fp32_logits)
        section = {
            "model": result.to_dict(),
            "parity": parity.to_dict(),
            "accuracy": accuracy,
            "validation_source": source,
            "calibration_source": calibration_source,
            "chosen_precision": rt.precision,
            "chosen_passed": True,
            "variants": [],
        }
        for precision in ("fp16", "int8"):
            record = self._variant(ctx, precision, calibration, images, labels, fp32_logits)
            section["variants"].append(record)
            if record["chosen"] and not record["passed"]:
                section["chosen_passed"] = ctx.chosen_passed = False
        return section

    @staticmethod
    def _variant(ctx, precision, calibration, images, labels, fp32_logits) -> dict:
        from wave_deploy.exporters import quantize as qz

        rt = ctx.profile.runtime
        tensorrt = ctx.profile.software.runtime == "tensorrt"
        if precision == "fp16":
            key, name, method, settings = "fp16", "model.fp16.onnx", "float16-cast-io", None
        elif rt.int8_method == "dynamic":
            key, name, method, settings = "int8", "model.int8.onnx", "dynamic", None
        else:
            key, name, method = ("int8_qdq", "model.int8.qdq.onnx", "static-qdq") if tensorrt else (
                "int8", "model.int8.onnx", "static-qdq")  # fmt: skip
        path = ctx.out_dir / name
        for stale in (ctx.out_dir / REJECTED_DIR / name, ctx.out_dir / REJECTED_DIR / f"{name}.why.txt"):
            stale.unlink(missing_ok=True)
        if precision == "fp16":
            qz.make_fp16(ctx.onnx_path, path)
        elif method == "dynamic":
            settings = qz.make_int8_dynamic(ctx.onnx_path, path)
        else:
            settings = qz.make_int8_static(
                ctx.onnx_path, path, calibration, target="tensorrt" if tensorrt else "onnxruntime"
            )
        record = qz.judge_variant(
            path, qz.ort_logits(path, images), fp32_logits, labels, precision=precision, method=method,
            max_drop_points=rt.max_accuracy_drop_points,
        )  # fmt: skip
        record.update(
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            tolerance={"max_drop_points": float(rt.max_accuracy_drop_points)},
            n_validation=record["n_images"],
            settings=settings,
            chosen=precision == rt.precision,
        )
        if record["passed"]:
            ctx.variant_paths[key] = path
            record.update(file=name, rejected_to=None, path=str(path))
        else:
            moved = reject_file(path, f"{precision} accuracy gate: {record['failure']}")
            record.update(file=None, rejected_to=f"{REJECTED_DIR}/{name}", path=str(moved))
            log.warning("rejected %s: %s", name, record["failure"])
        return record


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
        if onnx_for_engine is None:  # the variant failed its accuracy gate: no engine, no bundle
            why = f"the {plan.precision} ONNX variant failed its accuracy gate (export.json onnx.variants)"
            return {
                "target": True,
                "plan": plan.to_dict(),
                "trtexec": None,
                "bundle": None,
                "bundle_reason": why,
            }
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
            variants=variants, validation=ctx.validation_used,
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
        if bad and plan.precision != "int8":  # int8 engines are judged by accuracy, not logits
            c = bad[0]
            raise ParityError(
                f"TensorRT {plan.precision} engine differs from PyTorch: max abs error {c['max_abs_err']:.3g} "
                f"> {c['limit']:.3g} at batch {c['batch']}"
            )
        return {"path": str(engine_path), "meta": meta, "parity": checks}


class OnnxRuntimeKitExporter:
    """ONNX Runtime profiles: bundle/ with the profile's model file, references, a labelled subset and the kit."""

    name = "onnxruntime"

    def export(self, ctx: ExportContext) -> dict:
        from wave_deploy.exporters.bundle import write_bundle

        profile = ctx.profile
        if profile.software.runtime != "onnxruntime":
            return {
                "target": False,
                "reason": f"not an ONNX Runtime target (runtime {profile.software.runtime})",
            }
        precision = profile.runtime.precision
        if not ctx.chosen_passed:
            why = f"the {precision} ONNX variant failed its accuracy gate (export.json onnx.variants)"
            return {"target": True, "bundle": None, "bundle_reason": why}
        variants = {"int8": ctx.variant_paths["int8"]} if precision == "int8" else {}
        if precision == "fp16":
            variants = {"fp16": ctx.variant_paths["fp16"]}
        bundle = write_bundle(
            ctx.out_dir / "bundle", ctx.onnx_path, None, ctx.reference_inputs, ctx.reference_outputs, profile,
            variants=variants, validation=ctx.validation_used,
        )  # fmt: skip
        log.info("wrote on-device bundle %s (ONNX Runtime)", bundle)
        return {"target": True, "bundle": str(bundle), "bundle_reason": "ONNX Runtime on-device kit"}


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
    validation_labels: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
) -> dict:
    """Run the exporters for ``profile`` into ``out_dir``; write and return the export.json summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExportContext(
        model=model.eval(), spec=spec, profile=profile, out_dir=out_dir, opset=opset, exporter=exporter,
        slim=slim, seed=seed, build_engine=build_engine, validation=validation,
        validation_labels=validation_labels, calibration=calibration,
    )  # fmt: skip
    summary = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "profile": profile.name,
        "spec": spec.to_dict(),
        "seed": seed,
    }
    for name in ("onnx", "tensorrt", "onnxruntime"):
        summary[name] = get_exporter(name).export(ctx)
    write_json(out_dir / "export.json", summary)
    return summary
