"""`wave-deploy plan`: which ViT size fits a device profile, or what one given size would cost there.

Parses and prints; the work is ``wave_deploy.planning.plan`` (the same functions as ``wave_deploy.plan``).
"""

from __future__ import annotations

import click

from wave_deploy.cli.options import json_option, model_options
from wave_deploy.cli.output import console, print_json, table
from wave_deploy.data_shape import describe_channels
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.fileio import check_writable_file
from wave_deploy.options import PlanOptions, parse
from wave_deploy.planning import plan as planning
from wave_deploy.planning.plot import plot_frontier

SPEC_KEYS = ("depth", "embed_dim", "num_heads", "batch", "img_size", "patch_size", "in_chans")
SPEC_MAX = 1_000_000  # any size or batch a device could run is far below this


def parse_spec_option(text: str) -> dict[str, int]:
    """'depth=L,embed_dim=D[,num_heads=H][,batch=B][,img_size=S][,patch_size=P][,in_chans=C]' -> dict;
    malformed text raises UsageError (exit 2); values beyond SPEC_MAX InvalidInputError (exit 3; zero and
    negative values are refused by the spec's own checks, the image size by the one image-size rule)."""
    values: dict[str, int] = {}
    for part in text.split(","):
        key, sep, raw = part.strip().partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--spec: expected key=value pairs separated by commas, got {part.strip()!r}")
        if key not in SPEC_KEYS:
            raise UsageError(f"--spec: unknown key {key!r}; expected {', '.join(SPEC_KEYS)}")
        if key in values:
            raise UsageError(f"--spec: {key} given twice")
        try:
            values[key] = int(raw.strip())
        except ValueError:
            raise UsageError(f"--spec: {key} must be an integer, got {raw.strip()!r}") from None
        if values[key] > SPEC_MAX:
            raise InvalidInputError(f"--spec: {key} {values[key]} is larger than {SPEC_MAX:,}")
    missing = [k for k in ("depth", "embed_dim") if k not in values]
    if missing:
        raise UsageError(f"--spec: missing {', '.join(missing)} (depth=L,embed_dim=D are required)")
    return values


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@click.command("plan")
@click.option("--profile", "profile_name", required=True, help="Profile name, alias or YAML path.")
@model_options(PlanOptions, "profile_overrides")
@click.option(
    "--spec",
    "spec_text",
    default=None,
    metavar="depth=L,embed_dim=D[,num_heads=H][,batch=B][,img_size=S][,patch_size=P][,in_chans=C]",
    help="Predict this one size (latency, memory, FLOPs, params) instead of choosing one. Image size, patch "
    "size and channels default to the bank's (no bank of that geometry is needed).",
)
@model_options(PlanOptions, "img_size", "calibration", "objective")
@click.option("--plot", type=click.Path(), default=None, help="Write a PNG of FLOPs vs latency.")
@model_options(PlanOptions, "templates", "data", "in_chans", "num_classes", "beyond_bank")
@model_options(PlanOptions, "init", "teacher_checkpoint", "teacher_arch")
@json_option()
def plan(profile_name, spec_text, plot, as_json, **fields):
    """Choose the ViT size that fits PROFILE's budgets, or predict one given size (--spec).

    Sizes come from the search space build would use with the same --init (default wave: the template bank's,
    the shipped bank's geometry, 28 px MNIST; weight-selection: the teacher's; random: the bank's with
    --templates, the teacher's with --teacher-checkpoint, else a default geometry at the data's image size),
    at its image size or at each --img-size, for the channels and classes of --data (read from a listing
    and image headers) or of --in-chans/--num-classes (default: the bank's task; without a bank, the built-in
    data's); the table and --json say where the geometry came from (bank, teacher or default). Reading a
    teacher imports torch; wave and random plan without it. --beyond-bank searches past a bank's sizes. The profile's budgets were set for its own input size (a note says when the chosen
    size differs); a note says when the bank's largest size uses under a quarter of the binding budget. Latencies predicted outside a calibration's measured geometry, depth,
    width or batch are marked '*' in the table, listed in notes and in each candidate's latency_notes (--json).
    Exits 5 when no size fits, naming the closest ones and the budget each breaks.
    """

    options = parse(PlanOptions, fields, "plan")
    if plot and spec_text is not None:
        raise UsageError("--plot draws the candidate frontier; it does not apply to --spec")
    if plot:
        check_writable_file(plot, "--plot")  # before any work: exit 3 naming the path
    if spec_text is not None:
        values = parse_spec_option(spec_text)
        result = planning.predict(profile_name, options, values)
        print_json(result) if as_json else _print_prediction(result)
        return
    selection, inputs = planning.plan(profile_name, options)
    if plot:
        plot_frontier(selection, inputs.profile, plot)
    if as_json:
        fits = [c.to_dict() for c in selection.candidates if c.feasible]
        print_json(
            {**selection.to_dict(), "fitting": fits, "search_space": inputs.space.to_dict(), "plot": plot,
             "task": inputs.task, "init": options.init, **inputs.sources()}
        )  # fmt: skip
        return
    _print_selection(selection, inputs, options.objective, plot)


