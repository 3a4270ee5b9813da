"""`wave-deploy calibrate`: measure ViT shapes on this machine and fit the profile's latency model."""

from __future__ import annotations

import click

from wave_deploy.cli.options import Threads, json_option

RUNTIMES = {"ort": "onnxruntime", "torch": "torch"}


@click.command("calibrate")
@click.option("--profile", "profile_name", required=True, help="Profile name, alias or YAML path.")
@click.option(
    "--runtime",
    type=click.Choice(sorted(RUNTIMES)),
    default="ort",
    show_default=True,
    help="Runtime to measure with: ONNX Runtime (CPU) or PyTorch eager (CPU).",
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Calibration file to write (default: <profile name>.calibration.json beside the profile).",
)
@click.option("--quick", is_flag=True, help="A small design (12 measurements, short timing): a smoke check.")
@click.option(
    "--threads",
    type=Threads,
    default=None,
    help="Intra-op threads (default: the profile's, capped at this machine's cores).",
)
@click.option(
    "--clock",
    type=click.Choice(["wall", "thread"]),
    default="wall",
    show_default=True,
    help="'thread' times one thread's CPU time (needs --threads 1): robust on a shared machine.",
)
@json_option("Print one JSON summary on stdout.")
def calibrate(profile_name, runtime, out, quick, threads, clock, as_json):
    """Measure a designed sample of ViT sizes (depth x width x batch) with the local runtime, fit the
    calibrated latency model, and write the calibration file (with the machine it was made on).

    Use it with `wave-deploy plan --calibration FILE`, or set latency_model.kind: calibrated and
    calibration_file: FILE (relative to the profile) in the profile. Takes several minutes (--quick: under a minute).
    """
    from wave_deploy.calibration import calibrate as run_calibration
    from wave_deploy.calibration import default_calibration_path
    from wave_deploy.cli.output import console, print_json
    from wave_deploy.fileio import check_writable_file
    from wave_deploy.profiles import load_profile

    profile = load_profile(profile_name)
    check_writable_file(out or default_calibration_path(profile), "--out")  # before measuring: exit 3
    result = run_calibration(
        profile, runtime=RUNTIMES[runtime], out=out, quick=quick, threads=threads, clock=clock
    )
    data = result.data
    summary = {
        "path": result.path,
        "profile": data["profile"],
        "runtime": data["runtime"],
        "machine": data["machine"],
        "fit": data["fit"],
        "coefficients_ms": data["model"]["coefficients_ms"],
        "cache_mb": data["model"]["cache_mb"],
        "percentile_factors": data["model"]["percentile_factors"],
    }
    if as_json:
        print_json(summary)
        return
    fit = data["fit"]
    con = console()
    con.print(f"wrote {result.path}")
    con.print(
        f"  {fit['n_samples']} measurements with {data['runtime']['detail']}, {data['runtime']['threads']} "
        f"thread(s), on {data['machine']['cpu']}"
    )
    con.print(
        f"  fit: MAPE {fit['mape_pct']:.2f}%, max {fit['max_abs_pct']:.1f}%, "
        f"{100 * fit['within_10pct']:.0f}% within 10%"
    )
    con.print(f"  use it: wave-deploy plan --profile {profile.name} --calibration {result.path}")
