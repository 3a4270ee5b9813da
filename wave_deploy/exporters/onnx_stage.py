"""The "onnx" stage of an export: model.onnx behind the fp32 parity gate, then the fp16 and int8 variants,
each judged by its top-1 on the validation split (exporters.onnx exports and checks; exporters.quantize makes
and judges the variants)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from wave_deploy.errors import ParityError, UsageError
from wave_deploy.exporters import onnx as ox
from wave_deploy.exporters import quantize as qz
from wave_deploy.exporters.base import N_VALIDATION, ExportContext
from wave_deploy.fileio import REJECTED_DIR, reject_file, sha256_file
from wave_deploy.target import Target, Variant

log = logging.getLogger(__name__)


def _images(ctx: ExportContext) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The images variants are judged on: (images, labels or None, where they came from)."""
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
    return np.concatenate(
        [ox.torch_outputs(model, images[i : i + batch]) for i in range(0, len(images), batch)]
    )


class OnnxExporter:
    """model.onnx with the fp32 parity gate, then the fp16 and int8 variants, each judged by accuracy.

    Both variants are made and measured for every profile (so every build reports fp32, fp16 and int8
    top-1); ``chosen`` marks the profile's precision. A variant that fails its gate is moved to rejected/
    and recorded; the exporter does not raise for it. The fp32 parity gate raises ParityError after moving
    model.onnx to rejected/.
    """

    name = "onnx"

    def export(self, ctx: ExportContext) -> dict:
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
        section: dict[str, Any] = {
            "model": result.to_dict(),
            "parity": parity.to_dict(),
            "accuracy": accuracy,
            "validation_source": source,
            "calibration_source": calibration_source,
            "chosen_precision": rt.precision,
            "chosen_passed": True,
            "variants": [],
        }
        for variant in Target.of(ctx.profile).variants:
            record = self._variant(ctx, variant, calibration, images, labels, fp32_logits)
            section["variants"].append(record)
            if record["chosen"] and not record["passed"]:
                section["chosen_passed"] = ctx.chosen_passed = False
        return section

    @staticmethod
    def _variant(ctx, variant: Variant, calibration, images, labels, fp32_logits) -> dict:
        rt = ctx.profile.runtime
        precision, name = variant.precision, variant.file
        path = ctx.out_dir / name
        for stale in (ctx.out_dir / REJECTED_DIR / name, ctx.out_dir / REJECTED_DIR / f"{name}.why.txt"):
            stale.unlink(missing_ok=True)
        settings = qz.make_variant(variant, ctx.fp32_onnx, path, calibration)
        record = qz.judge_variant(
            path, qz.ort_logits(path, images), fp32_logits, labels, precision=precision,
            method=variant.method, max_drop_points=rt.max_accuracy_drop_points,
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
            ctx.variant_paths[variant.key] = path
            record.update(file=name, rejected_to=None, path=str(path))
        else:
            moved = reject_file(path, f"{precision} accuracy gate: {record['failure']}")
            record.update(file=None, rejected_to=f"{REJECTED_DIR}/{name}", path=str(moved))
            log.warning("rejected %s: %s", name, record["failure"])
        return record
