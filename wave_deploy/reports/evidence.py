"""What each budget is judged on: the evidence level of every value, measurements in place of predictions,
and notes where a measurement disagrees with its prediction by more than the model's stated error.

Levels (reports.judge.EVIDENCE_RANK; docs/reports.md, "Evidence"):

    device        a merged device report (the on-device kit's device_report.json)
    host          the local benchmark on the build machine, only where the profile says the build host is the
                  device (hardware.build_host_is_device; false in every shipped profile); ranks as device
    validation    accuracy measured on held-out validation images (the build machine, the deployed file)
    calibrated    a calibrated latency model, inside the sizes and geometry its calibration measured
    extrapolated  a calibrated latency model outside that range (planning.latency.Calibration._range_notes)
    analytic      a roofline latency or a memory estimate from the profile's facts

Stated errors, beyond which a measurement "disagrees" with its prediction (a note on the check):
ANALYTIC_ERROR_FACTOR for the analytic latency model (docs/latency.md: off by 3-5x on this project's machine,
a roofline with assumed efficiencies); the calibration file's own worst fit error (``fit.max_abs_pct``) for a
calibrated one; MEMORY_ERROR_PCT for the memory model (its ONNX Runtime factors reproduce peak RSS within 5%
where they were measured; TensorRT's are estimates).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from wave_deploy.calibration.file import read_calibration_file
from wave_deploy.errors import InvalidInputError
from wave_deploy.reports.judge import MEASURED_ON_DEVICE, Limits, Observed
from wave_deploy.target import Target

log = logging.getLogger(__name__)

ANALYTIC_ERROR_FACTOR = 2.0  # an analytic latency within [1/2, 2] x the measurement agrees with it
MEMORY_ERROR_PCT = 25.0  # a memory estimate within 25% of the measurement agrees with it
MEASURED_ON_HOST = "measured on the build host (hardware.build_host_is_device)"
REQUIREMENTS = ("device", "calibrated", "any")


def stricter(a: str, b: str) -> str:
    """The stricter of two evidence requirements (device > calibrated > any)."""
    return min(a, b, key=REQUIREMENTS.index)


def latency_level(source: str, notes: list[str] | tuple[str, ...]) -> str:
    """The evidence level of a predicted latency: its model, and whether the calibration covers it."""
    if source.startswith("calibrated"):
        return "extrapolated" if notes else "calibrated"
    return "analytic"


Error = tuple[str, float, str]  # ("factor" | "pct", size, how the report names it)
MEMORY_ERROR: Error = ("pct", MEMORY_ERROR_PCT, f"{MEMORY_ERROR_PCT:g}% (memory model)")


def stated_latency_error(source: str) -> Error | None:
    """The stated error of the latency model behind ``source``: a factor for the analytic model, the worst
    fit error of a calibration file, a quick one included (``quick-calibration:<file>``: still a fit of real
    measurements, though its evidence ranks as analytic; docs/decisions.md); None when that file can no longer
    be read."""
    kind, _, path = source.partition(":")
    if kind not in ("calibrated", "quick-calibration") or not path:
        return ("factor", ANALYTIC_ERROR_FACTOR, f"a factor of {ANALYTIC_ERROR_FACTOR:g} (analytic model)")

    try:
        worst = read_calibration_file(path).fit.max_abs_pct
    except InvalidInputError:  # moved since the plan: no stated error to compare with
        return None
    which = "quick calibration" if kind == "quick-calibration" else "calibration"
    return ("pct", worst, f"{worst:.1f}% (the {which}'s worst fit error)")


def disagreement(what: str, measured: float, predicted: float, error: Error | None) -> str | None:
    """A note when ``measured`` and ``predicted`` differ by more than the model's stated ``error``."""
    if error is None or not measured > 0 or not predicted > 0:
        return None
    kind, size, stated = error
    ratio = measured / predicted
    if kind == "factor" and 1 / size <= ratio <= size:
        return None
    if kind == "pct" and abs(predicted - measured) / measured * 100 <= size:
        return None
    return (
        f"{what} measured {measured:.4g} is {ratio:.2f}x the prediction {predicted:.4g}, beyond the model's "
        f"stated error of {stated}: the prediction does not hold for this device"
    )


# --- at assembly: predictions, or the build host where it is the device ------------------------------------


def build_observed(profile: Any, chosen: Any, train: Any, data: Any, bench: Any) -> tuple[Observed, dict]:
    """What a build's report judges, with evidence levels; and what to add to its checks afterwards
    ({budget: {field: value}}: the prediction a measurement replaced, notes)."""
    observed = Observed(
        latency_ms=chosen.latency_at_budget_ms,
        memory_mib=chosen.memory_mib,
        build_memory_mib=chosen.build_memory_mib,
        accuracy=train.val_acc,
        num_classes=data.info.num_classes,
        latency_evidence=latency_level(chosen.latency_source, chosen.latency_notes),
        memory_evidence="analytic",
        build_memory_evidence="analytic",
        accuracy_evidence="validation",
    )
    extra: dict[str, dict[str, Any]] = {}
    if not profile.hardware.build_host_is_device or bench is None:
        return observed, extra

    deployed = Target.of(profile).deployed.file
    if bench.model != deployed:
        note = (
            f"the build host stands in for the device, but its benchmark timed {bench.model}, not {deployed}"
        )
        extra["latency"] = {"note": note}
        return observed, extra
    pct = profile.budgets.latency_percentile
    measured = float(getattr(bench.stats, f"{pct}_ms"))
    predicted = chosen.latency_at_budget_ms
    observed = dataclasses.replace(observed, latency_ms=measured, latency_source=MEASURED_ON_HOST,
                                   latency_evidence="host")  # fmt: skip
    extra["latency"] = {"predicted_ms": predicted, "note": disagreement(
        "latency (ms)", measured, predicted, stated_latency_error(chosen.latency_source))}  # fmt: skip
    peak = (getattr(bench, "memory", None) or {}).get("session_peak_rss_mib")
    if peak:
        observed = dataclasses.replace(observed, memory_mib=float(peak), memory_source=MEASURED_ON_HOST,
                                       memory_evidence="host")  # fmt: skip
        extra["memory"] = {"predicted_mib": chosen.memory_mib, "note": disagreement(
            "memory (MiB)", float(peak), chosen.memory_mib, MEMORY_ERROR)}  # fmt: skip
    return observed, extra


