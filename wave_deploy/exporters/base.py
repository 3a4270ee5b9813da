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
from typing import Any, Protocol

import numpy as np
import torch

from wave_deploy import data as datasets
from wave_deploy._kit.kit_accuracy import stratified_indices
from wave_deploy.errors import InvalidInputError, ParityError, UsageError
from wave_deploy.fileio import check_writable_dir, remove_stale_parts, write_json
from wave_deploy.options import ExportOptions
from wave_deploy.profiles import DeviceProfile, load_profile
from wave_deploy.spec import ViTSpec
from wave_deploy.target import Target
from wave_deploy.training.folding import load_folded_file

log = logging.getLogger(__name__)

EXPORT_SCHEMA_VERSION = 1
N_VALIDATION = 64  # seeded images used for variant checks when no validation data is given
MAX_VALIDATION = 1000  # validation images the variants are judged on (stratified by class: kit_accuracy)
N_CALIBRATION = 256  # training images, drawn with the seed, that calibrate static int8

# Each exporter's stage logic lives beside the code it drives; the registry names them lazily, so this module
# imports none of them (and none of them imports anything that imports this module back, except its types).
REGISTRY = {
    "onnx": "wave_deploy.exporters.onnx_stage:OnnxExporter",
    "tensorrt": "wave_deploy.exporters.tensorrt_stage:TensorRTExporter",
    "onnxruntime": "wave_deploy.exporters.bundle:OnnxRuntimeKitExporter",
}


@dataclass
class ExportContext:
    model: Any  # timm VisionTransformer, eval mode, fp32
    spec: ViTSpec
    profile: DeviceProfile
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
    # The same validation images as uint8 pixels and the (mean, std) that normalise them: the bundle stores
    # its labelled subset as uint8 (validation_pixels[i] is validation[i] before normalisation).
    validation_pixels: np.ndarray | None = None
    normalization: tuple | None = None  # (mean, std) per channel, 0..1 scale
    device_val_images: int | None = None  # the bundle's labelled subset size (None: bundle.DEVICE_VAL_IMAGES)

    @property
    def fp32_onnx(self) -> Path:
        """model.onnx, once the onnx exporter has written it (the later exporters build on it)."""
        if self.onnx_path is None:
            raise RuntimeError("the onnx exporter must run before this one")
        return self.onnx_path


class Exporter(Protocol):
    name: str

    def export(self, ctx: ExportContext) -> dict: ...


def get_exporter(name: str) -> Exporter:
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown exporter {name!r}; known: {', '.join(REGISTRY)}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)()


def inputs_from_data(data_path: str | None, spec: ViTSpec, seed: int = 0) -> dict:
    """export_for_profile's data arguments from an ImageFolder (``export --data``), or from the built-in data
    when it fits the model; {} (seeded random images, no accuracy) when no data was given and it does not."""
    if data_path is None:
        data = datasets.load(None, seed=seed)
    else:
        data = datasets.load(data_path, seed=seed, img_size=spec.img_size, in_chans=spec.in_chans)
    shape, wanted = tuple(data.train_x.shape[1:]), (spec.in_chans, spec.img_size, spec.img_size)
    if shape != wanted and data_path is not None:
        raise InvalidInputError(f"{data_path} gives {shape} images but the checkpoint's model takes {wanted}")
    if shape != wanted:
        log.warning(
            "the built-in data %s does not fit this model %s: int8 is calibrated on random images and no "
            "accuracy is measured; pass --data",
            shape,
            wanted,
        )
        return {}
    return data_inputs(data, seed=seed)


