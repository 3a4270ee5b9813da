"""``wave-deploy export``: folded checkpoint -> ONNX (parity-gated), precision variants, engine or bundle."""

from __future__ import annotations

from pathlib import Path

import click

from wave_deploy.cli.options import exporter_option, json_option, opset_option, seed_option
from wave_deploy.cli.output import console, is_quiet, print_json


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--profile", "profile_name", required=True, help="Device profile: name, alias or YAML path.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output directory (model.onnx, variants, export.json, engine/ or bundle/).")  # fmt: skip
@opset_option()
@exporter_option()
@click.option(
    "--slim", is_flag=True, help="Slim the graph with onnxslim (optional extra); outputs are re-checked."
)
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="ImageFolder tree (the build's data): its validation split judges the fp16/int8 variants "
                   "and 256 of its training images calibrate int8. Default: built-in MNIST-5k.")  # fmt: skip
@seed_option("Seed of the reference inputs, the data split and the calibration sample.")
@click.option("--no-engine", is_flag=True, help="Never build a TensorRT engine here; write a bundle instead.")
@json_option("Print one JSON summary on stdout.")
def export(
    checkpoint: Path, profile_name: str, out_dir: Path, opset: int, exporter: str, slim: bool,
    data_path: str | None, seed: int, no_engine: bool, as_json: bool,
) -> None:  # fmt: skip
    """Export a folded CHECKPOINT for a device profile: model.safetensors from `build` or `init`'s output.

    Writes OUT/model.onnx (checked against PyTorch in ONNX Runtime: fp32 max abs error <= 1e-4, else exit 7)
    and the fp16 and int8 variants, each judged by its top-1 drop against ONNX fp32 on the --data validation
    split (runtime.max_accuracy_drop_points, default 1); a variant that fails goes to OUT/rejected/ and
    export.json says by how much. TensorRT targets also get the build plan and a local engine (GPU and
    TensorRT present, profile not built on the device) or OUT/bundle/; ONNX Runtime targets get OUT/bundle/.
    Exit codes: 3 missing/invalid checkpoint, profile or data, 4 missing dependency, 7 fp32 parity failure
    or the profile's own precision failed its accuracy gate (export.json is written first).
    """
    from wave_deploy.errors import InvalidInputError
    from wave_deploy.fileio import check_writable_dir, remove_stale_parts
    from wave_deploy.profiles import load_profile

    if checkpoint.is_dir():
        raise InvalidInputError(f"checkpoint {checkpoint} is a directory, expected a .safetensors file")
    if not checkpoint.is_file():
        raise InvalidInputError(f"checkpoint {checkpoint} does not exist")
    check_writable_dir(out_dir, "--out")  # before the export: exit 3 naming the path
    remove_stale_parts(out_dir)  # temporary files of a killed earlier run
    profile = load_profile(profile_name)
    from wave_deploy.errors import ParityError
    from wave_deploy.exporters.base import export_for_profile, inputs_from_data
    from wave_deploy.training.folding import load_folded_file

    model, spec, _extra = load_folded_file(checkpoint)
    inputs = inputs_from_data(data_path, spec, seed)
    summary = export_for_profile(
        model, spec, profile, out_dir, opset=opset, exporter=exporter, slim=slim, seed=seed,
        build_engine=not no_engine, **inputs,
    )  # fmt: skip
    if as_json:
        print_json(summary)
    elif not is_quiet():
        _print_summary(summary)
    if not summary["onnx"]["chosen_passed"]:
        chosen = next(v for v in summary["onnx"]["variants"] if v["chosen"])
        raise ParityError(f"the profile's precision failed its accuracy gate: {chosen['failure']}",
                          hint=f"export.json is written; the file is in {out_dir / 'rejected'}")  # fmt: skip


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