def annotate(checks: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``checks`` with the fields of ``extra`` added to the checks that exist (None values left out)."""
    for name, fields in extra.items():
        if checks.get(name) is not None:
            checks[name].update({k: v for k, v in fields.items() if v is not None})
    return checks


# --- at a merge: the device's own measurements --------------------------------------------------------------


def device_memory(memory: dict | None) -> tuple[float, str] | None:
    """The device's runtime memory and what it is: TensorRT's engine memory, else the session's peak RSS in
    a fresh process, else the kit's own peak RSS (an over-estimate: it holds the bundle's data too)."""
    for key in ("tensorrt_device_mib", "session_peak_rss_mib", "peak_rss_mib"):
        value = (memory or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value), key
    return None


def device_observed(
    observed: Observed, limits: Limits, device: dict[str, Any], report: dict, *, notes: bool = True
) -> tuple[Observed, dict]:
    """``observed`` (the build's own evidence) with every value the device measured put in its place (device
    evidence), and what to add to the checks afterwards: the predictions they replaced and disagreement notes.

    ``device`` is report.json's ``measured.device`` section (``verify.device_section`` of the kept device
    report). This is the one place that decides which budgets a device measurement judges: latency always;
    memory where ``device_memory`` finds a figure; the build peak where the device reported
    ``build_peak_mib`` and the build has a build-memory figure; accuracy where the device measured a top-1 and
    the build judged accuracy. A merge and every read of a merged report (``verify``) both come here.

    ``notes=False`` (a read: ``verify.check_verdict`` judges without the annotations) leaves the disagreement
    notes out, so that a read never opens the calibration file the prediction names (``stated_latency_error``):
    a file outside the build directory that may have moved or changed since the merge wrote the notes."""
    checks, pred = report["budgets"], report.get("prediction") or {}
    extra: dict[str, dict[str, Any]] = {}
    latency = device["latency"]
    memory_block = device.get("memory")  # the kit's figures, as JSON
    accuracy_block = device.get("accuracy") or {}
    measured = latency[f"{limits.latency_percentile}_ms"]
    predicted = _first(checks["latency"].get("predicted_ms"), pred.get("latency_ms"))
    observed = dataclasses.replace(observed, latency_ms=measured, latency_source=MEASURED_ON_DEVICE,
                                   latency_evidence="device")  # fmt: skip
    error = stated_latency_error(str(pred.get("source", "analytic"))) if notes else None
    extra["latency"] = {
        "predicted_ms": predicted,
        "note": disagreement("latency (ms)", measured, predicted, error),
    }
    memory = device_memory(memory_block)
    if memory is not None:
        value, key = memory
        predicted_mib = _first(checks["memory"].get("predicted_mib"), pred.get("memory_mib"))
        observed = dataclasses.replace(observed, memory_mib=value, memory_source=f"{MEASURED_ON_DEVICE} ({key})",
                                       memory_evidence="device")  # fmt: skip
        extra["memory"] = {"predicted_mib": predicted_mib, "note": disagreement(
            "memory (MiB)", value, predicted_mib or 0.0, MEMORY_ERROR)}  # fmt: skip
    build_peak = (memory_block or {}).get("build_peak_mib")
    if build_peak and observed.build_memory_mib is not None:
        build_pred = _first(
            (checks.get("build_memory") or {}).get("predicted_mib"), pred.get("build_memory_mib")
        )
        observed = dataclasses.replace(observed, build_memory_mib=float(build_peak),
                                       build_memory_source=f"{MEASURED_ON_DEVICE} (trtexec build peak)",
                                       build_memory_evidence="device")  # fmt: skip
        extra["build_memory"] = {"predicted_mib": build_pred}
    top1 = accuracy_block.get("top1")
    if isinstance(top1, (int, float)) and observed.accuracy is not None:
        source = f"device top-1 on {accuracy_block.get('n_images', '?')} images of the bundle's subset"
        before = _validation_value(checks)
        observed = dataclasses.replace(observed, accuracy=float(top1), accuracy_source=source,
                                       accuracy_evidence="device")  # fmt: skip
        extra["accuracy"] = extra["accuracy_floor"] = {"validation_value": before}
    return observed, extra


def _validation_value(checks: dict) -> float | None:
    """The build machine's validation-split accuracy a report's checks were judged on before any merge."""
    for name in ("accuracy", "accuracy_floor"):
        check = checks.get(name) or {}
        if check:
            return _first(check.get("validation_value"), check.get("value"))
    return None


def _first(*values: Any) -> Any:
    """The first value that is not None (a report keeps absent optional fields as explicit nulls)."""
    return next((v for v in values if v is not None), None)
