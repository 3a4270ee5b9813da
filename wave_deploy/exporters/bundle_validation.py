"""The on-device bundle's labelled subset (validation.npz) and what the build machine measured on it.

The subset is drawn from the images the export judged its variants on, stratified by class (round-robin,
``kit_accuracy.stratified_indices``: deterministic, every class before any class twice), DEVICE_VAL_IMAGES of
them by default (``--device-val-images``) and at most VALIDATION_MAX_BYTES in all. Pixels are stored as uint8
with the normalisation to apply recorded in plan.json, so a 224 px RGB subset of 500 images is 73.5 MiB (as
float32 it would be 4x that). The kit and this machine both normalise with ``kit_accuracy.normalize_uint8``,
so they see the same float inputs; plan.json records this machine's top-1 and per-image predictions per model
file, and the kit's device gate compares the device's predictions with them image by image
(``kit_accuracy.judge_drop``). Without the uint8 pixels (an API caller passing only float images) the subset
is stored as float32.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from wave_deploy._kit.kit_accuracy import (
    CONFIDENCE,
    MIN_IMAGES,
    normalize_uint8,
    stratified_indices,
)
from wave_deploy.exporters.quantize import ort_logits
from wave_deploy.fileio import write_bytes
from wave_deploy.options import DEFAULT_DEVICE_VAL_IMAGES
from wave_deploy.target import VARIANT_FILES

log = logging.getLogger(__name__)

VALIDATION_FILE = "validation.npz"
DEVICE_VAL_IMAGES = DEFAULT_DEVICE_VAL_IMAGES  # labelled images the kit measures the device's top-1 on
VALIDATION_MAX_BYTES = 96 << 20  # fewer images when more would be larger (224 px RGB uint8: 684 images)


def validation_input(ctx: Any) -> tuple | None:
    """What the exporters hand ``write_bundle``: (float images, labels or None, ONNX fp32 logits, uint8 pixels
    or None, (mean, std) or None, subset size or None), from an ExportContext."""
    if ctx.validation_used is None:
        return None
    return (*ctx.validation_used[:3], ctx.validation_pixels, ctx.normalization, ctx.device_val_images)


def write_validation(
    out_dir: Path, validation: tuple | None, models: dict, max_drop_points: float
) -> dict | None:
    """validation.npz and what this machine measured on it; the dict is plan.json's ``validation``."""
    (out_dir / VALIDATION_FILE).unlink(missing_ok=True)
    if validation is None or validation[1] is None:
        return None
    images, labels = np.asarray(validation[0], dtype=np.float32), np.asarray(validation[1], dtype=np.int64)
    extra = tuple(validation[3:6]) + (None,) * (6 - len(validation))
    pixels, normalization, wanted = extra[0], extra[1], extra[2]
    wanted = DEVICE_VAL_IMAGES if wanted is None else int(wanted)
    uint8 = pixels is not None and normalization is not None and len(pixels) == len(images)
    per_image = images[0].size * (1 if uint8 else 4)
    n = min(wanted, len(images), max(1, VALIDATION_MAX_BYTES // per_image))
    if wanted <= 0:
        return None
    if n < min(wanted, len(images)):
        log.warning("the bundle's labelled subset holds %d images, not %d: at most %d MiB", n, wanted,
                    VALIDATION_MAX_BYTES >> 20)  # fmt: skip
    idx = np.asarray(stratified_indices(labels.tolist(), n), dtype=np.int64)
    labels = labels[idx]
    if uint8:
        stored = np.ascontiguousarray(np.asarray(pixels)[idx], dtype=np.uint8)
        mean, std = (list(map(float, v)) for v in normalization)
        inputs = normalize_uint8(stored, mean, std)
        norm: dict | None = {"mean": mean, "std": std, "scale": 255.0, "formula": "(x / scale - mean) / std"}
    else:
        stored = inputs = np.ascontiguousarray(images[idx])
        norm = None
    buffer = io.BytesIO()
    np.savez(buffer, images=stored, labels=labels)
    write_bytes(out_dir / VALIDATION_FILE, buffer.getvalue())
    top1, predictions = {}, {}
    for name in sorted(set(models.values())):
        pred = np.argmax(ort_logits(out_dir / name, inputs), axis=1)
        top1[name] = float(np.mean(pred == labels))
        predictions[name] = [int(p) for p in pred]
    classes, counts = np.unique(labels, return_counts=True)
    return {
        "file": VALIDATION_FILE,
        "n_images": int(n),
        "dtype": "uint8" if uint8 else "float32",
        "normalization": norm,  # null: the images are model inputs already (float32)
        "per_class": {str(int(c)): int(k) for c, k in zip(classes, counts)},
        "top1": top1,  # ONNX Runtime (CPU) on the build machine, per model file
        "predictions": predictions,  # its top-1 class per image, per model file (the device gate pairs them)
        "onnx_fp32_top1": top1[VARIANT_FILES["fp32"]],
        "max_drop_points": float(max_drop_points),
        "min_images": MIN_IMAGES,
        "confidence": CONFIDENCE,
    }
