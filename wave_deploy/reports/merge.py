"""Merging the on-device kit's device_report.json (export/run_on_device.py) into a build's report.json.

The device's measurements replace the predictions as what the budgets are judged on (source "measured on
device", evidence "device"): latency, runtime memory (the session's peak RSS or TensorRT's engine memory),
the engine build peak where trtexec reported it, and accuracy (the device's top-1 on the bundle's subset,
judged against the accuracy floors) (reports.evidence.device_observed), through the same ``judge_budgets``
as the build; verdict, report.md and plots are rewritten. The merged file is kept in the build directory
(``device/device_report.json``), recorded with its sha256 in report.json and manifest.json, and the build's
report stage merges it again, so a rebuild never drops a device measurement, and a fail stays a fail for as
long as the measured model is the built one.

Nothing is merged into a directory that does not prove itself (``verify.load_verified_report``), and a
device report of another model is refused: its ``model_sha256`` must be the sha256 of the model file in the
directory, as manifest.json recorded it (editing bundle/plan.json is caught as an edited file).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from wave_deploy import strict_json
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import copy_file, sha256_file, write_bytes
from wave_deploy.pipeline.manifest import MANIFEST, outputs_of, read_manifest
from wave_deploy.reports.evidence import annotate
from wave_deploy.reports.files import REPORT_JSON, write_report_files
from wave_deploy.reports.judge import MEASURED_ON_DEVICE, Limits, judge_budgets
from wave_deploy.reports.schema import DeviceReport, parse_device_report
from wave_deploy.reports.verify import (
    KEPT_DIR,
    KEPT_NAME,
    KEPT_REL,
    device_section,
    kept_device_report,
    load_verified_report,
    observed_from_evidence,
    shipped_model_rel,
)

log = logging.getLogger(__name__)

__all__ = ["KEPT_DIR", "KEPT_NAME", "MEASURED_ON_DEVICE", "apply_device_report",
           "kept_device_report", "load_device_report", "merge_device_report", "merge_kept"]  # fmt: skip


def _shipped_sha256(out_dir: Path, model_file: str) -> str | None:
    """The sha256 of the model file the kit ran, as this build recorded it in manifest.json and as the file in
    the directory hashes now (None when either is missing or they differ)."""
    rel = shipped_model_rel(out_dir, model_file)
    manifest = read_manifest(out_dir)
    if rel is None or manifest is None or not (out_dir / rel).is_file():
        return None
    recorded = outputs_of({s["name"]: s for s in manifest["stages"]}).get(rel)
    return recorded if recorded is not None and sha256_file(out_dir / rel) == recorded else None


def load_device_report(path: str | Path, report: dict[str, Any], out_dir: str | Path) -> DeviceReport:
    """The on-device kit's device_report.json, checked against the build report it is merged into."""
    path, out_dir = Path(path), Path(out_dir)
    dev = parse_device_report(strict_json.read(path, "device report"), str(path))
    name, prof = report["profile"]["name"], report["profile"]
    if report.get("failure") is not None:
        raise InvalidInputError(f"{out_dir}: the build failed, so there is no built model to measure")
    if dev.profile != name:
        raise InvalidInputError(f"{path}: measured profile {dev.profile!r}, this build is for {name!r}")
    if not dev.passed or dev.latency is None:
        raise InvalidInputError(
            f"{path}: the device run did not pass or has no latency "
            f"({dev.error or 'no latency block'}); nothing to merge"
        )
    if dev.runtime != prof.get("runtime"):
        raise InvalidInputError(
            f"{path}: measured with {dev.runtime!r}, the profile's budgets are for "
            f"{prof.get('runtime')!r}; rerun run_on_device.py without --runtime"
        )
    batch = report["prediction"].get("batch")
    if batch is not None and dev.latency.batch != batch:
        raise InvalidInputError(
            f"{path}: measured at batch {dev.latency.batch}, the latency budget is for batch {batch}; "
            f"rerun run_on_device.py with --batch {batch}"
        )
    if not dev.model_file or not dev.model_sha256:
        raise InvalidInputError(
            f"{path}: no model_file/model_sha256, so the measured model cannot be matched to this build; "
            "rerun the bundle's run_on_device.py"
        )
    shipped = _shipped_sha256(out_dir, dev.model_file)
    if shipped != dev.model_sha256:
        raise InvalidInputError(
            f"{path}: measured {dev.model_file} with sha256 {dev.model_sha256[:12]}…, but this build shipped "
            f"{'no such file' if shipped is None else shipped[:12] + '…'}; measure this build's bundle"
        )
    return dev


