"""Build reports: report.json -> report.md and plots; one offline HTML index over many device output
directories (DESIGN section 7, docs/report-schema.md).

wave_deploy.report_assembly builds the report dict during a build; this module renders and compares it;
wave_deploy.device_reports merges the on-device kit's measurements into it. Budget verdicts are
recomputed from ``report["budgets"]`` by ``budget_verdict`` so that a merged device measurement can turn a
predicted pass into a measured fail (or the reverse).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import write_json, write_text
from wave_deploy.plots import (
    BUDGET_ORDER,
    PLOTS,
    budget_rows,
    fmt_bytes,
    fmt_num,
    fmt_pct,
    index_html,
    power_mode_text,
    write_plots,
)

SCHEMA_VERSION = 1
REPORT_JSON, REPORT_MD, PLOTS_DIR = "report.json", "report.md", "plots"
REQUIRED = {"profile": dict, "spec": dict, "spec_name": str, "selection": dict, "prediction": dict,
            "measured": dict, "budgets": dict, "verdict": str, "failed_budgets": list}  # fmt: skip
STATS = ("p50", "p90", "p95", "p99", "mean", "min", "max")


# --- loading and validation -----------------------------------------------------------------------


def validate_report(report: object, where: str) -> dict:
    """The report dict if it has the schema's version, kind and required sections; else InvalidInputError."""
    if not isinstance(report, dict):
        raise InvalidInputError(f"{where}: a report must be a JSON object")
    if report.get("kind") != "build_report" or report.get("schema_version") != SCHEMA_VERSION:
        raise InvalidInputError(
            f"{where}: not a wave-deploy build report of schema_version {SCHEMA_VERSION} "
            f"(kind={report.get('kind')!r}, schema_version={report.get('schema_version')!r})"
        )
    bad = [key for key, kind in REQUIRED.items() if not isinstance(report.get(key), kind)]
    if bad or not isinstance(report["profile"].get("name"), str):
        raise InvalidInputError(f"{where}: report lacks or mistypes {', '.join(bad or ['profile.name'])}")
    if report["verdict"] not in ("pass", "fail"):
        raise InvalidInputError(f"{where}: verdict must be 'pass' or 'fail', got {report['verdict']!r}")
    return report


def read_json(path: Path, what: str) -> object:
    """A user-supplied JSON file (``what`` names it in errors); InvalidInputError if missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no {what} there") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: unreadable {what}: {exc}") from None


def load_report(out_dir: str | Path) -> dict:
    """report.json of one device output directory, validated."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InvalidInputError(f"{out_dir}: not a directory (expected a device output directory)")
    return validate_report(read_json(out_dir / REPORT_JSON, "report.json"), str(out_dir))


def report_dirs(dirs: list[str | Path]) -> list[Path]:
    """Device output directories: each DIR with a report.json, or a folder whose subfolders have one."""
    found: list[Path] = []
    for d in map(Path, dirs):
        if not (d / REPORT_JSON).is_file() and d.is_dir():
            children = sorted(c for c in d.iterdir() if (c / REPORT_JSON).is_file())
            if children:
                found.extend(children)
                continue
        found.append(d)  # load_report names it if it is not a device output directory
    return found


def budget_verdict(budgets: dict) -> tuple[str, list[str]]:
    """('pass' | 'fail', names of broken budgets in BUDGET_ORDER, then any others)."""
    names = [n for n in BUDGET_ORDER if n in budgets] + sorted(set(budgets) - set(BUDGET_ORDER))
    failed = [n for n in names if isinstance(budgets[n], dict) and not budgets[n].get("ok", False)]
    return ("fail" if failed else "pass"), failed


def _table(header: list[str], rows: list) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out + [""]


# --- report.md ------------------------------------------------------------------------------------------


