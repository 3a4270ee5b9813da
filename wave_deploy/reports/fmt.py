"""Number formatting and the budget table rows shared by report.md, the HTML index and the CLI."""

from __future__ import annotations

import json
from typing import NamedTuple

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


class CheckRow(NamedTuple):
    """One budget check as report.md, the HTML index and the CLI show it."""

    budget: str
    limit: str
    value: str
    predicted: str  # the prediction a measurement replaced ("—" where the value is the prediction)
    source: str
    evidence: str  # the level, and the requirement where it was not met
    result: str  # "ok" | "FAIL" | "FAIL (evidence)"
    note: str | None


def check_rows(checks: dict) -> list[CheckRow]:
    """One CheckRow per budget check, in BUDGET_ORDER (then any others)."""
    rows = []
    for name in [n for n in BUDGET_ORDER if checks.get(n)] + sorted(set(checks) - set(BUDGET_ORDER)):
        b = checks[name]
        if not isinstance(b, dict):
            continue
        predicted = "—"
        if "budget_ms" in b:
            label = f"{name} ({b.get('percentile', '?')})"
            limit, value = f"<= {b['budget_ms']:g} ms", fmt_num(b.get("value_ms"), 3, "ms")
            if b.get("predicted_ms") is not None:
                predicted = fmt_num(b["predicted_ms"], 3, "ms")
        elif "budget_mib" in b:
            label, limit, value = name, f"<= {b['budget_mib']:g} MiB", fmt_num(b.get("value_mib"), 1, "MiB")
            if b.get("predicted_mib") is not None:
                predicted = fmt_num(b["predicted_mib"], 1, "MiB")
        elif "min" in b:
            label, limit, value = name, f">= {fmt_pct(b['min'])}", fmt_pct(b.get("value"))
            if b.get("validation_value") is not None:
                predicted = f"{fmt_pct(b['validation_value'])} (validation split)"
        else:
            label, limit, value = name, "?", json.dumps(b, sort_keys=True)
        evidence = str(b.get("evidence") or "—")
        if b.get("evidence_ok") is False:
            evidence += f" ({b.get('required_evidence')} required)"
        result = "ok" if b.get("ok") else ("FAIL (evidence)" if b.get("evidence_ok") is False else "FAIL")
        rows.append(CheckRow(label, limit, value, predicted, str(b.get("source", "")), evidence, result,
                             b.get("note")))  # fmt: skip
    return rows
