"""A build directory's report proves itself on every read: its verdict is judged again from the evidence it
records, and every file that verdict rests on is hashed again against what the build recorded.

Threat model (docs/ci.md, "Artifacts that prove themselves"): a cached or shared artifacts directory in which
any file may have been edited. ``load_verified_report`` is what every reader that decides or shows a verdict
uses (``wave-deploy report`` with or without ``--fail-on-budget``, the HTML index, a merge, the build itself):

- the verdict: each budget is judged again by ``judge_budgets`` from the limits report.json records and the
  values its evidence sections hold (the prediction, the device measurement, the validation accuracy); which
  section judges a budget is decided from the evidence as a merge decides it (``observed_from_evidence``):
  a recorded device measurement judges every budget it measured. A budget entry, ``failed_budgets`` or
  ``verdict`` that differs from the recomputed one is exit 3;
- the files: every output manifest.json records (report.json itself, the bundle's models and plan.json,
  model.onnx, the checkpoint, the kept device report, ...) must be there with the recorded sha256; the
  device measurement in report.json must be the kept ``device/device_report.json`` (its sha256, and the
  whole ``measured.device`` section derived again from it: ``device_section``), and the model it measured
  must be the one the build recorded. A mismatch is exit 3 naming the file.

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
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_file
from wave_deploy.pipeline.manifest import MANIFEST, outputs_of, read_manifest
from wave_deploy.reports.evidence import device_observed, latency_level
from wave_deploy.reports.files import KEPT_DIR, KEPT_NAME, KEPT_REL, REPORT_JSON, load_report
from wave_deploy.reports.judge import (
    BUDGET_ORDER,
    PREDICTED,
    VALIDATION_SPLIT,
    Limits,
    Observed,
    judge_budgets,
    observed_in,
)
from wave_deploy.reports.schema import DeviceMeasurement, DeviceReport, dump, parse_device_report


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


def observed_from_evidence(
    report: dict[str, Any], where: str, *, notes: bool = True
) -> tuple[Observed, dict[str, dict[str, Any]]]:
    """The values a report's budgets must be judged on, read from its evidence sections, never from the budget
    entries; and what to add to the checks afterwards (``evidence.device_observed``'s annotations).

    Two steps, the same for a merge (``merge.apply_device_report``) and for every read (``check_verdict``):
    the build's own evidence (``build_evidence``), then, where report.json records a device measurement
    (``measured.device``), ``evidence.device_observed`` decides from that section alone which budgets are
    judged on the device (latency always; memory, the build peak and accuracy where the device measured
    them), so no budget entry can claim a prediction where a device figure exists, nor the reverse.
    ``notes=False`` leaves the disagreement notes out (``device_observed``): a read judges without them and so
    rests on nothing outside the build directory."""
    observed = build_evidence(report, where)
    device = (report.get("measured") or {}).get("device")
    if device is None:
        return observed, {}
    limits = Limits.of_report(report["budgets"], batch=report["prediction"].get("batch") or 1)
    return device_observed(observed, limits, device, report, notes=notes)


def build_evidence(report: dict[str, Any], where: str) -> Observed:
    """The values the build judged, before any device measurement: each read from the evidence section its
    recorded level names: the local benchmark where the build host is the device (``host``), the prediction
    (``calibrated``, ``extrapolated``, ``analytic``; a calibrated source cannot be analytic nor the reverse),
    the validation split (``validation``). A ``device`` level stands for the build's own value here (the
    prediction, the validation accuracy; ``observed_from_evidence`` puts the device's figures in), and needs
    a device measurement in report.json. A level whose section is missing is InvalidInputError naming
    ``where``."""
    checks, pred = report["budgets"], report.get("prediction")
    if pred is None:
        raise InvalidInputError(f"{where}: budgets without the prediction they were judged on")
    stored = observed_in(checks)  # the levels and sources recorded; the values come from the evidence
    measured = report.get("measured") or {}
    device, local = measured.get("device"), measured.get("local")
    pct = f"{checks['latency']['percentile']}_ms"
    for budget in ("latency", "memory", "build_memory", "accuracy"):
        if getattr(stored, f"{budget}_evidence") == "device" and device is None:
            raise InvalidInputError(
                f"{where}: budgets.{budget} is judged on device evidence that report.json lacks"
            )
    if local is None and "host" in (stored.latency_evidence, stored.memory_evidence):
        budget = "latency" if stored.latency_evidence == "host" else "memory"
        raise InvalidInputError(
            f"{where}: budgets.{budget} is judged on host evidence that report.json lacks"
        )

    predicted_level = latency_level(str(pred.get("source", "analytic")), ())
    levels_of_prediction = {"calibrated", "extrapolated"} if predicted_level == "calibrated" else {"analytic"}
    lvl, latency = stored.latency_evidence, pred["latency_ms"]
    if lvl == "host":
        latency = (local or {})["latency"].get(pct)
    elif lvl == "device":
        lvl = predicted_level
    elif lvl not in levels_of_prediction:
        raise InvalidInputError(
            f"{where}: budgets.latency claims {lvl} evidence for a {pred.get('source')} prediction"
        )
    memory: Any = pred["memory_mib"]
    if stored.memory_evidence == "host":
        memory = ((local or {}).get("memory") or {}).get("session_peak_rss_mib")
    if latency is None or memory is None:
        raise InvalidInputError(
            f"{where}: a budget's evidence section does not hold the value it was judged on"
        )
    device_reset = {  # a device level: the build's own value here, its level and source with it
        "latency_source": PREDICTED, "memory_evidence": "analytic", "memory_source": PREDICTED,
        "build_memory_evidence": "analytic", "build_memory_source": PREDICTED,
        "accuracy_evidence": "validation", "accuracy_source": VALIDATION_SPLIT,
    }  # fmt: skip
    reset = {
        key: value
        for key, value in device_reset.items()
        if getattr(stored, key.rsplit("_", 1)[0] + "_evidence") == "device"
    }
    return dataclasses.replace(
        stored, **reset, latency_ms=latency, latency_evidence=lvl, memory_mib=memory,
        build_memory_mib=pred.get("build_memory_mib"), accuracy=(report.get("accuracy") or {}).get("val_acc"),
        num_classes=(report.get("spec") or {}).get("num_classes"),
    )  # fmt: skip


def check_verdict(report: dict[str, Any], where: str) -> None:
    """Judge the budgets again from the recorded limits and evidence; InvalidInputError naming ``where``
    when a budget entry, failed_budgets or the verdict differs from what they give."""
    checks = report["budgets"]
    batch = (report.get("prediction") or {}).get("batch") or 1
    observed, _ = observed_from_evidence(report, where, notes=False)  # the annotations are not judged
    judged = judge_budgets(Limits.of_report(checks, batch=batch), observed)
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


def _first_difference(where: str, stored: Any, fresh: Any, source: str = "its evidence") -> str:
    """The first field (depth first) where ``stored`` differs from what ``source`` gives, as one line."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key in [*fresh, *(k for k in stored if k not in fresh)]:
            if stored.get(key) != fresh.get(key):
                return _first_difference(f"{where}.{key}", stored.get(key), fresh.get(key), source)
    judged = " (judged again from the recorded limits and values)" if source == "its evidence" else ""
    return f"{where} is {stored!r}, but {source} gives {fresh!r}{judged}"


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


def device_section(dev: DeviceReport, device_report_sha256: str, profile: dict[str, Any]) -> dict[str, Any]:
    """report.json's ``measured.device`` for a device report kept as ``KEPT_REL`` with that sha256, as JSON:
    what a merge records, and what every read derives again from the kept file to compare."""
    notes = []
    want = profile.get("power_mode") or {}
    if want and want.get("nvpmodel_mode") and want["nvpmodel_mode"] not in str(dev.power_mode or ""):
        notes.append(
            f"the device reported power mode {dev.power_mode!r}; "
            f"the profile assumes nvpmodel {want['nvpmodel_mode']}"
        )
    if dev.precision != profile.get("precision"):
        notes.append(f"measured {dev.precision}, the profile asks for {profile.get('precision')}")
    section = {
        "latency": None if dev.latency is None else dev.latency.to_dict(),
        "source": KEPT_REL,
        "device_report_sha256": device_report_sha256,
        "model_file": dev.model_file,
        "model_sha256": dev.model_sha256,
        "power_mode": dev.power_mode,
        "runtime_version": dev.runtime_version,
        "precision": dev.precision,
        "parity_max_abs_err": None if dev.parity is None else dev.parity.max_abs_err,
        "accuracy": None if dev.accuracy is None else dev.accuracy.model_dump(),
        "memory": None if dev.memory is None else dev.memory.model_dump(),
        "notes": notes,
    }
    return dump(DeviceMeasurement.model_validate(section))


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
    if dev.latency is None:
        raise InvalidInputError(f"{kept}: a kept device report without a latency block")
    derived = device_section(dev, device["device_report_sha256"], report["profile"])
    if derived != device:
        difference = _first_difference(
            "measured.device", device, derived, f"the kept device report {KEPT_REL}"
        )
        raise InvalidInputError(f"{where}: {difference}")
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
