"""`wave-deploy plan`: which ViT size fits a device profile, or what one given size would cost there."""

from __future__ import annotations

import dataclasses

import click

from wave_deploy.cli.options import json_option, objective_option
from wave_deploy.cli.output import profile_set_option
from wave_deploy.errors import InvalidInputError, UsageError

SPEC_KEYS = ("depth", "embed_dim", "num_heads", "batch", "img_size", "patch_size", "in_chans")
SPEC_MAX = 1_000_000  # any size or batch a device could run is far below this


def parse_spec_option(text: str) -> dict[str, int]:
    """'depth=L,embed_dim=D[,num_heads=H][,batch=B][,img_size=S][,patch_size=P][,in_chans=C]' -> dict;
    malformed text raises UsageError (exit 2), an image size that is no multiple of the patch size
    InvalidInputError (exit 3; other zero or negative values are refused by the spec's own checks)."""
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
        if values[key] > SPEC_MAX:  # zero and negative values are refused by the spec's own checks (exit 3)
            raise InvalidInputError(f"--spec: {key} {values[key]} is larger than {SPEC_MAX:,}")
    missing = [k for k in ("depth", "embed_dim") if k not in values]
    if missing:
        raise UsageError(f"--spec: missing {', '.join(missing)} (depth=L,embed_dim=D are required)")
    return values


def parse_img_sizes(texts: tuple[str, ...]) -> list[int]:
    """--img-size values (repeatable, each a comma list) -> sizes in the order given; UsageError (exit 2)."""
    sizes: list[int] = []
    for text in texts:
        for raw in text.split(","):
            try:
                size = int(raw.strip())
            except ValueError:
                raise UsageError(
                    f"--img-size: expected integers (e.g. 160,224), got {raw.strip()!r}"
                ) from None
            if not 1 <= size <= 8192:
                raise UsageError(f"--img-size: {size} is not in 1..8192")
            if size in sizes:
                raise UsageError(f"--img-size: {size} given twice")
            sizes.append(size)
    return sizes


def _check_geometry(img_size: int, patch_size: int, what: str) -> None:
    if patch_size >= 1 and img_size >= 1 and img_size % patch_size:
        raise InvalidInputError(
            f"{what}: image size {img_size} is not a multiple of the patch size {patch_size}"
        )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@click.command("plan")