def _md_device(r: dict) -> list[str]:
    p = r["profile"]
    rows = [
        ["device", f"{p.get('device_name', '?')} ({p.get('accelerator', '?')})"],
        ["runtime, precision", f"{p.get('runtime', '?')}, {p.get('precision', '?')}"],
        ["power mode (profile)", power_mode_text(p.get("power_mode"))],
        ["input size the budgets were set for", f"{p.get('input_size_px', '?')} px"],
        ["engine built on the device", "yes (bundle)" if p.get("engine_built_on_device") else "no"],
    ]
    if p.get("overrides"):  # reports written before --set existed have no such key
        rows.append(["profile fields set for this build", ", ".join(f"`{o}`" for o in p["overrides"])])
    return ["## Device", "", *_table(["", ""], rows)]


def _md_verdict(r: dict) -> list[str]:
    failed = ", ".join(r["failed_budgets"]) or "none"
    head = ["## Budget verdict", "", f"**{r['verdict'].upper()}** (broken budgets: {failed})", ""]
    return head + _table(["budget", "limit", "value", "source", "result"], budget_rows(r["budgets"]))


def _md_model(r: dict) -> list[str]:
    spec, sel, costs, pred = r["spec"], r["selection"], r.get("costs") or {}, r["prediction"]
    keys = (
        "depth",
        "embed_dim",
        "num_heads",
        "mlp_ratio",
        "patch_size",
        "img_size",
        "in_chans",
        "num_classes",
    )
    out = ["## Chosen model", "", f"`{r['spec_name']}`: " + ", ".join(f"{k} {spec.get(k)}" for k in keys), ""]
    if costs:
        out += [
            (
                f"{costs.get('params', 0) / 1e6:.3f} M parameters, {costs.get('flops', 0) / 1e9:.4f} GFLOPs "
                f"({costs.get('macs', 0) / 1e9:.4f} GMACs) per image, "
                f"{fmt_bytes(costs.get('weight_bytes'))} of weights."
            ),
            "",
        ]
    out += [
        (
            f"Why: the most **{sel.get('objective', '?')}** among the {sel.get('feasible', '?')} of "
            f"{sel.get('candidates', '?')} candidate sizes that fit every budget (latency predicted by "
            f"{pred.get('source', '?')}). The Pareto frontier (FLOPs vs predicted latency):"
        ),
        "",
    ]
    chosen, rows = sel.get("chosen") or {}, []
    for c in sel.get("frontier") or []:
        if all(c.get(k) == chosen.get(k) for k in ("depth", "embed_dim", "num_heads")):
            status = "**chosen**"
        else:
            status = "fits" if c.get("feasible") else "; ".join(c.get("reasons", []))
        gflops, mparams = fmt_num(c["flops"] / 1e9, 4), fmt_num(c["params"] / 1e6, 3)
        row = [c["depth"], c["embed_dim"], c["num_heads"], gflops, mparams, fmt_num(c["latency_ms"])]
        rows.append(row + [fmt_num(c.get("memory_mib"), 1), status])
    pct = pred.get("percentile", "?")
    header = ["depth", "embed_dim", "heads", "GFLOPs", "params M", f"pred. {pct} ms", "MiB", "status"]
    return out + _table(header, rows)


