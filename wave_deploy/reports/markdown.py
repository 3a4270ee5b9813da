"""report.md: a person-readable rendering of one device's report.json (a pure function of it)."""

from __future__ import annotations

import dataclasses

from wave_deploy.reports import init_table
from wave_deploy.reports.fmt import check_rows, fmt_bytes, fmt_num, fmt_pct, power_mode_text
from wave_deploy.reports.schema import dump, parse_build_report
from wave_deploy.spec import ViTSpec

SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(ViTSpec))  # in ViTSpec's order

STATS = ("p50", "p90", "p95", "p99", "mean", "min", "max")


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
    model_px, profile_px = (r.get("spec") or {}).get("img_size"), p.get("input_size_px")
    if model_px and profile_px and model_px != profile_px:
        rows.append(
            ["input size of the model (and its bank)", f"**{model_px} px: differs from the profile's**"]
        )
    if p.get("overrides"):  # reports written before --set existed have no such key
        rows.append(["profile fields set for this build", ", ".join(f"`{o}`" for o in p["overrides"])])
    return ["## Device", "", *_table(["", ""], rows)]


def _md_verdict(r: dict) -> list[str]:
    failed = ", ".join(r["failed_budgets"]) or "none"
    head = ["## Budget verdict", "", f"**{r['verdict'].upper()}** (failed checks: {failed})", ""]
    rows = check_rows(r["budgets"])
    table = _table(["budget", "limit", "value", "predicted", "source", "evidence", "result"],
                   [row[:7] for row in rows])  # fmt: skip
    lat = r["budgets"].get("latency") or {}
    required = lat.get("required_evidence") or "any"
    legend = (f"Evidence: what each value was judged on (device > calibrated > extrapolated > analytic; host: "
              f"the build machine where the profile says it is the device; validation: measured on held-out "
              f"images). Required: **{required}**.")  # fmt: skip
    notes = [f"- note ({row.budget}): {row.note}" for row in rows if row.note]
    return head + table + [legend, ""] + notes + ([""] if notes else [])


def _md_model(r: dict) -> list[str]:
    spec, sel, costs, pred = r["spec"], r["selection"], r.get("costs") or {}, r["prediction"]
    keys = SPEC_FIELDS
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
            f"{pred.get('source', '?')}). The Pareto frontier ({_frontier_axis(sel)} vs predicted latency):"
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
        row = [c["depth"], c["embed_dim"], c["num_heads"], c.get("in_chans", "?"), c.get("num_classes", "?")]
        row += [gflops, mparams, fmt_num(c["latency_ms"])]
        rows.append(row + [fmt_num(c.get("memory_mib"), 1), fmt_pct(c.get("accuracy")), status])
    pct = pred.get("percentile", "?")
    header = ["depth", "embed_dim", "heads", "ch", "classes", "GFLOPs", "params M", f"pred. {pct} ms", "MiB"]
    header += ["sliced acc."]
    return out + _table(header + ["status"], rows)


def _frontier_axis(sel: dict) -> str:
    return "sliced accuracy" if sel.get("objective") == "accuracy" else "FLOPs"


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
    notes = (r.get("selection") or {}).get("notes") or []  # e.g. a latency extrapolated beyond calibration
    out += [f"- note: {n}" for n in notes] + ([""] if notes else [])
    cols = [(n, b) for n, b in (("build machine (NOT the target)", local), ("on the device", device)) if b]
    if not cols:
        return out + ["No latency was measured.", ""]
    stats = [(name, b, b["latency"]) for name, b in cols]  # each measurement's LatencyStats
    rows = [[s] + [fmt_num(lat.get(f"{s}_ms")) for _, _, lat in stats] for s in STATS]
    rows.append(["throughput (img/s)"] + [fmt_num(lat.get("throughput_img_per_s"), 1) for _, _, lat in stats])
    out += _table(["ms"] + [n for n, _ in cols], rows)
    for name, b, lat in stats:
        out.append(
            f"- {name}: {b.get('what') or b.get('source', '')}; {lat.get('runtime')} on {lat.get('hardware')}, "
            f"batch {lat.get('batch')}, {lat.get('iterations')} timed calls after {lat.get('warmup')} warm-up "
            f"({lat.get('timed')}), threads {lat.get('threads') or '—'}."
        )
    out.append("")
    if device:
        measured = device["latency"].get(f"{pct}_ms")
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
    acc, training = r.get("accuracy") or {}, r.get("training") or {}
    out = _md_memory(r) + ["## Accuracy", ""]
    rows = [
        ["validation accuracy", f"{fmt_pct(acc.get('val_acc'))} on {acc.get('dataset', '?')}"],
        ["at initialization (before training)", fmt_pct(acc.get("val_acc_at_init"))],
        ["ONNX top-1 agreement with PyTorch", fmt_pct(acc.get("onnx_top1_agreement"))],
    ]
    out += _table(["", ""], rows) if acc else ["Accuracy was not measured.", ""]
    out += _md_variant_accuracy(r)
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