@click.option("--profile", "profile_name", required=True, help="Profile name, alias or YAML path.")
@profile_set_option
@click.option(
    "--spec",
    "spec_text",
    default=None,
    metavar="depth=L,embed_dim=D[,num_heads=H][,batch=B][,img_size=S][,patch_size=P][,in_chans=C]",
    help="Predict this one size (latency, memory, FLOPs, params) instead of choosing one. Image size, patch "
    "size and channels default to the bank's (no bank of that geometry is needed).",
)
@click.option(
    "--img-size",
    "img_size_texts",
    multiple=True,
    metavar="PX[,PX...]",
    help="Image sizes to search (repeatable or a comma list; each a multiple of the bank's patch size): the "
    "profile then chooses depth x width x resolution. Default: the bank's image size only.",
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration file to predict with (default: the profile's own, else the analytic model).",
)
@objective_option("the bank's data")
@click.option("--plot", type=click.Path(), default=None, help="Write a PNG of FLOPs vs latency.")
@click.option(
    "--templates",
    "bank_path",
    type=click.Path(dir_okay=True),
    default=None,
    help="Template bank whose sizes are the candidates (default: the bank shipped with wave-deploy).",
)
@json_option()
def plan(
    profile_name, overrides, spec_text, img_size_texts, calibration, objective, plot, bank_path, as_json
):
    """Choose the ViT size that fits PROFILE's budgets, or predict one given size (--spec).

    Sizes come from the template bank's search space (default: the shipped bank's geometry, 28 px MNIST) at
    the bank's image size or at each --img-size; the profile's budgets were set for its own input size (a note
    says when the chosen size differs). Latencies predicted outside a calibration's measured geometry, depth,
    width or batch are marked '*' in the table, listed in notes and in each candidate's latency_notes (--json).
    Exits 5 when no size fits, naming the closest ones and the budget each breaks.
    """
    from wave_deploy.cli.output import console, print_json, table
    from wave_deploy.fileio import check_writable_file
    from wave_deploy.planning.latency import load_calibration
    from wave_deploy.planning.selection import SearchSpace, evaluate, select
    from wave_deploy.profiles import apply_overrides, load_profile
    from wave_deploy.spec import macs
    from wave_deploy.wave.bank_file import default_bank_path, inspect_bank

    if plot and spec_text is not None:
        raise UsageError("--plot draws the candidate frontier; it does not apply to --spec")
    if plot:
        check_writable_file(plot, "--plot")  # before any work: exit 3 naming the path
    profile = apply_overrides(load_profile(profile_name), overrides)
    img_sizes = parse_img_sizes(img_size_texts)
    values = parse_spec_option(spec_text) if spec_text is not None else {}
    space = SearchSpace.from_bank(inspect_bank(bank_path or default_bank_path()).geometry)
    if img_sizes and spec_text is None:
        for size in img_sizes:
            _check_geometry(size, space.patch_size, "--img-size")
        space = space.with_resolutions(img_sizes)
    cal = load_calibration(calibration) if calibration else None
    if spec_text is not None:
        if len(img_sizes) > 1:
            raise UsageError("--spec predicts one size: give at most one --img-size (or img_size= in --spec)")
        batch = values.pop("batch", profile.budgets.latency_batch)
        geometry = {
            "img_size": values.get("img_size", img_sizes[0] if img_sizes else space.img_size),
            "patch_size": values.get("patch_size", space.patch_size),
            "in_chans": values.get("in_chans", space.in_chans),
        }
        _check_geometry(geometry["img_size"], geometry["patch_size"], "--spec")
        spec = dataclasses.replace(
            space.spec(values["depth"], values["embed_dim"], values.get("num_heads")), **geometry
        )
        c = evaluate(spec, profile, calibration=cal, batch=batch)
        result = {
            "profile": profile.name,
            "spec": spec.to_dict(),
            "name": spec.name,
            "batch": batch,
            "params": c.params,
            "flops_per_image": c.flops,
            "macs_per_image": macs(spec),
            "latency": c.latency.to_dict(),
            "budget_percentile": profile.budgets.latency_percentile,
            "latency_at_budget_ms": c.latency_at_budget_ms,
            "memory": c.memory.to_dict(),
            "fits_budgets": c.feasible,
            "reasons": list(c.reasons),
            "latency_extrapolated": bool(c.latency.notes),
        }
        if as_json:
            print_json(result)
            return
        out = console()
        out.print(
            f"{spec.name} ({spec.img_size} px, patch {spec.patch_size}, {spec.in_chans} channels) on "
            f"{profile.name} (batch {batch}), source: {c.latency.source}"
        )
        out.print(f"  params {c.params / 1e6:.3f} M, {c.flops / 1e9:.3f} GFLOPs per image")
        out.print(
            f"  latency p50 {c.latency.latency_ms:.3f} ms, {profile.budgets.latency_percentile} "
            f"{c.latency_at_budget_ms:.3f} ms (budget {profile.budgets.latency_ms:g} ms)"
        )
        out.print(
            f"  memory {c.memory.total_mib:.1f} MiB (budget {profile.budgets.memory_mib:g} MiB)"
            + (f", build peak {c.memory.build_peak_mib:.0f} MiB" if c.memory.build_peak_mib else "")
        )
        out.print("  fits the budgets" if c.feasible else "  breaks: " + "; ".join(c.reasons))
        for note in c.latency.notes:
            out.print(f"  note: latency {note}")
        return

    accuracy = None
    if objective == "accuracy":  # imports torch: only on request
        from wave_deploy.wave.score import accuracy_table, bank_data

        bank_file = bank_path or default_bank_path()  # every size of the space: seconds, then cached
        accuracy = accuracy_table(bank_file, space.specs(), bank_data(bank_file))
    selection = select(profile, space, objective=objective, calibration=cal, accuracy=accuracy)
    if plot:
        from wave_deploy.planning.plot import plot_frontier

        plot_frontier(selection, profile, plot)
    if as_json:
        fits = [c.to_dict() for c in selection.candidates if c.feasible]
        print_json({**selection.to_dict(), "fitting": fits, "search_space": space.to_dict(), "plot": plot})
        return
    chosen = selection.chosen
    out = console()
    out.print(
        f"profile {profile.name}: chose {chosen.spec.name} (depth {chosen.spec.depth}, embed_dim "
        f"{chosen.spec.embed_dim}, heads {chosen.spec.num_heads}), most {selection.objective} among "
        f"{sum(c.feasible for c in selection.candidates)} of {len(selection.candidates)} sizes that fit"
    )
    out.print(
        f"  predicted latency {chosen.latency_at_budget_ms:.3f} ms {profile.budgets.latency_percentile} "
        f"(budget {profile.budgets.latency_ms:g} ms), memory {chosen.memory.total_mib:.1f} MiB "
        f"(budget {profile.budgets.memory_mib:g} MiB); source: {selection.latency_source}"
    )
    for note in selection.notes:
        out.print(f"  note: {note}")
    several = len(space.resolutions()) > 1
    rows = [
        [
            *([c.spec.img_size] if several else []),
            c.spec.depth,
            c.spec.embed_dim,
            c.spec.num_heads,
            _fmt(c.flops / 1e9, 3),
            _fmt(c.params / 1e6, 2),
            _fmt(c.latency.latency_ms, 3) + ("*" if c.latency.notes else ""),
            _fmt(c.latency_at_budget_ms, 3) + ("*" if c.latency.notes else ""),
            _fmt(c.memory.total_mib, 0),
            "" if c.accuracy is None else f"{c.accuracy:.1%}",
            "chosen" if c is chosen else ("fits" if c.feasible else "; ".join(c.reasons)),
        ]
        for c in selection.frontier
    ]
    header = ["depth", "dim", "heads", "GFLOPs", "params M", "p50 ms"]
    header += [f"{profile.budgets.latency_percentile} ms", "MiB", "accuracy", "verdict"]
    out.print(
        table(
            f"Pareto frontier ({'predicted accuracy' if objective == 'accuracy' else objective} vs predicted "
            "latency)",
            (["px"] if several else []) + header,
            rows,
        )
    )
    marked = [c for c in selection.frontier if c.latency.notes]
    if marked:
        out.print(f"  * latency extrapolated outside the calibrated range, e.g. {marked[0].latency.notes[0]}")
    if plot:
        out.print(f"plot: {plot}")