def _md_latency(r: dict) -> list[str]:
    pred, budget = r["prediction"], r["budgets"].get("latency") or {}
    local, device = r["measured"].get("local"), r["measured"].get("device")
    pct = pred.get("percentile", "?")
    limit = "none" if budget.get("budget_ms") is None else f"{budget['budget_ms']:g} ms"
    out = [
        "## Latency",
        "",
        (
            f"Predicted {pct} at batch {pred.get('batch', '?')}: "
            f"**{fmt_num(pred.get('latency_ms'), 3, 'ms')}** (source: {pred.get('source', '?')}); "
            f"budget {limit}, judged on: {budget.get('source', '—')}."
        ),
        "",
    ]
    cols = [(n, b) for n, b in (("build machine (NOT the target)", local), ("on the device", device)) if b]
    if not cols:
        return out + ["No latency was measured.", ""]
    rows = [[s] + [fmt_num(b.get(f"{s}_ms")) for _, b in cols] for s in STATS]
    rows.append(["throughput (img/s)"] + [fmt_num(b.get("throughput_img_per_s"), 1) for _, b in cols])
    out += _table(["ms"] + [n for n, _ in cols], rows)
    for name, b in cols:
        out.append(
            f"- {name}: {b.get('what') or b.get('source', '')}; {b.get('runtime')} on {b.get('hardware')}, "
            f"batch {b.get('batch')}, {b.get('iterations')} timed calls after {b.get('warmup')} warm-up "
            f"({b.get('timed')}), threads {b.get('threads') or '—'}."
        )
    out.append("")
    if device:
        measured = device.get(f"{pct}_ms")
        ratio = fmt_num(pred["latency_ms"] / measured, 2) if measured and pred.get("latency_ms") else "—"
        mode = power_mode_text(device["power_mode"]) if device.get("power_mode") else "not reported"
        out += [
            (
                f"Device run: power mode {mode}, precision {device.get('precision', '?')}, "
                f"parity max abs error {device.get('parity_max_abs_err')}. "
                f"Predicted / measured {pct}: {ratio}."
            ),
            "",
        ]
        out += [f"- note: {n}" for n in device.get("notes", [])] + ([""] if device.get("notes") else [])
    return out


def _md_memory_accuracy(r: dict) -> list[str]:
    pred, acc, training = r["prediction"], r.get("accuracy") or {}, r.get("training") or {}
    out = [
        "## Memory",
        "",
        (
            f"Predicted runtime memory {fmt_num(pred.get('memory_mib'), 1, 'MiB')}; engine build peak "
            f"{fmt_num(pred.get('build_memory_mib'), 0, 'MiB')} (where the engine is built on the device)."
        ),
        "",
        "## Accuracy",
        "",
    ]
    rows = [
        ["validation accuracy", f"{fmt_pct(acc.get('val_acc'))} on {acc.get('dataset', '?')}"],
        ["at initialization (before training)", fmt_pct(acc.get("val_acc_at_init"))],
        ["ONNX top-1 agreement with PyTorch", fmt_pct(acc.get("onnx_top1_agreement"))],
    ]
    out += _table(["", ""], rows) if acc else ["Accuracy was not measured.", ""]
    rows = []
    for name in ("scaler", "dense"):
        phase = training.get(f"{name}_phase")
        if phase:
            last = (phase.get("curve") or [{}])[-1]
            rows.append(
                [name, phase.get("steps"), fmt_num(last.get("train_loss"), 4), fmt_pct(last.get("val_acc"))]
            )
    return out + (
        _table(["training phase", "steps", "last train loss", "last val accuracy"], rows) if rows else []
    )


def _md_files(r: dict) -> list[str]:
    parity, sizes, arts = r.get("parity") or {}, r.get("sizes") or {}, r.get("artifacts") or {}
    out = [
        "## Parity",
        "",
        f"ONNX fp32 vs PyTorch max abs error: {parity.get('onnx_fp32_max_abs_err', '—')}",
        "",
    ]
    rows = []
    for name, v in sorted((parity.get("variants") or {}).items()):
        tol = ", ".join(f"{k} {t:g}" for k, t in sorted((v.get("tolerance") or {}).items()))
        passed = {True: "ok", False: "FAIL"}.get(v.get("passed"), "—")
        rows.append([name, v.get("method", "—"), v.get("max_abs_err", "—"), tol or "—",
                     fmt_pct(v.get("top1_agreement")), passed])  # fmt: skip
    if rows:
        out += _table(
            ["variant", "method", "max abs err vs fp32", "tolerance", "top-1 agreement", "parity"], rows
        )
    rows = [
        ["checkpoint", fmt_bytes(sizes.get("checkpoint_bytes"))],
        ["ONNX", fmt_bytes(sizes.get("onnx_bytes"))],
        ["bundle", fmt_bytes(sizes.get("bundle_bytes"))],
    ]
    out += ["## Sizes", "", *_table(["file", "size"], rows)]
    plots = {k: v for k, v in (arts.get("plots") or {}).items() if v}
    out += ["## Plots", "", *(f"![{k}]({v})" for k, v in plots.items()), ""]
    files = [f"- {k}: [{v}]({v})" for k, v in sorted(arts.items()) if v and not isinstance(v, dict)]
    return out + ["## Artifacts", "", *files, "- report.json: [report.json](report.json)", ""]


