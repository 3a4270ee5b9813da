"""The on-device bundle: everything a device needs to build, check and benchmark the model by itself.

bundle/
  model.onnx            fp32 ONNX, plus the profile's precision variant when it is not fp32
                        (model.fp16.onnx, model.int8.qdq.onnx for TensorRT, model.int8.onnx for ONNX Runtime)
  plan.json             models and their sha256, tolerances, reference batches, the labelled subset's
                        expected top-1, the build plan and trtexec lines (TensorRT), null otherwise
  reference.npz         seeded inputs and fp32 PyTorch outputs per batch (inputs_b{B}, outputs_b{B})
  validation.npz        labelled validation images (images, labels), stratified by class, uint8 with the
                        normalisation in plan.json (bundle_validation.py), when the build had labelled data
  calibration.zip       the latency calibration design at the model's geometry and deployed precision: one
                        ONNX graph per design model without its weights (the kit writes them from seeded
                        random values) and index.json (wave_deploy.calibration.graphs); plan.json's
                        ``calibration`` records its sha256
  run_on_device.py      the kit (copied from the installed package wave_deploy._kit)
  kit_common.py, kit_stats.py, kit_accuracy.py, kit_memory.py, trt_device.py, kit_calibrate.py, kit_design.py
  README.md             the one command to run (and the exact trtexec line for TensorRT)
"""

from __future__ import annotations

import io
import json
import logging
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from wave_deploy.calibration.bundle import bundle_design
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.exporters.base import ExportContext
from wave_deploy.exporters.bundle_validation import validation_input, write_validation
from wave_deploy.exporters.onnx import TOLERANCES, onnx_io
from wave_deploy.exporters.tensorrt import BuildPlan, trtexec_command
from wave_deploy.fileio import sha256_file, write_bytes, write_json, write_text
from wave_deploy.profiles import DeviceProfile
from wave_deploy.spec import ViTSpec
from wave_deploy.target import VARIANT_FILES, Target

log = logging.getLogger(__name__)

BUNDLE_SCHEMA_VERSION = 1
KIT_FILES = ("run_on_device.py", "kit_common.py", "kit_stats.py", "trt_device.py", "kit_accuracy.py",
             "kit_memory.py", "kit_calibrate.py", "kit_design.py")  # fmt: skip
DESIGN_FILE = "calibration.zip"


def kit_source(name: str) -> bytes:
    """A kit file from the installed package (``export/`` in the repository)."""
    return resources.files("wave_deploy._kit").joinpath(name).read_bytes()


def _readme(
    profile: DeviceProfile, plan: BuildPlan | None, trtexec_line: str | None, tolerances: dict
) -> str:
    lines = [
        f"# wave-deploy bundle for {profile.name}",
        "",
        profile.description or "",
        "",
        "Copy this directory to the device and run, inside it:",
        "",
        "```sh",
        "python3 run_on_device.py" + ("" if plan else " --runtime onnxruntime"),
        "```",
        "",
        "It needs Python 3 with numpy, and TensorRT (trtexec) or onnxruntime. It checks the model files'",
        "sha256 against plan.json, builds the engine (TensorRT), checks the outputs on reference.npz against",
        "PyTorch's, measures top-1 on validation.npz (ONNX Runtime) and peak memory, benchmarks, and writes",
        "device_report.json. Exit codes: 0 ok, 3 invalid bundle (or a model file that does not match its",
        "sha256), 4 missing runtime or GPU, 6 build failed, 7 parity or accuracy gate failed.",
        "`python3 run_on_device.py --runtime onnxruntime` checks the bundle with ONNX Runtime on any machine.",
        "",
        "To calibrate the latency model on this device (it prints its time estimate first):",
        "",
        "```sh",
        "python3 run_on_device.py --calibrate --out samples.json",
        "```",
        "",
        (
            f"then, on the build machine: `wave-deploy calibrate --profile {profile.name} --from-device "
            "samples.json --out CAL.json` and `wave-deploy plan --calibration CAL.json`."
        ),
        "",
    ]
    if plan is not None:
        power = profile.hardware.power_mode
        if power is not None:
            lines += [
                f"Set the power mode first: nvpmodel mode {power.nvpmodel_mode}"
                + (", then `sudo jetson_clocks`." if power.jetson_clocks else "."),
                "",
            ]
        lines += [
            f"TensorRT {plan.tensorrt_version} ({plan.path} path, {plan.precision}). The exact trtexec line:",
            "",
            "```sh",
            trtexec_line or "",
            "```",
            "",
        ]
        lines += [f"- {note}" for note in plan.notes]
    tol = ", ".join(f"{k}: atol {v['atol']:g} + rtol {v['rtol']:g} x max|ref|" for k, v in tolerances.items())
    lines += ["", f"Parity tolerances (max abs error vs PyTorch fp32): {tol}.", ""]
    return "\n".join(lines)


