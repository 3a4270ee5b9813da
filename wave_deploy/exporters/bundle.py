"""The on-device bundle: everything a device needs to build, check and benchmark the model by itself.

bundle/
  model.onnx            fp32 ONNX (plus model.fp16.onnx / model.int8.qdq.onnx when the plan builds from one)
  plan.json             build plan, tolerances, reference batches, the trtexec lines
  reference.npz         seeded inputs and fp32 PyTorch outputs per batch (inputs_b{B}, outputs_b{B})
  run_on_device.py      the kit (copied from the installed package wave_deploy._kit)
  kit_common.py, trt_device.py
  README.md             the one command to run, and the exact trtexec line
"""

from __future__ import annotations

import io
import shlex
from importlib import resources
from pathlib import Path

import numpy as np

from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.exporters.tensorrt import BuildPlan, trtexec_command
from wave_deploy.fileio import sha256_file, write_bytes, write_json, write_text

BUNDLE_SCHEMA_VERSION = 1
KIT_FILES = ("run_on_device.py", "kit_common.py", "trt_device.py")
MODEL_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8_qdq": "model.int8.qdq.onnx"}


def kit_source(name: str) -> bytes:
    """A kit file from the installed package (``export/`` in the repository)."""
    return resources.files("wave_deploy._kit").joinpath(name).read_bytes()


def _readme(profile, plan: BuildPlan | None, trtexec_line: str | None, tolerances: dict) -> str:
    lines = [
        f"# wave-deploy bundle for {profile.name}",
        "",
        profile.description,
        "",
        "Copy this directory to the device and run, inside it:",
        "",
        "```sh",
        "python3 run_on_device.py" + ("" if plan else " --runtime onnxruntime"),
        "```",
        "",
        "It needs Python 3 with numpy, and TensorRT (trtexec) or onnxruntime. It builds the engine (TensorRT),",
        "checks the outputs on reference.npz against PyTorch's, benchmarks, and writes device_report.json.",
        "Exit codes: 0 ok, 3 invalid bundle, 4 missing runtime or GPU, 6 build failed, 7 parity failed.",
        "`python3 run_on_device.py --runtime onnxruntime` checks the bundle with ONNX Runtime on any machine.",
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
            trtexec_line,
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
) -> Path:
    """Write the bundle directory; ``reference_*`` map batch size -> array. Returns ``out_dir``."""
    from wave_deploy.exporters.onnx import TOLERANCES, onnx_io

    out_dir = Path(out_dir)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InvalidInputError(f"ONNX model {onnx_path} does not exist")
    if not reference_inputs or sorted(reference_inputs) != sorted(reference_outputs):
        raise UsageError("reference inputs and outputs must cover the same, non-empty set of batch sizes")
    io_meta = onnx_io(onnx_path)
    models = {"fp32": MODEL_FILES["fp32"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / MODEL_FILES["fp32"], onnx_path.read_bytes())
    for key, path in (variants or {}).items():
        if key not in MODEL_FILES:
            raise UsageError(f"unknown model variant {key!r}; expected one of {', '.join(MODEL_FILES)}")
        models[key] = MODEL_FILES[key]
        write_bytes(out_dir / MODEL_FILES[key], Path(path).read_bytes())
    if plan is not None and plan.onnx_variant not in models:
        raise UsageError(f"the build plan needs the {plan.onnx_variant} ONNX variant; pass it in variants")
    tolerances = tolerances or {k: {"atol": t.atol, "rtol": t.rtol} for k, t in TOLERANCES.items()}
    # Precision "int8" runs from the Q/DQ file on TensorRT; the kit looks files up by precision name.
    if "int8_qdq" in models:
        models.setdefault("int8", models["int8_qdq"])

    arrays = {}
    for batch in sorted(reference_inputs):
        arrays[f"inputs_b{batch}"] = np.ascontiguousarray(reference_inputs[batch], dtype=np.float32)
        arrays[f"outputs_b{batch}"] = np.ascontiguousarray(reference_outputs[batch], dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(out_dir / "reference.npz", buffer.getvalue())

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
    }
    write_json(out_dir / "plan.json", manifest)
    for name in KIT_FILES:
        write_bytes(out_dir / name, kit_source(name))
    (out_dir / "run_on_device.py").chmod(0o755)
    line = shlex.join(bench_line) if bench_line else None
    write_text(out_dir / "README.md", _readme(profile, plan, line, tolerances))
    return out_dir
