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
@click.option(
    "--templates",
    "bank_path",
    type=click.Path(dir_okay=True),
    default=None,
    help="Template bank whose geometry and sizes to measure (default: the bank shipped with wave-deploy).",
)
@click.option(
    "--img-size", type=click.IntRange(1, 4096), default=None, help="Measure at this image size instead."
)
@click.option(
    "--patch-size", type=click.IntRange(1, 4096), default=None, help="Measure at this patch size instead."
)
@click.option(
    "--in-chans", type=click.IntRange(1, 64), default=None, help="Measure with this many input channels."
)
@click.option(
    "--max-depth",
    type=click.IntRange(1, 64),
    default=None,
    help="Deepest size to cover (default: the bank's).",
)
@click.option(
    "--max-embed-dim",
    type=click.IntRange(1, 8192),
    default=None,
    help="Widest size to cover (default: the bank's).",
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
def calibrate(
    profile_name,
    runtime,
    out,
    bank_path,
    img_size,
    patch_size,
    in_chans,
    max_depth,
    max_embed_dim,
    quick,
    threads,
    clock,
    as_json,
):
    """Measure a designed sample of ViT sizes (depth x width x batch) with the local runtime, fit the
    calibrated latency model, and write the calibration file (with the machine it was made on).

    \b
    Which geometry is measured:
      - the template bank's (--templates BANK, default the shipped bank): its image size, patch size,
        channels, MLP ratio and head size, over the depths and widths `plan` searches with that bank
        (1..its max depth, its width steps up to its max width);
      - --img-size / --patch-size / --in-chans replace the bank's image size, patch size or channels (e.g.
        --img-size 224 --patch-size 16 --in-chans 3 for 224 px RGB budgets, without a bank of that geometry);
        --max-depth / --max-embed-dim widen or narrow the covered sizes.
    The file records the geometry and the covered depth, width and batch ranges; `plan` flags predictions
    outside them. At more than 64 tokens per image batches 1 and 2 are measured (plus the profile's
    latency batch), else 1, 2, 4, 8.

    Use it with `wave-deploy plan --calibration FILE`, or set latency_model.kind: calibrated and
    calibration_file: FILE (relative to the profile) in the profile. Takes several minutes at 28 px, longer
    at 224 px (--quick: a small design, a smoke check).
    """
    from wave_deploy.cli.output import console, print_json
    from wave_deploy.fileio import check_writable_file
    from wave_deploy.planning.calibrate import calibrate as run_calibration
    from wave_deploy.planning.calibrate import calibration_space, default_calibration_path
    from wave_deploy.planning.selection import SearchSpace
    from wave_deploy.profiles import load_profile
    from wave_deploy.wave.bank_file import default_bank_path, inspect_bank

    profile = load_profile(profile_name)
    space = calibration_space(
        SearchSpace.from_bank(inspect_bank(bank_path or default_bank_path()).geometry),
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        max_depth=max_depth,
        max_width=max_embed_dim,
    )
    check_writable_file(out or default_calibration_path(profile), "--out")  # before measuring: exit 3
    result = run_calibration(
        profile, runtime=RUNTIMES[runtime], out=out, space=space, quick=quick, threads=threads, clock=clock
    )
    data = result.data
    summary = {
        "path": result.path,
        "profile": data["profile"],
        "runtime": data["runtime"],
        "machine": data["machine"],
        "geometry": data["geometry"],
        "covered": data["covered"],
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
    g, cov = data["geometry"], data["covered"]
    con.print(
        f"  geometry {g['img_size']} px, patch {g['patch_size']}, {g['in_chans']} channel(s); covered depth "
        f"{cov['depth']['lo']}..{cov['depth']['hi']}, width {cov['embed_dim']['lo']}..{cov['embed_dim']['hi']},"
        f" batch {cov['batch']['lo']}..{cov['batch']['hi']}"
    )
    con.print(
        f"  fit: MAPE {fit['mape_pct']:.2f}%, max {fit['max_abs_pct']:.1f}%, "
        f"{100 * fit['within_10pct']:.0f}% within 10%"
    )
    con.print(f"  use it: wave-deploy plan --profile {profile.name} --calibration {result.path}")
