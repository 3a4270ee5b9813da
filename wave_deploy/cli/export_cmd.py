"""``wave-deploy export``: folded checkpoint -> ONNX (parity-gated), precision variants, engine or bundle."""

from __future__ import annotations

import click

from wave_deploy.cli.options import json_option, model_options
from wave_deploy.cli.output import console, is_quiet, print_json
from wave_deploy.options import ExportOptions, parse


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option("--profile", "profile_name", required=True, help="Device profile: name, alias or YAML path.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), required=True,
              help="Output directory (model.onnx, variants, export.json, engine/ or bundle/).")  # fmt: skip
@model_options(ExportOptions)
@json_option("Print one JSON summary on stdout.")
def export(checkpoint: str, profile_name: str, out_dir: str, as_json: bool, **fields) -> None:
    """Export a folded CHECKPOINT for a device profile: model.safetensors from `build` or `init`'s output.

    Writes OUT/model.onnx (checked against PyTorch in ONNX Runtime: fp32 max abs error <= 1e-4, else exit 7)
    and the fp16 and int8 variants, each judged by its top-1 drop against ONNX fp32 on the --data validation
    split (runtime.max_accuracy_drop_points, default 1); a variant that fails goes to OUT/rejected/ and
    export.json says by how much. TensorRT targets also get the build plan and a local engine (GPU and
    TensorRT present, profile not built on the device) or OUT/bundle/; ONNX Runtime targets get OUT/bundle/.
    Exit codes: 3 missing/invalid checkpoint, profile or data, 4 missing dependency, 7 fp32 parity failure
    or the profile's own precision failed its accuracy gate (export.json is written first).
    """
    from wave_deploy.exporters.base import export_checkpoint, precision_gate

    options = parse(ExportOptions, fields, "export")
    summary = export_checkpoint(checkpoint, profile_name, out_dir, options)
    if as_json:
        print_json(summary)
    elif not is_quiet():
        _print_summary(summary)
    gate = precision_gate(summary)
    if gate is not None:
        raise gate


def _print_summary(summary: dict) -> None:
    out = console()
    onnx = summary["onnx"]
    parity = onnx["parity"]
    out.print(f"{onnx['model']['path']}  ({onnx['model']['exporter']}, opset {onnx['model']['opset']}, "
              f"{onnx['model']['size_bytes']:,} bytes)", markup=False)  # fmt: skip
    out.print(
        f"parity fp32: max abs error {parity['max_abs_err']:.2e} <= {parity['limit']:.0e}  PASS", markup=False
    )
    acc = onnx.get("accuracy")
    if acc:
        out.print(f"top-1 on {acc['n_images']} validation images: PyTorch fp32 {acc['torch_fp32_top1']:.2%}, "
                  f"ONNX fp32 {acc['onnx_fp32_top1']:.2%}", markup=False)  # fmt: skip
    for v in onnx["variants"]:
        top1 = (
            f"top-1 {v['top1']:.2%} ({-v['top1_drop_points']:+.2f} points), " if v["top1"] is not None else ""
        )
        verdict = "PASS" if v["passed"] else f"FAIL, moved to {v['rejected_to']}: {v['failure']}"
        out.print(f"{v['precision']} ({v['method']}){' [profile precision]' if v['chosen'] else ''}: {top1}"
                  f"agreement {v['top1_agreement']:.3f} on {v['n_images']} images  {verdict}", markup=False)  # fmt: skip
    for section in (summary["tensorrt"], summary["onnxruntime"]):
        if section.get("engine"):
            out.print(f"TensorRT engine: {section['engine']['path']}", markup=False)
        elif section.get("bundle"):
            out.print(f"on-device bundle: {section['bundle']} ({section['bundle_reason']})", markup=False)
            out.print(
                "copy the bundle to the device and run, inside it: python3 run_on_device.py", markup=False
            )
        elif section["target"]:
            out.print(f"no bundle: {section['bundle_reason']}", markup=False)
