"""The offline multi-device HTML index (`wave-deploy report --html`) and the per-device rows behind it
and behind `wave-deploy report --json`: inline CSS, plots as data URIs, no scripts, no network."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from wave_deploy.reports import init_table
from wave_deploy.reports.files import REPORT_MD, report_dirs
from wave_deploy.reports.fmt import check_rows, fmt_num, fmt_pct, power_mode_text
from wave_deploy.reports.plots import PLOTS
from wave_deploy.reports.verify import load_verified_report


def index_row(out_dir: str | Path, report: dict) -> dict:
    """One device's figures for the index (and for `wave-deploy report --json`)."""
    pred, budgets, measured = report["prediction"] or {}, report["budgets"] or {}, report["measured"]
    local = (measured.get("local") or {}).get("latency") or {}  # LatencyStats of each measurement
    device = (measured.get("device") or {}).get("latency") or {}
    failure = report.get("failure")
    lat = budgets.get("latency") or {}
    pct = pred.get("percentile") or lat.get("percentile")
    at_pct = device.get(f"{pct}_ms")
    return {
        "dir": str(out_dir),
        "profile": report["profile"]["name"],
        "device": report["profile"].get("device_name"),
        "runtime": report["profile"].get("runtime"),
        "precision": report["profile"].get("precision"),
        "spec_name": report["spec_name"] or "no model",
        "in_chans": (report.get("spec") or {}).get("in_chans"),
        "num_classes": (report.get("spec") or {}).get("num_classes"),
        "img_size": (report.get("spec") or {}).get("img_size"),
        "init": (report.get("training") or {}).get("init"),
        "params": (report.get("costs") or {}).get("params"),
        "percentile": pct,
        "batch": pred.get("batch"),
        "predicted_ms": pred.get("latency_ms"),
        "prediction_source": pred.get("source"),
        "budget_ms": lat.get("budget_ms"),
        "budget_judged_on": lat.get("source"),
        "local_p50_ms": local.get("p50_ms"),
        "local_p99_ms": local.get("p99_ms"),
        "local_hardware": local.get("hardware"),
        "device_p50_ms": device.get("p50_ms"),
        "device_p99_ms": device.get("p99_ms"),
        "device_at_percentile_ms": at_pct,
        "predicted_over_measured": (pred.get("latency_ms") or 0) / at_pct if at_pct else None,
        "val_acc": (report.get("accuracy") or {}).get("val_acc"),
        "predicted_acc": ((report.get("selection") or {}).get("chosen") or {}).get("accuracy"),
        "verdict": report["verdict"],
        "failed_budgets": report["failed_budgets"],
        "failure": failure,  # {"stage", "exit_code", "error", "message"} when the build failed
        "evidence": {name: check.get("evidence") for name, check in budgets.items() if check},
        "required_evidence": lat.get("required_evidence"),
        "predicted_memory_mib": pred.get("memory_mib"),
        "memory_mib": (budgets.get("memory") or {}).get("value_mib"),
        "memory_judged_on": (budgets.get("memory") or {}).get("evidence"),
    }


def index_data(dirs: list[str | Path]) -> list[dict]:
    """index_row of every device output directory (a parent folder expands to its device folders), each report
    judged again from its evidence and its files re-hashed (reports.verify)."""
    return [index_row(d, load_verified_report(d)) for d in report_dirs(dirs)]


def _index_device(out_dir: Path, report: dict, out_path: str | Path | None) -> dict:
    """What plots.index_html shows of one device: its row, facts, budgets, plot PNGs and report.md link."""
    x = index_row(out_dir, report)
    power = power_mode_text(report["profile"].get("power_mode"))
    failure = report.get("failure")
    facts = []
    if failure:
        facts.append(
            f"BUILD FAILED at stage {failure['stage']} (exit {failure['exit_code']}): {failure['message']}"
        )
    model_px, profile_px = (report.get("spec") or {}).get("img_size"), report["profile"].get("input_size_px")
    if model_px and profile_px and model_px != profile_px:
        facts.append(f"input size: the model (and its bank) takes {model_px} px, the profile's budgets are for "
                     f"{profile_px} px")  # fmt: skip
    facts += [
        f"{x['device']} · {x['runtime']} {x['precision']} · power mode {power}",
        f"latency predicted by {x['prediction_source']}; latency budget judged on: {x['budget_judged_on']}",
        f"local figures measured on {x['local_hardware'] or '—'} (the build machine, not the target)",
    ]
    facts += [f"note: {n}" for n in (report.get("selection") or {}).get("notes") or []]
    plots = {}
    for name, render in PLOTS.items():
        rel = ((report.get("artifacts") or {}).get("plots") or {}).get(name)
        path = out_dir / rel if rel else None
        plots[name] = path.read_bytes() if path and path.is_file() else render(report)  # or re-render
    href = None
    if out_path is not None:
        href = os.path.relpath(out_dir.resolve() / REPORT_MD, Path(out_path).resolve().parent)
    return {"row": x, "facts": facts, "budgets": report["budgets"] or {}, "plots": plots, "report_md": href,
            "init": init_table.html_lines(report)}  # fmt: skip


def render_index(dirs: list[str | Path], out_path: str | Path | None = None) -> str:
    """One self-contained HTML page over many device output directories (inline CSS, plots as data URIs,
    no scripts). With ``out_path``, each device links to its report.md relative to where the page goes."""
    return index_html([_index_device(d, load_verified_report(d), out_path) for d in report_dirs(dirs)])


# --- the page ---------------------------------------------------------------------------