def data_inputs(data, seed: int = 0) -> dict:
    """export_for_profile's validation (at most MAX_VALIDATION images, stratified by class), its labels, uint8
    pixels and normalisation, and the calibration images, from a data.Dataset."""

    idx = torch.as_tensor(stratified_indices(data.val_labels.tolist(), MAX_VALIDATION), dtype=torch.long)
    val_x, val_y = data.val_x[idx], data.val_labels[idx]
    generator = torch.Generator().manual_seed(seed)
    n = min(N_CALIBRATION, len(data.train_x))
    picked = torch.randperm(len(data.train_x), generator=generator)[:n].sort().values
    return {
        "validation": val_x.numpy(),
        "validation_labels": val_y.numpy(),
        "validation_pixels": data.val_images[idx].numpy(),
        "normalization": (tuple(data.info.mean), tuple(data.info.std)),
        "calibration": data.train_x[picked].numpy(),
    }


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
    validation_pixels: np.ndarray | None = None,
    normalization: tuple | None = None,
    device_val_images: int | None = None,
) -> dict:
    """Run the exporters for ``profile`` into ``out_dir``; write and return the export.json summary.

    ``validation_pixels`` and ``normalization`` (uint8 pixels of ``validation`` and their (mean, std)) let
    the bundle store its labelled subset of ``device_val_images`` images as uint8."""
    out_dir = Path(out_dir)
    if _may_write_bundle(profile, build_engine):  # exit 3 before anything is written
        from wave_deploy.calibration.bundle import check_design_memory  # it imports the exporters back

        check_design_memory(spec, profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExportContext(
        model=model.eval(), spec=spec, profile=profile, out_dir=out_dir, opset=opset, exporter=exporter,
        slim=slim, seed=seed, build_engine=build_engine, validation=validation,
        validation_labels=validation_labels, calibration=calibration, validation_pixels=validation_pixels,
        normalization=normalization, device_val_images=device_val_images,
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


def _may_write_bundle(profile, build_engine: bool) -> bool:
    """Whether the export can end in an on-device bundle (with its calibration design): every ONNX Runtime
    profile, and a TensorRT one whose engine is not built here (the profile builds on the device, or local
    builds are off). Where a local engine may be built, that is known only later (``tensorrt_status``), and
    ``bundle_design`` checks the design's memory itself."""
    target = Target.of(profile)
    return not target.tensorrt or profile.software.engine_built_on_device or not build_engine


def export_checkpoint(
    checkpoint: str | Path, profile: str | Path, out: str | Path, options: ExportOptions
) -> dict:
    """``wave-deploy export`` and ``wave_deploy.export``: a folded checkpoint (from ``build`` or ``init``) for a
    profile, its variants judged and int8 calibrated on ``options.data``; returns the export.json summary.

    Bad input (a missing checkpoint, profile or data, an unwritable ``out``) raises before anything is written.
    The profile's own precision failing its gate is not raised here: ``precision_gate(summary)`` says so,
    after export.json is written, so that callers can show the summary first.
    """

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        raise InvalidInputError(f"checkpoint {checkpoint} is a directory, expected a .safetensors file")
    if not checkpoint.is_file():
        raise InvalidInputError(f"checkpoint {checkpoint} does not exist")
    check_writable_dir(out, "--out")  # before the export: exit 3 naming the path
    remove_stale_parts(out)  # temporary files of a killed earlier run
    loaded = load_profile(str(profile))
    model, spec, _extra = load_folded_file(checkpoint)
    return export_for_profile(
        model, spec, loaded, out, opset=options.opset, exporter=options.exporter, slim=options.slim,
        seed=options.seed, build_engine=options.build_engine, device_val_images=options.device_val_images,
        **inputs_from_data(options.data, spec, options.seed),
    )  # fmt: skip


def precision_gate(summary: dict[str, Any]) -> ParityError | None:
    """The exit-7 error when the variant of the profile's own precision failed its accuracy gate, else None
    (export, build and the API judge an export.json summary by this one function)."""
    onnx = summary.get("onnx") or {}
    if onnx.get("chosen_passed", True):
        return None
    chosen: dict[str, Any] = next((v for v in onnx.get("variants", []) if v.get("chosen")), {})
    why = chosen.get("failure") or "failed its accuracy gate"
    return ParityError(
        f"the {onnx.get('chosen_precision')} model that {summary.get('profile')} runs failed its accuracy gate: "
        f"{why}",
        hint="export.json is written; the model was moved to rejected/ (change the precision or the tolerance)",
    )
