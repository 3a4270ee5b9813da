"""``wave-deploy profiles list | show | validate``: the device profiles (DESIGN section 4).

Torch-free: this module and everything it imports (pydantic, yaml, rich) must not pull in torch, so that
``wave-deploy profiles list`` stays fast (a test checks it in a subprocess).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from wave_deploy.cli.options import profile_set_option
from wave_deploy.cli.output import console, echo, is_quiet, print_json, table
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning.latency import profile_calibration
from wave_deploy.profiles import apply_overrides, list_profiles, load_profile, load_profile_file

if TYPE_CHECKING:
    from wave_deploy.profiles import DeviceProfile


def _wide_console():
    """A rich console that does not squeeze tables into 80 columns when stdout is a pipe or a file."""
    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 160)
    return out


def _latency_limit(profile: DeviceProfile) -> str:
    b = profile.budgets
    return f"{b.latency_ms:g} ms {b.latency_percentile} @ batch {b.latency_batch}"


def _memory_limit(profile: DeviceProfile) -> str:
    return f"{profile.budgets.memory_mib:g} MiB"


def _summary(profile: DeviceProfile) -> dict[str, Any]:
    """The row of ``profiles list --json`` for one profile."""
    return {
        "name": profile.name,
        "aliases": list(profile.aliases),
        "description": profile.description,
        "device_name": profile.hardware.device_name,
        "accelerator": profile.hardware.accelerator,
        "runtime": profile.software.runtime,
        "precision": profile.runtime.precision,
        "input_size_px": profile.runtime.input_size_px,
        "latency_budget_ms": profile.budgets.latency_ms,
        "latency_percentile": profile.budgets.latency_percentile,
        "latency_batch": profile.budgets.latency_batch,
        "memory_budget_mib": profile.budgets.memory_mib,
        "source_file": profile.source_file,
    }


def _resolved(profile: DeviceProfile) -> dict[str, Any]:
    """The full resolved profile as JSON-ready data (``source_file`` and ``overrides`` are outside the schema)."""
    data = {**profile.model_dump(mode="json"), "source_file": profile.source_file}
    return {**data, "overrides": list(profile.overrides)} if profile.overrides else data


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, prefix=f"{path}."))
        elif isinstance(value, list):
            rows.append((path, ", ".join(str(v) for v in value) or "-"))
        else:
            rows.append((path, "-" if value is None else value))
    return rows


@click.group("profiles")
def profiles() -> None:
    """Device profiles: hardware facts, runtime settings, budgets and latency model of each target.

    A profile is named by its name (jetson-orin-nano-8gb), one of its aliases (jetson) or a YAML file path.
    """


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List the shipped profiles with their runtime, precision and budgets."""

    found = list_profiles()
    if as_json:
        print_json({"profiles": [_summary(p) for p in found]})
        return
    from rich.markup import escape

    rows = [
        [
            p.name,
            escape(", ".join(p.aliases) or "-"),
            p.hardware.accelerator,
            p.software.runtime,
            p.runtime.precision,
            _latency_limit(p),
            _memory_limit(p),
        ]
        for p in found
    ]
    columns = ["name", "aliases", "accelerator", "runtime", "precision", "latency budget", "memory budget"]
    _wide_console().print(table(f"{len(found)} device profiles", columns, rows))


@profiles.command("show")
@click.argument("profile", metavar="NAME|ALIAS|PATH")
@profile_set_option
@click.option("--json", "as_json", is_flag=True, help="Print the full resolved profile as JSON on stdout.")
def show_cmd(profile: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show every field of one profile, looked up by name, alias or YAML path (after any --set)."""

    found = apply_overrides(load_profile(profile), overrides)
    if as_json:
        print_json(_resolved(found))
        return
    out = _wide_console()
    aliases = f" (aliases: {', '.join(found.aliases)})" if found.aliases else ""
    out.print(f"{found.name}{aliases}", style="bold", markup=False, highlight=False)
    out.print(found.description, markup=False, highlight=False)
    out.print(f"file: {found.source_file}", markup=False, highlight=False)
    if found.overrides:
        out.print(f"set for this run: {' '.join(found.overrides)}", markup=False, highlight=False)
    from rich.markup import escape

    data = found.model_dump(mode="json", exclude={"name", "aliases", "description"})
    out.print(table(None, ["field", "value"], [[k, escape(str(v))] for k, v in _flatten(data)]))


@profiles.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print the per-file results as JSON on stdout.")
def validate_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """Check profile YAML files against the schema, and a calibrated profile's calibration file as plan reads it.

    Exits 0 when every file is valid; stops at the first invalid one and exits 3 with one line naming the
    file and the field (or the calibration file and what is wrong with it).
    """

    results: list[dict[str, Any]] = []
    for path in files:
        try:
            found = load_profile_file(path)
            profile_calibration(found)  # kind 'calibrated': the file must exist and fit, exactly as for plan
        except InvalidInputError as exc:
            if as_json:
                results.append({"path": path, "valid": False, "error": exc.one_line()})
                print_json({"valid": False, "files": results})
            raise
        results.append({"path": path, "valid": True, "name": found.name})
        if not as_json and not is_quiet():
            echo(f"ok  {path}  ({found.name})")
    if as_json:
        print_json({"valid": True, "files": results})