def render_markdown(report: dict) -> str:
    """A person-readable report.md for one device build."""
    r = validate_report(report, "report")
    out = [f"# {r['profile']['name']}: {r['spec_name']} — {r['verdict'].upper()}", ""]
    if r.get("created"):
        out += [f"Built {r['created']}. {r['profile'].get('description', '')}", ""]
    for section in (_md_device, _md_verdict, _md_model, _md_latency, _md_memory_accuracy, _md_files):
        out += section(r)
    return "\n".join(out)


def write_report_files(out_dir: str | Path, report: dict) -> list[Path]:
    """Write plots/<name>.png (those the report has data for), report.md and report.json into out_dir, each
    atomically, report.json last; set report["artifacts"]["plots"] to match. Return the written paths."""
    out_dir = Path(out_dir)
    validate_report(report, str(out_dir))
    plots = write_plots(out_dir / PLOTS_DIR, report)
    arts = report.setdefault("artifacts", {})
    arts["plots"] = {name: (f"{PLOTS_DIR}/{name}.png" if path else None) for name, path in plots.items()}
    arts["report_md"] = REPORT_MD
    md = write_text(out_dir / REPORT_MD, render_markdown(report))
    return [p for p in plots.values() if p] + [md, write_json(out_dir / REPORT_JSON, report)]


# --- the multi-device index -----------------------------------------------------------------------------


def index_row(out_dir: str | Path, report: dict) -> dict:
    """One device's figures for the index (and for `wave-deploy report --json`)."""
    pred, budgets, measured = report["prediction"], report["budgets"], report["measured"]
    local, device = measured.get("local") or {}, measured.get("device") or {}
    lat = budgets.get("latency") or {}
    pct = pred.get("percentile") or lat.get("percentile")
    at_pct = device.get(f"{pct}_ms")
    return {
        "dir": str(out_dir),
        "profile": report["profile"]["name"],
        "device": report["profile"].get("device_name"),
        "runtime": report["profile"].get("runtime"),
        "precision": report["profile"].get("precision"),
        "spec_name": report["spec_name"],
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
        "verdict": report["verdict"],
        "failed_budgets": report["failed_budgets"],
    }


def index_data(dirs: list[str | Path]) -> list[dict]:
    """index_row of every device output directory (a parent folder expands to its device folders)."""
    return [index_row(d, load_report(d)) for d in report_dirs(dirs)]


def _index_device(out_dir: Path, report: dict, out_path: str | Path | None) -> dict:
    """What plots.index_html shows of one device: its row, facts, budgets, plot PNGs and report.md link."""
    x = index_row(out_dir, report)
    power = power_mode_text(report["profile"].get("power_mode"))
    facts = [
        f"{x['device']} · {x['runtime']} {x['precision']} · power mode {power}",
        f"latency predicted by {x['prediction_source']}; latency budget judged on: {x['budget_judged_on']}",
        f"local figures measured on {x['local_hardware'] or '—'} (the build machine, not the target)",
    ]
    plots = {}
    for name, render in PLOTS.items():
        rel = ((report.get("artifacts") or {}).get("plots") or {}).get(name)
        path = out_dir / rel if rel else None
        plots[name] = path.read_bytes() if path and path.is_file() else render(report)  # or re-render
    href = None
    if out_path is not None:
        href = os.path.relpath(out_dir.resolve() / REPORT_MD, Path(out_path).resolve().parent)
    return {"row": x, "facts": facts, "budgets": report["budgets"], "plots": plots, "report_md": href}


def render_index(dirs: list[str | Path], out_path: str | Path | None = None) -> str:
    """One self-contained HTML page over many device output directories (inline CSS, plots as data URIs,
    no scripts). With ``out_path``, each device links to its report.md relative to where the page goes."""
    return index_html([_index_device(d, load_report(d), out_path) for d in report_dirs(dirs)])
