"""`wave-deploy calibrate`: measure ViT shapes on this machine (or fit a device's samples) into the profile's
latency model."""

from __future__ import annotations

import shlex
import time

import click

from wave_deploy.calibration.cost import kit_design
from wave_deploy.calibration.device_samples import fit_samples
from wave_deploy.cli.options import FiniteFloat, Threads, json_option, option_for, profile_set_option
from wave_deploy.cli.output import console, print_json
from wave_deploy.errors import UsageError
from wave_deploy.fileio import check_writable_file
from wave_deploy.options import BuildOptions, PlanOptions
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.profiles import apply_overrides, load_profile
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank

RUNTIMES = {"ort": "onnxruntime", "torch": "torch"}
PROGRESS_EVERY_S = 10.0
# Options that choose what to measure here; samples from a device were measured already.
MEASURING = ("runtime", "quick", "threads", "clock", "max_depth", "max_embed_dim", "exporter")


@click.command("calibrate")
@click.option("--profile", "profile_name", required=True, help="Profile name, alias or YAML path.")
@profile_set_option
@click.option(
    "--from-device",
    "from_device",
    type=click.Path(dir_okay=False),
    default=None,
    help="Fit the samples the bundle's kit measured on the device (`run_on_device.py --calibrate --out "
    "FILE`) instead of measuring here.",
)
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
    help="Calibration file to write (default: ./<profile name>.calibration.json in the working directory).",
)
@option_for(
    BuildOptions, "templates", dest="bank_path",
    help="Template bank whose geometry, head size, MLP ratio and sizes to measure (default: the bank shipped "
    "with wave-deploy).",
)  # fmt: skip
@option_for(BuildOptions, "img_size", help="Measure at this image size instead.")
@click.option(
    "--patch-size", type=click.IntRange(1, 4096), default=None, help="Measure at this patch size instead."
)
@option_for(PlanOptions, "in_chans", help="Measure with this many input channels.")
@click.option(
    "--head-dim",
    type=click.IntRange(1, 1024),
    default=None,
    help="Channels per attention head of the models to measure (default: the bank's; DeiT: 64). Also the "
    "width step.",
)
@click.option(
    "--mlp-ratio",
    type=FiniteFloat(min=0.25, max=16.0),
    default=None,
    help="MLP hidden width over the width (default: the bank's, 4).",
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
@click.option(
    "--quick", is_flag=True, help="A small design (at least 8 measurements, short timing): a smoke check."
)
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
@option_for(BuildOptions, "exporter", help="ONNX exporter of the measured models (as `build --exporter`).")
@json_option("Print one JSON summary on stdout (progress lines stay on stderr).")
@click.pass_context
def calibrate(ctx, profile_name, overrides, from_device, out, bank_path, as_json, **options):
    """Measure a designed sample of ViT sizes (depth x width x batch) with the local runtime, fit the
    calibrated latency model, and write the calibration file (with the machine it was made on).

    \b
    Which geometry is measured:
      - the template bank's (--templates BANK, default the shipped bank): its image size, patch size,
        channels, MLP ratio and head size, over the depths and widths `plan` searches with that bank
        (1..its max depth, its width steps up to its max width);
      - --img-size / --patch-size / --in-chans / --head-dim / --mlp-ratio replace the bank's (e.g.
        --img-size 224 --patch-size 16 --in-chans 3 --head-dim 64 for DeiT-style 224 px RGB models);
        --max-depth / --max-embed-dim widen or narrow the covered sizes.
    The file records the geometry and the covered depth, width and batch ranges; `plan` flags predictions
    outside them. At more than 64 tokens per image batches 1 and 2 are measured (plus the profile's
    latency batch), else 1, 2, 4, 8. A design that needs more memory than this machine has is refused
    (exit 3) before anything is allocated.

    \b
    Before measuring it prints the design and an estimate of the time it takes on stderr, then a progress
    line every 10 s (also with --json). Takes minutes at 28 px, tens of minutes at 224 px (--quick: a
    small design, a smoke check).

    \b
    On a device: copy the build's bundle/ there, run `python3 run_on_device.py --calibrate --out SAMPLES`
    inside it, bring SAMPLES back, and fit them with --from-device SAMPLES (the file then records the
    device's machine and runtime). A bundle built with --set (e.g. runtime.batch_max=4 or
    budgets.latency_batch=4) ships the design of the profile with those settings: pass the build's --set
    options here too. Use the result with `wave-deploy plan --calibration FILE`, or set
    latency_model.kind: calibrated and calibration_file: FILE (relative to the profile) in the profile.
    """
    from wave_deploy.calibration.calibrate import default_calibration_path

    profile = apply_overrides(load_profile(profile_name), overrides)
    target = out or default_calibration_path(profile)
    if from_device:
        given = [n for n in MEASURING if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]
        if given:
            names = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UsageError(f"--from-device fits samples measured on the device: {names} do not apply")
        check_writable_file(target, "--out")
        result = _from_device(profile, from_device, target, bank_path, options)
    else:
        space = _space(bank_path, options)
        check_writable_file(target, "--out")  # before measuring: exit 3
        result = _measure(profile, space, target, options)
    _report(result, profile, as_json, console, print_json)


def _space(bank_path, options):
    from wave_deploy.calibration.calibrate import calibration_space

    return calibration_space(
        SearchSpace.from_bank(inspect_bank(bank_path or default_bank_path()).geometry),
        img_size=options["img_size"],
        patch_size=options["patch_size"],
        in_chans=options["in_chans"],
        max_depth=options["max_depth"],
        max_width=options["max_embed_dim"],
        head_dim=options["head_dim"],
        mlp_ratio=options["mlp_ratio"],
    )


def _from_device(profile, samples_path, target, bank_path, options):
    """Fit a device's samples; the geometry options given (and a bank given) must match the samples'."""
    from wave_deploy.calibration.calibrate import write_calibration

    expected = {k: options[k] for k in ("img_size", "patch_size", "in_chans", "head_dim", "mlp_ratio")}
    if bank_path:
        space = _space(bank_path, options)
        expected = {k: getattr(space, k) for k in expected}
    return write_calibration(fit_samples(profile, samples_path, expected), target)


def _measure(profile, space, target, options):
    from wave_deploy.calibration import calibrate as cal

    job = cal.prepare(
        profile, runtime=RUNTIMES[options["runtime"]], space=space, quick=options["quick"],
        threads=options["threads"], clock=options["clock"], exporter=options["exporter"],
    )  # fmt: skip
    err = console(stderr=True)
    err.print(_plan_line(job), markup=False, highlight=False, soft_wrap=True)
    return cal.run(job, target, on_progress=ProgressLines(err))


def _plan_line(job) -> str:

    clock = kit_design().clock_text
    s, est = job.space, job.estimate
    runtime = f"{job.runtime}, {job.threads} thread(s), {job.clock} clock, {job.passes} pass(es)"
    export = (
        f"exporting {len({p.embed_dim for p, _ in job.points})} widths ~{clock(est.prepare_s)}, "
        if est.prepare_s
        else ""
    )
    return (
        f"calibrate {job.profile.name}: {len(job.points)} measurements of {job.models} models at {s.img_size} px, "
        f"patch {s.patch_size}, {s.in_chans} channel(s), heads of {s.head_dim}, MLP ratio {s.mlp_ratio:g}, "
        f"{job.variant.precision} ({runtime}); estimated {clock(est.total_s)} ({export}timing "
        f"~{clock(est.measure_s)}; this machine's GEMM probe: {est.gflops:.0f} GFLOP/s), memory about "
        f"{est.memory_mib:.0f} MiB; a progress line every {PROGRESS_EVERY_S:g} s"
    )


class ProgressLines:
    """The ``on_progress`` callback: a plain line on stderr every PROGRESS_EVERY_S seconds and at the end of each
    phase, with the time left corrected by the measured pace (estimated work done vs time taken)."""

    def __init__(self, con, every_s: float = PROGRESS_EVERY_S):
        self.con, self.every_s = con, every_s
        self.start = self.last = time.monotonic()
        self.measure_start: float | None = None

    def __call__(self, p) -> None:
        now = time.monotonic()
        if p.phase == "measure" and self.measure_start is None:
            self.measure_start = self.last = now - 1e-9
        if now - self.last < self.every_s and p.done != p.total:
            return
        self.last = now

        clock = kit_design().clock_text
        line = f"calibrate: {p.phase} {p.done}/{p.total} ({p.detail}), elapsed {clock(now - self.start)}"
        if p.phase == "measure" and p.done < p.total and p.work_done_s > 0:
            pace = (now - (self.measure_start or now)) / p.work_done_s
            line += f", about {clock(pace * (p.work_total_s - p.work_done_s))} left"
        self.con.print(line, markup=False, highlight=False, soft_wrap=True)


def _report(result, profile, as_json, console, print_json) -> None:
    data = result.data
    summary = {
        "path": result.path,
        "profile": data["profile"],
        "source": data["source"],
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
    fit, run = data["fit"], data["runtime"]
    con = console()
    con.print(f"wrote {result.path}")
    where = "on the device" if data["source"]["kind"] == "device" else "here"
    threads = f", {run['threads']} thread(s)" if run["threads"] else ""
    con.print(
        f"  {fit['n_samples']} measurements {where} with {run['detail']}{threads}, {run['clock']} clock, on "
        f"{data['machine']['cpu']}"
    )
    g, cov = data["geometry"], data["covered"]
    con.print(
        f"  geometry {g['img_size']} px, patch {g['patch_size']}, {g['in_chans']} channel(s), heads of "
        f"{g['head_dim']}, MLP ratio {g['mlp_ratio']:g}; covered depth {cov['depth']['lo']}..{cov['depth']['hi']}, "
        f"width {cov['embed_dim']['lo']}..{cov['embed_dim']['hi']}, batch {cov['batch']['lo']}..{cov['batch']['hi']}"
    )
    con.print(
        f"  fit: MAPE {fit['mape_pct']:.2f}%, max {fit['max_abs_pct']:.1f}%, "
        f"{100 * fit['within_10pct']:.0f}% within 10%"
    )
    sets = "".join(f" --set {shlex.quote(s)}" for s in profile.overrides)
    con.print(f"  use it: wave-deploy plan --profile {profile.name}{sets} --calibration {result.path}")
