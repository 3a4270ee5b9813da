"""User-facing output for CLI commands: JSON on stdout, human text and tables via rich; shared options."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def is_quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("quiet"))


_json_state = {"printed": False}


def print_json(data: Any) -> None:
    """One machine-readable object on stdout (the CLI prints an error object instead when none was)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
    _json_state["printed"] = True


def json_printed() -> bool:
    return _json_state["printed"]


def reset_json() -> None:
    _json_state["printed"] = False


def console(stderr: bool = False):
    """A rich console; piped or captured output gets 140 columns instead of being squeezed into 80."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = max(out.width, 140)
    return out


def table(title: str | None, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t


# `--set` on the commands that take --profile (build, plan): profiles.apply_overrides reads the values.
profile_set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="Override a profile field for this run, e.g. --set budgets.latency_ms=0.5 (repeatable; "
    "applies to every profile given).",
)