def apply_device_report(
    report: dict[str, Any], dev: DeviceReport, device_report_sha256: str, where: str = REPORT_JSON
) -> dict[str, Any]:
    """report with the device measurement recorded and every budget judged again (a new dict), exactly as
    every later read judges it again (``verify.observed_from_evidence``)."""
    report = json.loads(json.dumps(report))
    if dev.latency is None:  # load_device_report refuses such a report
        raise InvalidInputError("the device report has no latency block; nothing to merge")
    report["measured"]["device"] = device_section(dev, device_report_sha256, report["profile"])
    observed, extra = observed_from_evidence(report, where)
    judged = judge_budgets(Limits.of_report(report["budgets"], batch=report["prediction"].get("batch") or 1),
                           observed)  # fmt: skip
    report["budgets"] = annotate({**judged.checks}, extra)
    report["verdict"], report["failed_budgets"] = judged.verdict, judged.failed
    return report


def merge_device_report(out_dir: str | Path, device_report_path: str | Path) -> dict[str, Any]:
    """Record the device's measurement in out_dir/report.json, judge the budgets again, rewrite report.json/md
    and plots, and keep the device report in out_dir/device/ so that rebuilds merge it again."""
    out_dir, path = Path(out_dir), Path(device_report_path)
    report = load_verified_report(out_dir)  # nothing is merged into a directory that does not prove itself
    dev = load_device_report(path, report, out_dir)
    kept, digest = kept_device_report(out_dir), sha256_file(path)
    merged = apply_device_report(report, dev, digest, str(out_dir / REPORT_JSON))  # judged before writing
    for note in merged["measured"]["device"]["notes"]:
        log.warning("%s: %s", path, note)
    _keep_and_write(out_dir, path, kept, digest, merged)
    log.info("merged %s into %s: verdict %s", path, out_dir / REPORT_JSON, merged["verdict"])
    return load_verified_report(out_dir)


def _keep_and_write(out_dir: Path, path: Path, kept: Path, digest: str, merged: dict[str, Any]) -> None:
    """Copy the device report to ``kept`` and write the merged report files (which record both in
    manifest.json); on any failure the earlier kept report is put back (or the new copy removed), so a failed
    merge never leaves a kept file that report.json and manifest.json do not record."""
    if path.resolve() == kept.resolve():
        write_report_files(out_dir, merged)
        return
    earlier = kept.read_bytes() if kept.is_file() else None
    try:
        copy_file(path, kept)
        if sha256_file(kept) != digest:
            raise InvalidInputError(f"{path}: changed while it was being merged; merge it again")
        write_report_files(out_dir, merged)  # records report.json and the kept device report in manifest.json
    except BaseException:
        if earlier is None:
            kept.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the device/ folder this merge made, if empty
                kept.parent.rmdir()
        else:
            write_bytes(kept, earlier)
        raise


def merge_kept(out_dir: str | Path, report: dict[str, Any], recorded: dict[str, str]) -> dict[str, Any]:
    """The report with the kept device report of out_dir merged again (the build's report stage calls this).

    ``recorded`` is what manifest.json recorded before this build (path -> sha256). The kept report must be
    the one recorded when it was merged: edited, missing or never recorded is InvalidInputError naming it.
    A build that failed a gate is not judged on it (its verdict is fail anyway): the file stays where it is.
    A kept report that no longer matches the build (a rebuilt model) is moved to device/stale/ and noted;
    it speaks for a model that no longer exists.
    """
    out_dir, kept = Path(out_dir), kept_device_report(out_dir)
    want = recorded.get(KEPT_REL)
    if not kept.is_file():
        if want is not None:
            raise InvalidInputError(
                f"{kept}: the device measurement merged into this build is missing",
                hint=f"restore it, or delete {out_dir / MANIFEST} to rebuild without it",
            )
        return report
    actual = sha256_file(kept)
    if want != actual:
        raise InvalidInputError(
            f"{kept}: " + ("not the device report that was merged (edited since: sha256 "
                           f"{actual[:12]}…, {MANIFEST} recorded {want[:12]}…)" if want else
                           f"not recorded in {MANIFEST}, so nothing shows it was merged by wave-deploy"),
            hint=f"delete {kept} and rebuild, then merge the device's own report into the new build with "
            "wave-deploy report DIR --device-report FILE",
        )  # fmt: skip
    if report.get("failure") is not None:
        return report
    try:
        dev = load_device_report(kept, report, out_dir)
    except InvalidInputError as exc:
        stale = kept.parent / "stale"
        stale.mkdir(exist_ok=True)
        kept.replace(stale / KEPT_NAME)
        log.warning("dropped the kept device measurement: %s", exc.one_line())
        report = json.loads(json.dumps(report))
        note = (
            f"an earlier device measurement no longer matches this build and was moved to {KEPT_DIR}/stale/"
        )
        report.setdefault("selection", {}).setdefault("notes", []).append(note)
        return report
    return apply_device_report(report, dev, actual, str(out_dir / REPORT_JSON))
