"""A build directory's report proves itself on every read: its verdict is judged again from the evidence it
records, and every file that verdict rests on is hashed again against what the build recorded.

Threat model (docs/ci.md, "Artifacts that prove themselves"): a cached or shared artifacts directory in which
any file may have been edited. ``load_verified_report`` is what every reader that decides or shows a verdict
uses (``wave-deploy report`` with or without ``--fail-on-budget``, the HTML index, a merge, the build itself):

- the verdict: each budget is judged again by ``judge_budgets`` from the limits report.json records and the
  values its evidence sections hold (the prediction, the device measurement, the validation accuracy); a
  budget entry, ``failed_budgets`` or ``verdict`` that differs from the recomputed one is exit 3;
- the files: every output manifest.json records (report.json itself, the bundle's models and plan.json,
  model.onnx, the checkpoint, the kept device report, ...) must be there with the recorded sha256; the
  device measurement in report.json must be the kept ``device/device_report.json`` (its sha256 and its
  figures), and the model it measured must be the one the build recorded. A mismatch is exit 3 naming the
  file.

A report of a build that failed before it had budgets (``failure`` set, ``budgets`` null) says FAIL and rests
on nothing: it is not checked further. What this does not protect against: someone who rewrites
manifest.json together with the files it records. ``expect_manifest`` (``report --expect-manifest``) closes
that by comparing manifest.json's own sha256 with one kept outside the directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wave_deploy import strict_json
from wave_deploy.bench.stats import LATENCY_KEYS
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_file
from wave_deploy.pipeline.manifest import MANIFEST, outputs_of, read_manifest
from wave_deploy.reports.evidence import device_memory, latency_level
from wave_deploy.reports.files import KEPT_DIR, KEPT_NAME, KEPT_REL, REPORT_JSON, load_report
from wave_deploy.reports.judge import (
    BUDGET_ORDER,
    Limits,
    Observed,
    judge_budgets,
    observed_in,
)
from wave_deploy.reports.schema import parse_device_report


def kept_device_report(out_dir: str | Path) -> Path:
    return Path(out_dir) / KEPT_DIR / KEPT_NAME


def load_verified_report(out_dir: str | Path) -> dict[str, Any]:
    """report.json of ``out_dir``, validated, its verdict recomputed and its evidence re-hashed."""
    report = load_report(out_dir)
    verify_report(out_dir, report)
    return report


def verify_report(out_dir: str | Path, report: dict[str, Any]) -> None:
    """InvalidInputError (exit 3) naming the file when the report's verdict or a file it rests on does not
    hold (see the module docstring)."""
    if report["budgets"] is None:  # a build that failed before it was judged: verdict fail (schema)
        return
    out_dir = Path(out_dir)
    check_verdict(report, str(out_dir / REPORT_JSON))
    check_files(out_dir, report)


# Shown beside a check (the prediction a measurement replaced, a disagreement note), not judged.
ANNOTATIONS = ("predicted_ms", "predicted_mib", "note", "validation_value")


def observed_from_evidence(report: dict[str, Any], where: str) -> Observed:
    """The values a report's budgets must have been judged on, each read from the evidence section its
    recorded level names, not from the budget entries: the device measurement (``device``), the local
    benchmark where the build host is the device (``host``), the prediction (``calibrated``, ``extrapolated``,
    ``analytic``; a calibrated source cannot be analytic nor the reverse), the validation split
    (``validation``). A level whose section is missing is InvalidInputError naming ``where``."""
    checks, pred = report["budgets"], report.get("prediction")
    if pred is None:
        raise InvalidInputError(f"{where}: budgets without the prediction they were judged on")
    stored = observed_in(checks)  # the levels and sources recorded; the values come from the evidence
    measured = report.get("measured") or {}
    device, local = measured.get("device"), measured.get("local")
    pct = f"{checks['latency']['percentile']}_ms"

    def section(level: str, budget: str) -> dict[str, Any]:
        found = {"device": device, "host": local}.get(level)
        if found is None:
            raise InvalidInputError(
                f"{where}: budgets.{budget} is judged on {level} evidence that report.json lacks"
            )
        return found

    predicted_level = latency_level(str(pred.get("source", "analytic")), ())
    levels_of_prediction = {"calibrated", "extrapolated"} if predicted_level == "calibrated" else {"analytic"}
    lvl = stored.latency_evidence
    if lvl in ("device", "host"):
        latency = section(lvl, "latency")["latency"].get(pct)
    elif lvl in levels_of_prediction:
        latency = pred["latency_ms"]
    else:
        raise InvalidInputError(
            f"{where}: budgets.latency claims {lvl} evidence for a {pred.get('source')} prediction"
        )
    memory: Any = pred["memory_mib"]
    if stored.memory_evidence == "device":
        memory = (device_memory(section("device", "memory").get("memory")) or (None,))[0]
    elif stored.memory_evidence == "host":
        memory = (section("host", "memory").get("memory") or {}).get("session_peak_rss_mib")
    build: Any = pred.get("build_memory_mib")
    if stored.build_memory_evidence == "device":
        build = (section("device", "build_memory").get("memory") or {}).get("build_peak_mib")
    accuracy = (report.get("accuracy") or {}).get("val_acc")
    if stored.accuracy_evidence == "device":
        accuracy = (section("device", "accuracy").get("accuracy") or {}).get("top1")
    if latency is None or memory is None:
        raise InvalidInputError(
            f"{where}: a budget's evidence section does not hold the value it was judged on"
        )
    return dataclasses.replace(
        stored, latency_ms=latency, memory_mib=memory, build_memory_mib=build, accuracy=accuracy,
        num_classes=(report.get("spec") or {}).get("num_classes"),
    )  # fmt: skip


def check_verdict(report: dict[str, Any], where: str) -> None:
    """Judge the budgets again from the recorded limits and evidence; InvalidInputError naming ``where``
    when a budget entry, failed_budgets or the verdict differs from what they give."""
    checks = report["budgets"]
    batch = (report.get("prediction") or {}).get("batch") or 1
    judged = judge_budgets(Limits.of_report(checks, batch=batch), observed_from_evidence(report, where))
    for name in BUDGET_ORDER:
        stored, fresh = checks.get(name), judged.checks[name]
        if stored is not None:
            stored = {k: v for k, v in stored.items() if k not in ANNOTATIONS}
        if stored != fresh:
            raise InvalidInputError(f"{where}: {_first_difference(f'budgets.{name}', stored, fresh)}")
    verdict = "fail" if report.get("failure") else judged.verdict
    if report["verdict"] != verdict or report["failed_budgets"] != judged.failed:
        stored_failed = ", ".join(report["failed_budgets"]) or "none"
        raise InvalidInputError(
            f"{where}: the stored verdict {report['verdict']!r} (failed budgets: {stored_failed}) is not what "
            f"its own budget entries give: {verdict!r} (failed budgets: {', '.join(judged.failed) or 'none'})"
        )


def _first_difference(where: str, stored: Any, fresh: Any) -> str:
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key in [*fresh, *(k for k in stored if k not in fresh)]:
            if stored.get(key) != fresh.get(key):
                return (
                    f"{where}.{key} is {stored.get(key)!r}, but its evidence gives {fresh.get(key)!r} "
                    "(judged again from the recorded limits and values)"
                )
    return f"{where} is {stored!r}, but its evidence gives {fresh!r}"


def check_files(out_dir: Path, report: dict[str, Any]) -> None:
    """Every output manifest.json records is there with its recorded sha256, report.json among them; the
    merged device measurement is the kept device report, of the model the build recorded."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise InvalidInputError(
            f"{out_dir / MANIFEST}: missing, so nothing proves what report.json's verdict rests on",
            hint="rebuild this directory with wave-deploy build",
        )
    built_for = (manifest.get("config") or {}).get("profile")
    if built_for is not None and built_for != report["profile"]["name"]:
        raise InvalidInputError(
            f"{out_dir / MANIFEST}: records a build of {built_for!r}, report.json is for "
            f"{report['profile']['name']!r}"
        )
    recorded = outputs_of({s["name"]: s for s in manifest["stages"]})
    if REPORT_JSON not in recorded:
        raise InvalidInputError(
            f"{out_dir / REPORT_JSON}: not recorded in {MANIFEST}, so nothing proves it is the build's",
            hint="rebuild this directory with wave-deploy build (a directory of an older version too)",
        )
    for rel, digest in sorted(recorded.items()):
        _same_as_recorded(out_dir, rel, digest)
    _check_device_evidence(out_dir, report, recorded)


