"""A bundle's calibration design (``calibration.zip``): the sizes it covers at the model's geometry and the
weightless graphs the on-device kit times (``run_on_device.py --calibrate``), written at export time."""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

from wave_deploy.calibration.cost import check_export_memory, point_memory_mib
from wave_deploy.calibration.design import TIMING, bundle_points, bundle_space_at
from wave_deploy.calibration.graphs import design_graphs, write_design
from wave_deploy.exporters.onnx import INPUT_NAME
from wave_deploy.fileio import sha256_file
from wave_deploy.spec import ViTSpec
from wave_deploy.target import Target

log = logging.getLogger(__name__)


def bundle_space(spec: ViTSpec):
    """The sizes a bundle's design covers at its model's geometry (image size, patch, channels, classes, head
    size, MLP ratio): depths up to 12, widths up to 384 (the shipped bank's range) stretched to include the
    model itself: the multiples of the head size whose MLP width is a multiple of gcd(head size, the model's
    MLP width), which the model's own width always is."""
    geometry = {
        k: getattr(spec, k) for k in ("img_size", "patch_size", "in_chans", "num_classes", "mlp_ratio")
    }
    return bundle_space_at({**geometry, "head_dim": spec.head_dim}, w=math.gcd(spec.head_dim, spec.mlp_hidden),
                           depth=spec.depth, embed_dim=spec.embed_dim)  # fmt: skip


def check_design_memory(spec: ViTSpec, profile) -> float:
    """The memory estimate (MiB) of exporting the design a bundle for ``spec`` and ``profile`` ships
    (``cost.check_export_memory``): InvalidInputError (exit 3) when this machine lacks it. Shapes only; the
    export checks it before it writes anything, and ``bundle_design`` again before it exports."""
    points = bundle_points(bundle_space(spec), profile, quick=False)
    return check_export_memory(list(dict.fromkeys(s for s, _ in points)))


def bundle_design(path: Path, spec: ViTSpec, profile, *, exporter: str, opset: int) -> dict:
    """Write a bundle's calibration.zip for ``spec``'s geometry and ``profile``'s deployed precision (TensorRT:
    the ONNX file its engine is built from); returns plan.json's ``calibration`` record. A design whose export
    needs more memory than this machine has is refused first (``cost.check_export_memory``, exit 3)."""
    target = Target.of(profile)
    variant = target.engine_source if target.tensorrt else target.deployed
    space = bundle_space(spec)
    points = bundle_points(space, profile, quick=False)
    quick = bundle_points(space, profile, quick=True)
    batches = sorted({b for _, b in points})
    per_model: dict[ViTSpec, list[int]] = {}
    for s, b in points:
        per_model.setdefault(s, []).append(b)
    check_export_memory(list(per_model))  # exit 3 before anything is exported (as check_design_memory)
    with tempfile.TemporaryDirectory(prefix="wave-deploy-design-") as tmp:
        graphs = design_graphs(list(per_model), variant, workdir=Path(tmp), exporter=exporter, opset=opset,
                               batch_max=max(batches))  # fmt: skip
    w, a = target.weight_dtype, target.activation_dtype
    memory = {s: point_memory_mib(s, max(b), w, a, target.runtime) for s, b in per_model.items()}
    geometry = {
        k: getattr(space, k) for k in ("img_size", "patch_size", "in_chans", "num_classes", "mlp_ratio")
    }
    index = {
        "schema_version": 1,
        "profile": profile.name,
        "runtime": target.runtime,
        "precision": target.precision,
        "variant": variant.key,
        "exporter": exporter,
        "opset": opset,
        "geometry": {**geometry, "head_dim": space.head_dim},
        "input_name": INPUT_NAME,
        "sample_shape": [spec.in_chans, spec.img_size, spec.img_size],
        "timing": TIMING,
        "quick": [[s.depth, s.embed_dim, b] for s, b in quick],
    }
    write_design(path, graphs, index, per_model, memory)
    log.info("wrote %s: %d design models, %d bytes", path, len(graphs), path.stat().st_size)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "models": len(graphs),
        "points": len(points),
        "quick_points": len(quick),
        "variant": variant.key,
    }