def _md_memory(r: dict) -> list[str]:
    """Predicted memory beside what was measured (a merged device report, or the build host standing in)."""
    pred, checks = r["prediction"], r.get("budgets") or {}
    memory = ((r.get("measured") or {}).get("device") or {}).get("memory") or {}
    rows = []
    for name, what, predicted in (("memory", "runtime memory", pred.get("memory_mib")),
                                  ("build_memory", "engine build peak", pred.get("build_memory_mib"))):  # fmt: skip
        check = checks.get(name) or {}
        if predicted is None and not check:
            continue
        measured = check.get("value_mib") if check.get("evidence") in ("device", "host") else None
        rows.append([what, fmt_num(predicted, 1, "MiB"), fmt_num(measured, 1, "MiB"),
                     check.get("source", "—") if measured is not None else "not measured"])  # fmt: skip
    out = ["## Memory", "", *_table(["", "predicted", "measured", "measured by"], rows)]
    extra = {k: v for k, v in memory.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if extra:
        out += ["Device memory figures: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(extra.items())), ""]
    return out


def _md_variant_accuracy(r: dict) -> list[str]:
    """Top-1 of every exported variant on the validation split, its drop from ONNX fp32 and its gate; then the
    device's own top-1 where a device report was merged."""
    variants = (r.get("accuracy") or {}).get("variants") or []
    device = (r.get("measured") or {}).get("device") or {}
    if not variants and not device.get("accuracy"):
        return []
    rows = []
    for v in variants:
        gate = "—" if v.get("max_drop_points") is None else f"<= {v['max_drop_points']:g}"
        drop = "—" if v.get("drop_points") is None else f"{v['drop_points']:+.2f}"
        rows.append([v["variant"], fmt_pct(v.get("top1")), v.get("n_images") or "—", drop,
                     _interval(v.get("gate")), gate, _gate_result(v)])  # fmt: skip
    out = [("Top-1 of every variant on the validation split (drop in points from the row above it for ONNX "
           "fp32, from ONNX fp32 for fp16/int8; the interval is the drop's exact 90% interval, from the images "
           "whose correctness changed: a gate fails only when the drop exceeds its allowance with 95% "
           "confidence, and does not judge below its minimum of images, docs/export.md):"), ""]  # fmt: skip
    out += _table(["variant", "top-1", "images", "drop (points)", "interval", "gate", "result"], rows)
    dev_acc = device.get("accuracy") or {}
    if dev_acc.get("top1") is not None:
        device_gate = dev_acc.get("gate") or {}
        vs = ""
        if dev_acc.get("build_machine_top1") is not None:
            why = device_gate.get("reason", "not compared image by image")
            vs = f"; against the build machine's {fmt_pct(dev_acc['build_machine_top1'])} on the same images: {why}"
        out += [(f"On the device ({device.get('precision', '?')}): top-1 {fmt_pct(dev_acc['top1'])} on "
                f"{dev_acc.get('n_images', '?')} images of the bundle's labelled subset{vs}."), ""]  # fmt: skip
    return out


def _interval(gate: dict | None) -> str:
    lo_hi = (gate or {}).get("interval_points")
    return "—" if not lo_hi else f"{lo_hi[0]:+.2f}..{lo_hi[1]:+.2f}"


def _gate_result(v: dict) -> str:
    """ok, FAIL (and where the file went), or "not enough data" (kept, not judged)."""
    decision = (v.get("gate") or {}).get("decision")
    if decision == "not enough data":
        return f"not judged: {v.get('n_images')} images < {(v.get('gate') or {}).get('min_images')} (kept)"
    result = "—" if v.get("passed") is None else ("ok" if v["passed"] else "FAIL")
    if v.get("passed") is False and v.get("file"):
        result += f" (moved to {v['file']})"
    return result


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


def _md_failure(r: dict) -> list[str]:
    f = r.get("failure")
    if not f:
        return []
    return [
        f"**BUILD FAILED** at stage `{f['stage']}` (exit {f['exit_code']}, {f['error']}): {f['message']}",
        "",
    ]


def render_markdown(report: dict) -> str:
    """A person-readable report.md for one device build (a failed build gets render_failure_markdown)."""
    r = dump(parse_build_report(report, "report"))
    if r["spec"] is None:
        return render_failure_markdown(r)
    out = [f"# {r['profile']['name']}: {r['spec_name']}{_deployed(r)} — {r['verdict'].upper()}", ""]
    if r.get("created"):
        deploys = f"Deploys {r['profile']['deployed']}. " if r["profile"].get("deployed") else ""
        out += [f"Built {r['created']}. {deploys}Profile: {r['profile'].get('description', '')}", ""]
    out += _md_failure(r)
    sections = (_md_device, _md_verdict, _md_model, init_table.markdown, _md_latency, _md_memory_accuracy)
    for section in (*sections, _md_files):
        out += section(r)
    return "\n".join(out)


def _deployed(r: dict) -> str:
    """The headline's runtime and precision as deployed (Target.describe(), recorded in report.json)."""
    deployed = r["profile"].get("deployed")
    if not deployed:  # a report from before it was recorded: runtime and precision as the profile names them
        runtime, precision = r["profile"].get("runtime"), r["profile"].get("precision")
        deployed = f"{runtime} {precision}" if runtime and precision else None
    return f" on {deployed}" if deployed else ""


def render_failure_markdown(report: dict) -> str:
    """report.md of a build that failed before it had a model to report on."""
    r = dump(parse_build_report(report, "report"))
    out = [f"# {r['profile']['name']}: FAIL", ""]
    if r.get("created"):
        out += [f"Built {r['created']}. {r['profile'].get('description', '')}", ""]
    out += _md_failure(r)
    out += ["No model of this run passed its gates: earlier results in this directory are stale.", ""]
    moved = (r.get("artifacts") or {}).get("moved_aside")
    if moved:
        out += [
            f"The earlier run's models, bundle and engine were moved to `{moved}` (not this build's).",
            "",
        ]
    return "\n".join(out + _md_device(r))