def _same_as_recorded(out_dir: Path, rel: str, digest: str) -> None:
    path = out_dir / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise InvalidInputError(f"{out_dir / MANIFEST}: records a path outside the directory: {rel!r}")
    if not path.is_file():
        raise InvalidInputError(f"{path}: recorded in {MANIFEST} but missing")
    actual = sha256_file(path)
    if actual != digest:
        raise InvalidInputError(
            f"{path}: changed since the build recorded it (sha256 {actual[:12]}…, {MANIFEST} recorded "
            f"{digest[:12]}…)"
        )


def _check_device_evidence(out_dir: Path, report: dict[str, Any], recorded: dict[str, str]) -> None:
    device, kept = report["measured"]["device"], kept_device_report(out_dir)
    if device is None:
        if kept.exists() and report["verdict"] == "pass":  # a PASS that ignores a device measurement
            raise InvalidInputError(
                f"{kept}: a kept device measurement that report.json does not record",
                hint="merge it with wave-deploy report DIR --device-report, or delete it and rebuild",
            )
        return
    where = out_dir / REPORT_JSON
    if device.get("source") != KEPT_REL or recorded.get(KEPT_REL) != device["device_report_sha256"]:
        raise InvalidInputError(
            f"{kept}: not the device report report.json was judged on (report.json records "
            f"{device['device_report_sha256'][:12]}…, {MANIFEST} "
            f"{(recorded.get(KEPT_REL) or 'nothing')[:12]}…)"
        )
    dev = parse_device_report(strict_json.read(kept, "device report"), str(kept))
    latency = dev.latency.to_dict() if dev.latency is not None else {}
    for key in LATENCY_KEYS:
        if latency.get(key) != device["latency"].get(key):
            raise InvalidInputError(
                f"{where}: measured.device.latency.{key} is {device['latency'].get(key)!r}, the kept device "
                f"report {KEPT_REL} says {latency.get(key)!r}"
            )
    model_rel = shipped_model_rel(out_dir, device.get("model_file"))
    if model_rel is None or recorded.get(model_rel) != device.get("model_sha256"):
        raise InvalidInputError(
            f"{where}: the device measured {device.get('model_file')!r} with sha256 "
            f"{str(device.get('model_sha256'))[:12]}…, which is not a model this build recorded"
        )


def shipped_model_rel(out_dir: Path, model_file: str | None) -> str | None:
    """Where the model file a device kit ran lies in the build directory: in bundle/ when the build wrote a
    bundle, else beside report.json; None for a name that is not a plain file name."""
    if not model_file or Path(model_file).name != model_file or model_file in (".", ".."):
        return None
    return f"bundle/{model_file}" if (out_dir / "bundle" / "plan.json").is_file() else model_file


def manifest_sha256(out_dir: str | Path) -> str | None:
    """sha256 of ``out_dir``/manifest.json (what a CI pins with ``report --expect-manifest``), or None."""
    path = Path(out_dir) / MANIFEST
    return sha256_file(path) if path.is_file() else None


def expect_manifest(out_dir: str | Path, allowed: set[str]) -> None:
    """InvalidInputError naming out_dir/manifest.json unless its sha256 is one of ``allowed``."""
    actual = manifest_sha256(out_dir)
    if actual not in allowed:
        raise InvalidInputError(
            f"{Path(out_dir) / MANIFEST}: sha256 {actual or 'missing'} is not the one expected "
            f"(--expect-manifest): the directory is not the build that was pinned"
        )
