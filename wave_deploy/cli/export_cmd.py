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
@seed_option("Seed of the reference inputs.")
@click.option("--no-engine", is_flag=True, help="Never build a TensorRT engine here; write a bundle instead.")
@json_option("Print one JSON summary on stdout.")
def export(
    checkpoint: Path, profile_name: str, out_dir: Path, opset: int, exporter: str, slim: bool, seed: int,
    no_engine: bool, as_json: bool,
) -> None:  # fmt: skip
    """Export a folded CHECKPOINT (.safetensors from `fold`) for a device profile.

    Writes OUT/model.onnx (checked against PyTorch in ONNX Runtime: fp32 max abs error <= 1e-4, else exit 7),
    the fp16 or int8 variant the profile's precision asks for (each checked against its stated tolerance,
    top-1 agreement recorded), and for TensorRT targets the build plan plus either a local engine (GPU and
    TensorRT present, profile not built on the device) or OUT/bundle/ with the on-device kit.
    Exit codes: 3 missing/invalid checkpoint or profile, 4 missing dependency, 7 parity failure.
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
    from wave_deploy.exporters.base import export_for_profile
    from wave_deploy.folding import load_folded_file

    model, spec, _extra = load_folded_file(checkpoint)
    summary = export_for_profile(
        model, spec, profile, out_dir, opset=opset, exporter=exporter, slim=slim, seed=seed,
        build_engine=not no_engine,
    )  # fmt: skip
    if as_json:
        print_json(summary)
        return
    if is_quiet():
        return
    out = console()
    onnx = summary["onnx"]
    parity = onnx["parity"]
    out.print(f"{onnx['model']['path']}  ({onnx['model']['exporter']}, opset {onnx['model']['opset']}, "
              f"{onnx['model']['size_bytes']:,} bytes)", markup=False)  # fmt: skip
    out.print(
        f"parity fp32: max abs error {parity['max_abs_err']:.2e} <= {parity['limit']:.0e}  PASS", markup=False
    )
    for v in onnx["variants"]:
        out.print(f"{v['precision']} ({v['method']}): {v['path']}  max abs error {v['max_abs_err']:.2e}, "
                  f"top-1 agreement {v['top1_agreement']:.3f} on {v['n_validation']} inputs", markup=False)  # fmt: skip
    trt = summary["tensorrt"]
    if not trt["target"]:
        out.print(trt["reason"], markup=False)
    elif "engine" in trt:
        out.print(f"TensorRT engine: {trt['engine']['path']}", markup=False)
    else:
        out.print(f"on-device bundle: {trt['bundle']} ({trt['bundle_reason']})", markup=False)
        out.print("copy the bundle to the device and run, inside it: python3 run_on_device.py", markup=False)