def _print_prediction(r: dict) -> None:

    out, spec, lat, mem = console(), r["spec"], r["latency"], r["memory"]
    out.print(
        f"{r['name']} ({spec['img_size']} px, patch {spec['patch_size']}, {spec['in_chans']} channels) on "
        f"{r['profile']} (batch {r['batch']}), source: {lat['source']}"
    )
    out.print(f"  params {r['params'] / 1e6:.3f} M, {r['flops_per_image'] / 1e9:.3f} GFLOPs per image")
    out.print(
        f"  latency p50 {lat['latency_ms']:.3f} ms, {r['budget_percentile']} {r['latency_at_budget_ms']:.3f} ms "
        f"(budget {r['budget_ms']:g} ms)"
    )
    build = f", build peak {mem['build_peak_mib']:.0f} MiB" if mem["build_peak_mib"] else ""
    out.print(f"  memory {mem['total_mib']:.1f} MiB (budget {r['memory_budget_mib']:g} MiB){build}")
    out.print("  fits the budgets" if r["fits_budgets"] else "  breaks: " + "; ".join(r["reasons"]))
    for note in lat["notes"]:
        out.print(f"  note: latency {note}")


def _print_selection(selection, inputs, objective: str, plot: str | None) -> None:

    chosen, profile, b = selection.chosen, inputs.profile, inputs.profile.budgets
    out = console()
    out.print(
        f"profile {profile.name}: chose {chosen.spec.name} (depth {chosen.spec.depth}, embed_dim "
        f"{chosen.spec.embed_dim}, heads {chosen.spec.num_heads}), most {selection.objective} among "
        f"{sum(c.feasible for c in selection.candidates)} of {len(selection.candidates)} sizes that fit"
    )
    out.print(
        f"  predicted latency {chosen.latency_at_budget_ms:.3f} ms {b.latency_percentile} "
        f"(budget {b.latency_ms:g} ms), memory {chosen.memory.total_mib:.1f} MiB "
        f"(budget {b.memory_mib:g} MiB); source: {selection.latency_source}"
    )

    task = inputs.task
    chans = describe_channels(task["in_chans"])
    out.print(f"  task: input {chans}, {task['num_classes']} classes ({task['source']})")
    out.print(f"  geometry: {_geometry_line(inputs)}")
    for note in selection.notes:
        out.print(f"  note: {note}")
    several = len(inputs.space.resolutions()) > 1
    rows = [_frontier_row(c, chosen, several) for c in selection.frontier]
    header = ["depth", "dim", "heads", "ch", "classes", "GFLOPs", "params M", "p50 ms"]
    header += [f"{b.latency_percentile} ms", "MiB", "accuracy", "verdict"]
    title = f"Pareto frontier ({'predicted accuracy' if objective == 'accuracy' else objective} vs predicted latency)"
    out.print(table(title, (["px"] if several else []) + header, rows))
    marked = [c for c in selection.frontier if c.latency.notes]
    if marked:
        out.print(f"  * latency extrapolated outside the calibrated range, e.g. {marked[0].latency.notes[0]}")
    if plot:
        out.print(f"plot: {plot}")


def _geometry_line(inputs) -> str:
    """Where the sizes searched come from (bank, teacher or default, as build --dry-run's geometry_source)."""
    space, source = inputs.bank_space, inputs.geometry_source
    where = {"bank": f"bank ({inputs.bank})", "teacher": f"teacher ({inputs.teacher})",
             "default": "default (--init random, no bank or teacher)"}[source]  # fmt: skip
    return (f"{where}: patch {space.patch_size}, head size {space.head_dim}, depth up to {space.max_depth}, "
            f"width up to {space.max_embed_dim}")  # fmt: skip


def _frontier_row(c, chosen, several: bool) -> list:
    star = "*" if c.latency.notes else ""
    return [
        *([c.spec.img_size] if several else []),
        c.spec.depth,
        c.spec.embed_dim,
        c.spec.num_heads,
        c.spec.in_chans,
        c.spec.num_classes,
        _fmt(c.flops / 1e9, 3),
        _fmt(c.params / 1e6, 2),
        _fmt(c.latency.latency_ms, 3) + star,
        _fmt(c.latency_at_budget_ms, 3) + star,
        _fmt(c.memory.total_mib, 0),
        "" if c.accuracy is None else f"{c.accuracy:.1%}",
        "chosen" if c is chosen else ("fits" if c.feasible else "; ".join(c.reasons)),
    ]
