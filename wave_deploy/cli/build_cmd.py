"""``wave-deploy build``: the whole pipeline for one or more device profiles."""

from __future__ import annotations

import click

from wave_deploy.cli.options import (
    FiniteFloat,
    NonNegative,
    Positive,
    batch_size_option,
    compile_option,
    device_option,
    exporter_option,
    json_option,
    objective_option,
    opset_option,
    seed_option,
)
from wave_deploy.cli.output import console, is_quiet, print_json, profile_set_option, table


def epochs_option(name: str, phase: str, default: float, builtin_steps: int):
    """A phase length in passes over the training split (the build's default schedule scales with the data)."""
    return click.option(
        name,
        type=FiniteFloat(min=0, min_open=True, max=1000),
        default=default,
        show_default=True,
        help=f"Length of the {phase} in passes over the training split ({builtin_steps} steps on the built-in "
        "data).",
    )


@click.command("build")
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    help="Device profile name, alias or YAML path; repeat for several devices.",
)
@click.option("--all-profiles", is_flag=True, help="Build every shipped profile.")
@profile_set_option
@click.option(
    "--templates",
    type=click.Path(path_type=str),
    help="Template bank (.safetensors); default: the bank shipped with wave-deploy.",
)
@click.option("--data", type=click.Path(path_type=str), help="ImageFolder tree; default: built-in MNIST-5k.")
@click.option(
    "--img-size",
    type=Positive,
    help="Input size in pixels of the built models (a multiple of the bank's patch size); default: the "
    "bank's. Images are resized to it once, at load; position embeddings are resampled.",
)
@click.option(
    "--out",
    default="artifacts",
    show_default=True,
    type=click.Path(path_type=str),
    help="Output root; each device writes <out>/<profile name>/.",
)
@seed_option()
@click.option(
    "--strategy",
    type=click.Choice(["aux", "random"]),
    default="aux",
    show_default=True,
    help="How target scalers start (see `wave-deploy init --help`).",
)
@click.option(
    "--scaler-steps",
    type=NonNegative,
    default=None,
    help="Scaler-only training steps; default: --scaler-epochs over the training split.",
)
@click.option(
    "--dense-steps",
    type=NonNegative,
    default=None,
    help="Full training steps after folding; default: --dense-epochs over the training split.",
)
@epochs_option("--scaler-epochs", "scaler phase", 1.7, 60)
@epochs_option("--dense-epochs", "dense phase", 4.25, 150)
@batch_size_option()
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False, path_type=str),
    help="Latency calibration file (from `wave-deploy calibrate`) to use instead of the profile's.",
)
@objective_option("--data")
@opset_option()
@exporter_option()
@click.option(
    "--bench-iterations",
    type=Positive,
    default=200,
    show_default=True,
    help="Timed iterations of the local ONNX Runtime benchmark.",
)
@device_option()
@compile_option()
@click.option(
    "--force",
    is_flag=True,
    help="Rebuild every stage, ignoring cached results and discarding interrupted training checkpoints.",
)
@click.option(
    "--fail-on-budget/--no-fail-on-budget",
    default=True,
    show_default=True,
    help="Exit 8 when a built model breaks a budget (reports are written either way).",
)
@json_option("Print one JSON summary on stdout.")
def build(
    profiles,
    all_profiles,
    overrides,
    templates,
    data,
    img_size,
    out,
    seed,
    strategy,
    scaler_steps,
    dense_steps,
    scaler_epochs,
    dense_epochs,
    batch_size,
    calibration,
    objective,
    opset,
    exporter,
    bench_iterations,
    device,
    compile_steps,
    force,
    fail_on_budget,
    as_json,
) -> None:
    """Pick, initialize, train, fold, export and benchmark the ViT that fits each device; write reports.

    Re-running the same command reuses every finished stage; a killed build resumes where it stopped.
    Exit 8 (after writing the reports) when a built model breaks a budget, 5 when no size fits.

    Every profile is built even when another fails; the exit code is then the most severe of theirs
    (1, 6, 7, 4, 3, 5, 8). A failed profile's report.json/report.md say FAIL and why: no earlier PASS is
    left standing. With --json, one object on stdout on every exit, with one entry per profile.
    """
    import time

    from wave_deploy.cli.progress import TrainingProgress
    from wave_deploy.errors import UsageError
    from wave_deploy.fileio import check_writable_dir
    from wave_deploy.pipeline.build import build as run_build
    from wave_deploy.pipeline.options import BuildOptions, outcome
    from wave_deploy.profiles import list_profiles

    if all_profiles and profiles:
        raise UsageError("give --profile or --all-profiles, not both")
    if all_profiles:
        profiles = tuple(p.name for p in list_profiles())
    if not profiles:
        raise UsageError("give at least one --profile (e.g. --profile jetson) or --all-profiles")
    check_writable_dir(out, "--out")  # before any stage: a path that cannot be written fails now, exit 3
    options = BuildOptions(
        templates=templates,
        data=data,
        out=out,
        seed=seed,
        strategy=strategy,
        scaler_steps=scaler_steps,
        dense_steps=dense_steps,
        scaler_epochs=scaler_epochs,
        dense_epochs=dense_epochs,
        batch_size=batch_size,
        img_size=img_size,
        calibration=calibration,
        objective=objective,
        opset=opset,
        exporter=exporter,
        bench_iterations=bench_iterations,
        device=device,
        compile=compile_steps,
        force=force,
        profile_overrides=tuple(overrides),
    )
    quiet = is_quiet() or as_json
    err = console(stderr=True)
    t0 = time.perf_counter()

    def on_event(profile: str, stage: str, status: str, seconds: float | None) -> None:
        if quiet or status == "start":
            return
        what = "reused (inputs unchanged)" if status == "reused" else f"done in {seconds:.1f} s"
        err.print(f"[{profile}] {stage:<7} {what}", markup=False)

    with TrainingProgress("training", console=err, disable=quiet) as bar:
        results = run_build(list(profiles), options, on_event=on_event, on_step=bar)
    summary = [_summary_row(r) for r in results]
    error = outcome(results, fail_on_budget)
    if as_json:
        failure = None if error is None else {"class": type(error).__name__, "message": error.one_line()}
        print_json(
            {
                "ok": error is None,
                "exit_code": 0 if error is None else error.exit_code,
                "error": failure,
                "devices": summary,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    elif not is_quiet() and not (len(results) == 1 and results[0].error is not None):
        # (one profile that failed: its one-line error below says everything the table would)
        columns = ["device", "spec", "params", "predicted", "budget", "local p50", "val acc", "verdict"]
        rows = [_table_row(s) for s in summary]
        err.print(table(None, columns, rows))
        err.print(
            f"reports: {', '.join(s['report'] for s in summary)}  ({time.perf_counter() - t0:.0f} s)",
            markup=False,
        )
    if error is not None:
        raise error


def _table_row(s: dict) -> list[str]:
    if s.get("error"):
        e = s["error"]
        return [
            s["profile"],
            "—",
            "",
            "",
            "",
            "",
            "",
            f"FAIL: exit {s['exit_code']} at {e['stage']}: {e['message']}",
        ]
    return [
        s["profile"],
        s["spec"],
        f"{s['params'] / 1e6:.2f}M",
        f"{s['predicted_latency_ms']:.2f} ms ({s['latency_source']})",
        f"{s['latency_budget_ms']:g} ms {s['percentile']}",
        "—" if s["local_p50_ms"] is None else f"{s['local_p50_ms']:.2f} ms",
        f"{s['val_acc']:.1%}",
        s["verdict"],
    ]


def _summary_row(result) -> dict:
    """One profile's entry of the build summary (--json "devices"); a failed build has "error"."""
    r = result.report
    row = {
        "profile": result.profile,
        "out_dir": result.out_dir,
        "report": f"{result.out_dir}/report.md",
        "exit_code": result.exit_code,
        "verdict": r["verdict"],
        "failed_budgets": r["failed_budgets"],
        "stages": result.stages,
        "error": None,
    }
    failure = r.get("failure")
    if failure is not None:
        row["error"] = {"stage": failure["stage"], "class": failure["error"], "message": failure["message"]}
    if r.get("spec") is None:  # failed before a model was chosen
        return row
    local = (r["measured"] or {}).get("local") or {}
    return {
        **row,
        "spec": r["spec_name"],
        "params": r["costs"]["params"],
        "predicted_latency_ms": r["prediction"]["latency_ms"],
        "latency_source": r["prediction"]["source"],
        "latency_budget_ms": r["budgets"]["latency"]["budget_ms"],
        "percentile": r["budgets"]["latency"]["percentile"],
        "predicted_memory_mib": r["prediction"]["memory_mib"],
        "local_p50_ms": local.get("p50_ms"),
        "val_acc": r["accuracy"]["val_acc"],
    }
