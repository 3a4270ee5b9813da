"""Merging the on-device kit's device_report.json (export/run_on_device.py) into a build's report.json.

The device's measured latency replaces the prediction as what the latency budget is judged on (source
"measured on device"); verdict, report.md and plots are rewritten (docs/report-schema.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from wave_deploy.bench.stats import LATENCY_KEYS
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_file
from wave_deploy.reports import (
    REPORT_JSON,
    SCHEMA_VERSION,
    STATS,
    budget_verdict,
    load_report,
    read_json,
    write_report_files,
)

log = logging.getLogger(__name__)

MEASURED_ON_DEVICE = "measured on device"  # budgets["latency"]["source"] once a device report is merged


def load_device_report(path: str | Path, report: dict) -> dict:
    """The on-device kit's device_report.json, checked against the build report it is merged into."""
    path = Path(path)
    dev = read_json(path, "device_report.json")
    name, prof = report["profile"]["name"], report["profile"]
    if not isinstance(dev, dict) or dev.get("kind") != "device_report":
        raise InvalidInputError(
            f"{path}: not a device report (kind 'device_report' written by run_on_device.py)"
        )
    if dev.get("schema_version") != SCHEMA_VERSION:
        raise InvalidInputError(
            f"{path}: schema_version {dev.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    if dev.get("profile") != name:
        raise InvalidInputError(
            f"{path}: measured profile {dev.get('profile')!r}, this build is for {name!r}"
        )
    lat = dev.get("latency")
    if not dev.get("passed") or not isinstance(lat, dict):
        raise InvalidInputError(
            f"{path}: the device run did not pass or has no latency "
            f"({dev.get('error') or 'no latency block'}); nothing to merge"
        )
    missing = [k for k in LATENCY_KEYS if k not in lat]
    bad = [k for k in STATS if not isinstance(lat.get(f"{k}_ms"), (int, float))]
    if missing or bad:
        raise InvalidInputError(f"{path}: latency lacks or mistypes {', '.join(missing or bad)}")
    if dev.get("runtime") != prof.get("runtime"):
        raise InvalidInputError(
            f"{path}: measured with {dev.get('runtime')!r}, the profile's budgets are for "
            f"{prof.get('runtime')!r}; rerun run_on_device.py without --runtime"
        )
    batch = report["prediction"].get("batch")
    if batch is not None and lat["batch"] != batch:
        raise InvalidInputError(
            f"{path}: measured at batch {lat['batch']}, the latency budget is for batch {batch}; "
            f"rerun run_on_device.py with --batch {batch}"
        )
    return dev


def merge_device_report(out_dir: str | Path, device_report_path: str | Path) -> dict:
    """Record the device's measured latency in out_dir/report.json, judge the latency budget on it
    (source 'measured on device'), update verdict and failed_budgets, rewrite report.json/md and plots."""
    out_dir, path = Path(out_dir), Path(device_report_path)
    report = load_report(out_dir)
    dev = load_device_report(path, report)
    notes = []
    want = report["profile"].get("power_mode") or {}
    if want and want.get("nvpmodel_mode") and want["nvpmodel_mode"] not in str(dev.get("power_mode") or ""):
        notes.append(
            f"the device reported power mode {dev.get('power_mode')!r}; "
            f"the profile assumes nvpmodel {want['nvpmodel_mode']}"
        )
    if dev.get("precision") != report["profile"].get("precision"):
        notes.append(
            f"measured {dev.get('precision')}, the profile asks for {report['profile'].get('precision')}"
        )
    for note in notes:
        log.warning("%s: %s", path, note)
    report["measured"]["device"] = {
        **{k: dev["latency"][k] for k in LATENCY_KEYS},
        "source": path.name,
        "device_report_sha256": sha256_file(path),
        "power_mode": dev.get("power_mode"),
        "runtime_version": dev.get("runtime_version"),
        "precision": dev.get("precision"),
        "parity_max_abs_err": (dev.get("parity") or {}).get("max_abs_err"),
        "notes": notes,
    }
    budget = report["budgets"].get("latency")
    if budget:
        value = dev["latency"][f"{budget['percentile']}_ms"]
        budget.update(value_ms=value, source=MEASURED_ON_DEVICE, ok=value <= budget["budget_ms"])
        budget["predicted_ms"] = report["prediction"].get("latency_ms")
    report["verdict"], report["failed_budgets"] = budget_verdict(report["budgets"])
    write_report_files(out_dir, report)
    log.info("merged %s into %s: verdict %s", path, out_dir / REPORT_JSON, report["verdict"])
    return report