def write_bundle(
    out_dir: str | Path,
    onnx_path: str | Path,
    plan: BuildPlan | None,
    reference_inputs: dict[int, np.ndarray],
    reference_outputs: dict[int, np.ndarray],
    profile,
    *,
    variants: dict[str, str | Path] | None = None,
    tolerances: dict[str, dict] | None = None,
    validation: tuple | None = None,
) -> Path:
    """Write the bundle directory; ``reference_*`` map batch size -> array. Returns ``out_dir``.

    ``plan`` is None for ONNX Runtime profiles. ``validation`` is (images, labels or None, logits[, uint8
    pixels, (mean, std), subset size]) (``bundle_validation.validation_input``): with labels, a stratified
    subset goes to validation.npz and plan.json records the top-1 this machine measured on it.
    """

    out_dir = Path(out_dir)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InvalidInputError(f"ONNX model {onnx_path} does not exist")
    if not reference_inputs or sorted(reference_inputs) != sorted(reference_outputs):
        raise UsageError("reference inputs and outputs must cover the same, non-empty set of batch sizes")
    io_meta = onnx_io(onnx_path)
    models = {"fp32": VARIANT_FILES["fp32"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / VARIANT_FILES["fp32"], onnx_path.read_bytes())
    for key, path in (variants or {}).items():
        if key not in VARIANT_FILES:
            raise UsageError(f"unknown model variant {key!r}; expected one of {', '.join(VARIANT_FILES)}")
        models[key] = VARIANT_FILES[key]
        write_bytes(out_dir / VARIANT_FILES[key], Path(path).read_bytes())
    if plan is not None and plan.onnx_variant not in models:
        raise UsageError(f"the build plan needs the {plan.onnx_variant} ONNX variant; pass it in variants")
    tolerances = tolerances or {k: {"atol": t.atol, "rtol": t.rtol} for k, t in TOLERANCES.items()}
    # The kit looks files up by precision name: "int8" is the target's int8 variant (TensorRT: the Q/DQ file).
    int8 = Target.of(profile).int8_variant
    if int8.key in models:
        models.setdefault(int8.precision, models[int8.key])

    arrays: dict[str, Any] = {}
    for batch in sorted(reference_inputs):
        arrays[f"inputs_b{batch}"] = np.ascontiguousarray(reference_inputs[batch], dtype=np.float32)
        arrays[f"outputs_b{batch}"] = np.ascontiguousarray(reference_outputs[batch], dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(out_dir / "reference.npz", buffer.getvalue())

    subset = write_validation(out_dir, validation, models, profile.runtime.max_accuracy_drop_points)
    design = _write_design(out_dir, onnx_path, profile)

    build_line = bench_line = None
    if plan is not None:
        onnx_file = models[plan.onnx_variant]
        build_line = trtexec_command(plan, onnx_file, "model.engine", benchmark=False)
        bench_line = trtexec_command(plan, onnx_file, "model.engine", benchmark=True)
    manifest = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "profile": profile.name,
        "device": profile.hardware.device_name,
        "runtime": profile.software.runtime,
        "precision": profile.runtime.precision,
        "input_name": io_meta["input_name"],
        "output_name": io_meta["output_name"],
        "sample_shape": [int(d) for d in io_meta["input_shape"][1:]],
        "models": models,
        "sha256": {name: sha256_file(out_dir / name) for name in sorted(set(models.values()))},
        "tolerances": tolerances,
        "reference_batches": sorted(int(b) for b in reference_inputs),
        "bench_batch": profile.budgets.latency_batch,
        "build_plan": plan.to_dict() if plan is not None else None,
        "trtexec_build": build_line,
        "trtexec_bench": bench_line,
        "validation": subset,
        "calibration": design,
    }
    write_json(out_dir / "plan.json", manifest)
    for name in KIT_FILES:
        write_bytes(out_dir / name, kit_source(name))
    (out_dir / "run_on_device.py").chmod(0o755)
    line = shlex.join(bench_line) if bench_line else None
    write_text(out_dir / "README.md", _readme(profile, plan, line, tolerances))
    return out_dir


def _write_design(out_dir: Path, onnx_path: Path, profile: DeviceProfile) -> dict:
    """calibration.zip for the model's geometry (its spec, exporter and opset, read from the ONNX file)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "wave_deploy.spec" not in meta:
        raise InvalidInputError(f"{onnx_path} was not exported by wave-deploy (no wave_deploy.spec metadata)")
    spec = ViTSpec.from_dict(json.loads(meta["wave_deploy.spec"]))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    exporter = meta.get("wave_deploy.exporter", "dynamo")
    return bundle_design(out_dir / DESIGN_FILE, spec, profile, exporter=exporter, opset=opset)


class OnnxRuntimeKitExporter:
    """ONNX Runtime profiles: bundle/ with the profile's model file, references, a labelled subset and the kit."""

    name = "onnxruntime"

    def export(self, ctx: ExportContext) -> dict:
        profile = ctx.profile
        if profile.software.runtime != "onnxruntime":
            return {
                "target": False,
                "reason": f"not an ONNX Runtime target (runtime {profile.software.runtime})",
            }
        deployed = Target.of(profile).deployed
        if not ctx.chosen_passed:
            why = (
                f"the {deployed.precision} ONNX variant failed its accuracy gate (export.json onnx.variants)"
            )
            return {"target": True, "bundle": None, "bundle_reason": why}
        variants = {} if deployed.key == "fp32" else {deployed.key: ctx.variant_paths[deployed.key]}
        bundle = write_bundle(
            ctx.out_dir / "bundle", ctx.fp32_onnx, None, ctx.reference_inputs, ctx.reference_outputs, profile,
            variants=variants, validation=validation_input(ctx),
        )  # fmt: skip
        log.info("wrote on-device bundle %s (ONNX Runtime)", bundle)
        return {"target": True, "bundle": str(bundle), "bundle_reason": "ONNX Runtime on-device kit"}
