"""Build reports: what a device build's verdict rests on, and every way it is shown.

    schema.py    pydantic models of report.json and device_report.json (versioned, validated on read)
    judge.py     judge_budgets: the one function that judges values against a profile's budgets
    assemble.py  report.json from the results of a build's stages
    merge.py     a device's own measurement (device_report.json) merged into a build's report
    evidence.py  every read: the verdict judged again from its evidence, its files re-hashed (manifest.json)
    files.py     reading/writing report.json, report.md, plots; the fail-closed failure report
    markdown.py  report.md          html.py  the offline multi-device index
    plots.py     PNG plots          fmt.py   number formatting shared by report.md, the index and the CLI

Nothing here imports torch; matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from wave_deploy.reports.files import (
    PLOTS_DIR,
    REPORT_JSON,
    REPORT_MD,
    failure_of,
    load_report,
    read_json,
    report_dirs,
    validate_report,
    write_failure_report,
    write_report_files,
)
from wave_deploy.reports.html import index_data, index_row, render_index
from wave_deploy.reports.judge import BUDGET_ORDER, Judgement, Limits, Observed, judge_budgets
from wave_deploy.reports.markdown import render_markdown
from wave_deploy.reports.schema import SCHEMA_VERSION, BuildReport, DeviceReport
from wave_deploy.reports.verify import load_verified_report

__all__ = [
    "BUDGET_ORDER",
    "PLOTS_DIR",
    "REPORT_JSON",
    "REPORT_MD",
    "SCHEMA_VERSION",
    "BuildReport",
    "DeviceReport",
    "Judgement",
    "Limits",
    "Observed",
    "failure_of",
    "index_data",
    "index_row",
    "judge_budgets",
    "load_report",
    "load_verified_report",
    "read_json",
    "render_index",
    "render_markdown",
    "report_dirs",
    "validate_report",
    "write_failure_report",
    "write_report_files",
]
