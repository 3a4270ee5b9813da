"""`wave-deploy report`: compare device builds, merge on-device measurements, write the HTML index."""

from __future__ import annotations

import click

from wave_deploy.cli.output import console, is_quiet, print_json, table
from wave_deploy.errors import BudgetBrokenError, InsufficientEvidenceError, UsageError
from wave_deploy.fileio import check_writable_file, write_text
from wave_deploy.pipeline.results import unproven_budgets
from wave_deploy.reports import index_data, load_report, render_index, report_dirs
from wave_deploy.reports.merge import merge_device_report
from wave_deploy.reports.verify import expect_manifest, manifest_sha256


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(r: dict) -> list[str]:
    """One device's table row; a failed build shows its stage, exit code and message instead of figures."""
    if r.get("failure"):
        f = r["failure"]
        why = f"fail: build failed at {f['stage']} (exit {f['exit_code']}): {f['message']}"
        return [f"{r['profile']}\n{r['spec_name']}", "", "", "", "", "", "", "", why]
    task = "" if r.get("in_chans") is None else f"{r['in_chans']} ch, {r['num_classes']}"
    return [
        f"{r['profile']}\n{r['spec_name']}",
        task,
        _fmt((r["params"] or 0) / 1e6, 2),
        f"{_fmt(r['predicted_ms'])} / {_fmt(r['budget_ms'], 2)} {r['percentile']}",
        f"{_fmt(r['local_p50_ms'])} / {_fmt(r['local_p99_ms'])}",
        f"{_fmt(r['device_p50_ms'])} / {_fmt(r['device_p99_ms'])}" if r["device_p50_ms"] else "",
        _fmt(r["predicted_over_measured"], 2),
        "" if r["val_acc"] is None else f"{100 * r['val_acc']:.1f} %",
        r["verdict"] + (f" ({', '.join(r['failed_budgets'])})" if r["failed_budgets"] else ""),
    ]


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(), metavar="DIR...")
@click.option(
    "--html",
    "html_out",
    type=click.Path(),
    default=None,
    help="Write one self-contained HTML index (inline CSS, embedded plots, no network) to this file.",
)
@click.option(
    "--device-report",
    type=click.Path(dir_okay=False),
    default=None,
    help="Merge this device_report.json (from the bundle's run_on_device.py) into DIR first (one DIR only): "
    "the latency budget is then judged on the device-measured percentile.",
)
@click.option(
    "--fail-on-budget",
    "gate",
    is_flag=True,
    help="Exit 8 when any device's verdict is fail, 9 when every failure is a budget judged on weaker "
    "evidence than its report's recorded requirement (default: report only, exit 0).",
)
@click.option(
    "--expect-manifest",
    "pins",
    multiple=True,
    metavar="SHA256",
    help="Exit 3 unless each DIR's manifest.json has one of these sha256 (repeatable; `build --json` prints "
    "each device's as manifest_sha256): binds a cached directory to the build that made it. Checked before "
    "--device-report merges, which records a new manifest (printed with --json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the index data as one JSON object on stdout.")
def report(dirs, html_out, device_report, gate, pins, as_json):
    """Summarize the device output directories DIR... (each holding a build's report.json; a folder whose
    subfolders hold them, such as artifacts/, stands for all of them).

    Prints a table (or --json), optionally writes the HTML index (--html) and merges a device_report.json
    (--device-report). Exits 0 even when a verdict fails: it reports, `wave-deploy build` gates; pass
    --fail-on-budget to exit 8 instead. Every verdict is judged again from the evidence report.json records
    and every file it rests on is hashed again against manifest.json: a DIR without a valid report.json, or
    whose report or files do not match (an edited file), exits 3, naming the file.
    """

    if html_out:
        check_writable_file(html_out, "--html")  # before any work: exit 3 naming the path
    for pinned in report_dirs(list(dirs)) if pins else []:
        expect_manifest(pinned, {p.lower() for p in pins})
    merged = None
    if device_report:
        if len(dirs) != 1:
            raise UsageError("--device-report merges into one device directory: give exactly one DIR")
        merged = merge_device_report(dirs[0], device_report)
    rows = [{**row, "manifest_sha256": manifest_sha256(row["dir"])} for row in index_data(list(dirs))]
    if html_out:
        write_text(html_out, render_index(list(dirs), out_path=html_out))
    failed = [r["profile"] for r in rows if r["verdict"] == "fail"]
    if as_json:
        print_json(
            {"devices": rows, "html": html_out, "merged_device_report": device_report, "failed": failed}
        )
    elif not is_quiet():
        out = console()
        if merged is not None:
            lat = merged["budgets"].get("latency") or {}
            out.print(
                f"merged {device_report} into {dirs[0]}: {lat.get('percentile')} measured on the device "
                f"{_fmt(lat.get('value_ms'))} ms (budget {lat.get('budget_ms')} ms), verdict {merged['verdict']}"
            )
        columns = ["profile / spec", "input, classes", "params M", "pred. / budget ms", "local p50 / p99", "device p50 / p99",
                   "pred./dev.", "val acc", "verdict"]  # fmt: skip
        body = [_row(r) for r in rows]
        out.print(table("devices (local = build machine, not the target; ms)", columns, body))
        if html_out:
            out.print(f"index written to {html_out}")
    if gate and failed:
        _fail_on_budget(rows, failed)


def _fail_on_budget(rows: list[dict], failed: list[str]) -> None:
    """--fail-on-budget: exit 8 for a broken budget, 9 when every failed check of every failing device only
    lacks the evidence its recorded requirement asks (judged again on what each report recorded)."""

    only_evidence = all(
        not r.get("failure") and set(unproven_budgets(load_report(r["dir"]))) == set(r["failed_budgets"])
        for r in rows
        if r["verdict"] == "fail"
    )
    if only_evidence:
        raise InsufficientEvidenceError(
            f"budgets judged on weaker evidence than required for {', '.join(failed)}"
        )
    raise BudgetBrokenError(f"budget verdict fail for {', '.join(failed)}")