INDEX_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:0} .muted{color:#555;font-size:.9em}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-size:.88em;margin:8px 0 16px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;white-space:normal;vertical-align:bottom} .l{text-align:left}
td.wrap{white-space:normal;min-width:10em;max-width:14em}
.pass{color:#116b2f;font-weight:600} .fail{color:#b00020;font-weight:600}
section{border:1px solid #ddd;border-radius:6px;padding:14px 16px;margin:18px 0}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
figure{margin:0} figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}
"""
INDEX_COLUMNS = (
    *("profile", "verdict", "device", "spec", "input, classes", "params M", "predicted / budget ms"),
    "local p50 ms",
    *("local p99 ms", "device p50 ms", "device p99 ms", "pred./device", "val acc"),
)
CHECK_COLUMNS = ("budget", "limit", "value", "predicted", "source", "evidence", "result")
INDEX_NOTE = (
    "Predicted latency is at the percentile and batch of each latency budget. Local figures were measured "
    "on the build machine, not on the target; device figures come from a merged device_report.json; "
    "pred./device = predicted / measured on the device, at the budget percentile. Evidence: what each budget "
    "was judged on (device > calibrated > extrapolated > analytic; host: the build machine where the profile "
    "says it is the device; validation: accuracy measured on held-out images)."
)


def _td(value, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(str(value))}</td>"


def _th(value, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<th{attr}>{html.escape(str(value))}</th>"


def _summary_row(x: dict) -> str:
    anchor = html.escape(f"dev-{x['profile']}", quote=True)
    failed = f" ({', '.join(x['failed_budgets'])})" if x["failed_budgets"] else ""
    if x.get("failure"):
        failed = f" (build failed: exit {x['failure']['exit_code']})"
    cells = [f'<td class="l"><a href="#{anchor}">{html.escape(x["profile"])}</a></td>']
    cells += [_td(x["verdict"].upper() + failed, f"l {x['verdict']}"), _td(x["device"] or "", "l wrap")]
    task = (
        "—" if x.get("in_chans") is None else f"{x['in_chans']} ch × {x['img_size']} px, {x['num_classes']}"
    )
    cells += [_td(x["spec_name"], "l"), _td(task), _td(fmt_num((x["params"] or 0) / 1e6, 3))]
    budget = "—" if x["budget_ms"] is None else f"{x['budget_ms']:g}"
    cells += [_td(f"{fmt_num(x['predicted_ms'])} / {budget} ({x['percentile']})")]
    cells += [_td(fmt_num(x[k])) for k in ("local_p50_ms", "local_p99_ms", "device_p50_ms", "device_p99_ms")]
    acc = fmt_pct(x["val_acc"]) + (
        f" (sliced {fmt_pct(x['predicted_acc'])})" if x.get("predicted_acc") else ""
    )
    cells += [_td(fmt_num(x["predicted_over_measured"], 2)), _td(acc)]
    return "<tr>" + "".join(cells) + "</tr>"


def _device_section(d: dict) -> list[str]:
    x, verdict = d["row"], d["row"]["verdict"]
    anchor = html.escape(f"dev-{x['profile']}", quote=True)
    out = [
        (
            f'<section id="{anchor}"><h2>{html.escape(x["profile"])}: {html.escape(x["spec_name"])} '
            f'<span class="{verdict}">{verdict.upper()}</span></h2>'
        )
    ]
    link = (
        f'<br><a href="{html.escape(d["report_md"], quote=True)}">report.md</a>' if d.get("report_md") else ""
    )
    out.append('<p class="muted">' + "<br>".join(html.escape(f) for f in d["facts"]) + link + "</p>")
    head = "".join(_th(c, "l" if c in ("budget", "source", "evidence") else "") for c in CHECK_COLUMNS)
    out.append(f'<div class="scroll"><table><tr>{head}</tr>')
    rows = check_rows(d["budgets"] or {})
    for row in rows:
        cells = _td(row.budget, "l") + _td(row.limit) + _td(row.value) + _td(row.predicted)
        cells += _td(row.source, "l") + _td(row.evidence, "l")
        out.append(f"<tr>{cells}{_td(row.result, 'pass' if row.result == 'ok' else 'fail')}</tr>")
    out.append("</table></div>")
    notes = [f"{row.budget}: {row.note}" for row in rows if row.note]
    if notes:
        out.append('<p class="muted">' + "<br>".join(html.escape(n) for n in notes) + "</p>")
    out += d.get("init") or []  # build --compare-init's table
    out.append('<div class="plots">')
    for name, png in d["plots"].items():
        if png:
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            alt = html.escape(f"{name} plot of {x['profile']}", quote=True)
            out.append(f'<figure><img src="{uri}" alt="{alt}"><figcaption>{name}</figcaption></figure>')
    return out + ["</div></section>"]


def index_html(devices: list[dict]) -> str:
    """A self-contained page: inline CSS, PNGs as data URIs, no scripts, no external references.

    Each device: row (reports.index_row), facts (lines of text), budgets (report["budgets"]),
    plots {name: PNG bytes | None}, report_md (a relative link, or None).
    """
    n_fail = sum(d["row"]["verdict"] == "fail" for d in devices)
    head = "".join(_th(c, "l" if i < 4 else "") for i, c in enumerate(INDEX_COLUMNS))
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>wave-deploy report: {len(devices)} device(s)</title><style>{INDEX_CSS}</style></head><body>",
        f"<h1>wave-deploy: {len(devices)} device(s), {len(devices) - n_fail} pass, {n_fail} fail</h1>",
        f'<p class="muted">{html.escape(INDEX_NOTE)}</p>',
        f'<div class="scroll"><table><tr>{head}</tr>',
        *(_summary_row(d["row"]) for d in devices),
        "</table></div>",
    ]
    for d in devices:
        page += _device_section(d)
    return "\n".join(page + ["</body></html>"]) + "\n"
