"""Number formatting and the budget table rows shared by report.md, the HTML index and the CLI."""

from __future__ import annotations

import json

from wave_deploy.reports.judge import BUDGET_ORDER


def fmt_num(value, digits: int = 3, unit: str = "") -> str:
    """A number with fixed decimals and an optional unit; an em dash for None."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}{' ' + unit if unit else ''}"


def fmt_pct(value) -> str:
    """A fraction in 0..1 as a percentage."""
    return "—" if value is None else f"{100 * value:.2f} %"


def fmt_bytes(n) -> str:
    return "—" if n is None else f"{n / 2**20:.2f} MiB ({n:,} bytes)"


def power_mode_text(mode) -> str:
    if not mode:
        return "not applicable (the profile has no power modes)"
    if isinstance(mode, dict):
        clocks = "on" if mode.get("jetson_clocks") else "off"
        return f"nvpmodel {mode.get('nvpmodel_mode')}, jetson_clocks {clocks}"
    return str(mode)


def check_rows(checks: dict) -> list[tuple[str, str, str, str, str]]:
    """(budget, limit, value, source, 'ok' | 'FAIL') per budget check, in BUDGET_ORDER."""
    rows = []
    for name in [n for n in BUDGET_ORDER if checks.get(n)] + sorted(set(checks) - set(BUDGET_ORDER)):
        b = checks[name]
        if not isinstance(b, dict):
            continue
        if "budget_ms" in b:
            label = f"{name} ({b.get('percentile', '?')})"
            limit, value = f"<= {b['budget_ms']:g} ms", fmt_num(b.get("value_ms"), 3, "ms")
        elif "budget_mib" in b:
            label, limit, value = name, f"<= {b['budget_mib']:g} MiB", fmt_num(b.get("value_mib"), 1, "MiB")
        elif "min" in b:
            label, limit, value = name, f">= {fmt_pct(b['min'])}", fmt_pct(b.get("value"))
        else:
            label, limit, value = name, "?", json.dumps(b, sort_keys=True)
        rows.append((label, limit, value, str(b.get("source", "")), "ok" if b.get("ok") else "FAIL"))
    return rows
