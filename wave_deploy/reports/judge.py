"""The one place where a value is judged against a device's budgets.

Selection judges every candidate on predicted values, report assembly judges the chosen model, and a merged
device measurement re-judges the budgets on the device's figures: all three call ``judge_budgets``, so a
rejection reason, a report's budget table and its verdict can never disagree.

Every value carries its evidence level (``Observed.*_evidence``, EVIDENCE_RANK; docs/reports.md, "Evidence"):
device (a merged device report) and host (the build machine, where the profile says it is the device) and
validation (accuracy measured on held-out images) are measurements; calibrated (a calibrated latency model
inside its measured range) > extrapolated (outside it) > analytic (a roofline or estimate from profile facts)
are predictions. ``Limits.require_evidence`` (device | calibrated | any) makes a check whose value is within
its limit but judged on weaker evidence fail too; ``Judgement.unproven`` names those checks (exit 9).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BUDGET_ORDER = ("latency", "memory", "build_memory", "accuracy", "accuracy_floor")
PREDICTED = "predicted"
MEASURED_ON_DEVICE = "measured on device"  # a check's source once a device report is merged
VALIDATION_SPLIT = "validation split"  # the source of an accuracy measured on the build's validation split

# Evidence levels, strongest first, and the rank a requirement needs (docs/reports.md, "Evidence").
EVIDENCE_RANK = {"device": 3, "host": 3, "validation": 3, "calibrated": 2, "extrapolated": 1, "analytic": 0}
REQUIRED_RANK = {"device": 3, "calibrated": 2, "any": 0}


def evidence_ok(level: str, required: str, budget: str = "latency") -> bool:
    """Whether a value judged on ``level`` evidence meets the requirement ``required``. "calibrated" asks a
    calibrated latency model of the latency budget; the memory models have no calibration, so for the other
    budgets it asks nothing more than their model (only "device" asks them to be measured)."""
    if required == "calibrated" and budget != "latency":
        return True
    return EVIDENCE_RANK[level] >= REQUIRED_RANK[required]


@dataclass(frozen=True)
class Limits:
    """A profile's budgets (profiles.Budgets), or the limits a report recorded when it was judged."""

    latency_ms: float
    latency_percentile: str
    latency_batch: int
    memory_mib: float
    build_memory_mib: float | None = None
    min_accuracy: float | None = None
    min_accuracy_over_chance: float | None = None  # accuracy must exceed this many times chance (1/classes)
    require_evidence: str = "any"  # "device" | "calibrated" | "any" (REQUIRED_RANK)

    @classmethod
    def of_profile(cls, section: Any) -> Limits:
        """From a DeviceProfile's ``budgets`` section."""
        return cls(
            latency_ms=section.latency_ms,
            latency_percentile=section.latency_percentile,
            latency_batch=section.latency_batch,
            memory_mib=section.memory_mib,
            build_memory_mib=section.build_memory_mib,
            min_accuracy=section.min_accuracy,
            min_accuracy_over_chance=getattr(section, "min_accuracy_over_chance", None),
        )

    @classmethod
    def of_report(cls, checks: Mapping[str, Any], batch: int) -> Limits:
        """From report.json's ``budgets`` section (the limits travel with the values they judged)."""
        lat, mem = checks["latency"], checks["memory"]
        build, acc = checks.get("build_memory") or {}, checks.get("accuracy") or {}
        floor = checks.get("accuracy_floor") or {}
        return cls(
            latency_ms=lat["budget_ms"],
            latency_percentile=lat["percentile"],
            latency_batch=lat.get("batch", batch),
            memory_mib=mem["budget_mib"],
            build_memory_mib=build.get("budget_mib"),
            min_accuracy=acc.get("min"),
            min_accuracy_over_chance=floor.get("over_chance"),
            require_evidence=lat.get("required_evidence") or "any",
        )


@dataclass(frozen=True)
class Observed:
    """The values to judge, each with where it came from. None: not known (that budget is not judged)."""

    latency_ms: float
    memory_mib: float
    build_memory_mib: float | None = None
    accuracy: float | None = None
    num_classes: int | None = None  # of the task the accuracy was measured on (chance = 1 / num_classes)
    latency_source: str = PREDICTED
    memory_source: str = PREDICTED
    build_memory_source: str = PREDICTED
    accuracy_source: str = VALIDATION_SPLIT
    latency_evidence: str = "analytic"  # EVIDENCE_RANK's levels
    memory_evidence: str = "analytic"
    build_memory_evidence: str = "analytic"
    accuracy_evidence: str = "validation"


@dataclass(frozen=True)
class Judgement:
    checks: dict[str, dict[str, Any] | None]  # report.json's "budgets" section, in BUDGET_ORDER
    verdict: str  # "pass" | "fail"
    failed: list[str]  # names of failed checks (a broken budget or too weak evidence), in BUDGET_ORDER
    reasons: tuple[str, ...]  # one line per failed check (selection's rejection reasons)
    unproven: list[str] = field(default_factory=list)  # failed only for their evidence (within the limit)

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"


def judge_budgets(limits: Limits, observed: Observed) -> Judgement:
    """Judge observed values against the limits: one check per budget, the verdict and the reasons."""
    checks: dict[str, dict[str, Any] | None] = dict.fromkeys(BUDGET_ORDER)
    reasons: list[str] = []
    lat_ok = observed.latency_ms <= limits.latency_ms
    checks["latency"] = {
        "budget_ms": limits.latency_ms,
        "percentile": limits.latency_percentile,
        "batch": limits.latency_batch,
        "value_ms": observed.latency_ms,
        "source": observed.latency_source,
        "ok": lat_ok,
    }
    if not lat_ok:
        reasons.append(
            f"latency {observed.latency_ms:.2f} ms > budget {limits.latency_ms:g} ms "
            f"({limits.latency_percentile}, batch {limits.latency_batch})"
        )
    checks["memory"] = _mib_cap(
        "memory", limits.memory_mib, observed.memory_mib, observed.memory_source, reasons
    )
    if limits.build_memory_mib is not None and observed.build_memory_mib is not None:
        checks["build_memory"] = _mib_cap(
            "build memory",
            limits.build_memory_mib,
            observed.build_memory_mib,
            observed.build_memory_source,
            reasons,
        )
    if limits.min_accuracy is not None and observed.accuracy is not None:
        ok = observed.accuracy >= limits.min_accuracy
        checks["accuracy"] = {
            "min": limits.min_accuracy,
            "value": observed.accuracy,
            "source": observed.accuracy_source,
            "ok": ok,
        }
        if not ok:
            reasons.append(f"accuracy {observed.accuracy:.3f} < minimum {limits.min_accuracy:g}")
    over, classes = limits.min_accuracy_over_chance, observed.num_classes
    if over is not None and observed.accuracy is not None and classes:
        floor = over / classes  # chance accuracy is 1 / classes
        ok = observed.accuracy > floor
        checks["accuracy_floor"] = {
            "min": round(floor, 6),
            "over_chance": over,
            "num_classes": classes,
            "value": observed.accuracy,
            "source": observed.accuracy_source,
            "ok": ok,
        }
        if not ok:
            reasons.append(
                f"accuracy {observed.accuracy:.3f} is not above {over:g} x chance ({floor:.3f} for "
                f"{classes} classes): the model is at or near chance"
            )
    unproven = _judge_evidence(checks, limits.require_evidence, observed, reasons)
    failed = [name for name in BUDGET_ORDER if (check := checks[name]) is not None and not check["ok"]]
    return Judgement(checks, "fail" if failed else "pass", failed, tuple(reasons), unproven)


def _judge_evidence(
    checks: dict[str, dict[str, Any] | None], required: str, observed: Observed, reasons: list[str]
) -> list[str]:
    """Record each check's evidence and whether it meets ``required``; a check within its limit but judged
    on weaker evidence fails too (its name is returned, its reason added)."""
    levels = {
        "latency": observed.latency_evidence,
        "memory": observed.memory_evidence,
        "build_memory": observed.build_memory_evidence,
        "accuracy": observed.accuracy_evidence,
        "accuracy_floor": observed.accuracy_evidence,
    }
    unproven = []
    for name in BUDGET_ORDER:
        check = checks[name]
        if check is None:
            continue
        level = levels[name]
        enough = evidence_ok(level, required, name)
        check.update(evidence=level, required_evidence=required, evidence_ok=enough)
        if not enough:
            if check["ok"]:
                unproven.append(name)
            check["ok"] = False
            reasons.append(
                f"{name.replace('_', ' ')} judged on {level} evidence; {required} evidence required"
            )
    return unproven


def _mib_cap(what: str, budget: float, value: float, source: str, reasons: list[str]) -> dict[str, Any]:
    """The check of a memory cap in MiB; a broken cap adds its one-line reason to ``reasons``."""
    ok = value <= budget
    if not ok:
        reasons.append(f"{what} {value:.0f} MiB > budget {budget:g} MiB")
    return {"budget_mib": budget, "value_mib": value, "source": source, "ok": ok}


def observed_in(checks: Mapping[str, Any]) -> Observed:
    """The values a report's ``budgets`` section was judged on, to judge again with one of them replaced.

    A report written before evidence levels were recorded: a device-measured latency is device evidence,
    everything else predicted is taken as analytic (the weakest), accuracy as measured on the validation split."""
    lat, mem = checks["latency"], checks["memory"]
    build, acc = checks.get("build_memory") or {}, checks.get("accuracy") or {}
    floor = checks.get("accuracy_floor") or {}
    on_device = "device" if lat.get("source") == MEASURED_ON_DEVICE else "analytic"
    return Observed(
        latency_ms=lat["value_ms"],
        memory_mib=mem["value_mib"],
        build_memory_mib=build.get("value_mib"),
        accuracy=acc.get("value", floor.get("value")),
        num_classes=floor.get("num_classes"),
        latency_source=lat.get("source", PREDICTED),
        memory_source=mem.get("source", PREDICTED),
        build_memory_source=build.get("source", PREDICTED),
        accuracy_source=acc.get("source", floor.get("source", VALIDATION_SPLIT)),
        latency_evidence=lat.get("evidence") or on_device,
        memory_evidence=mem.get("evidence") or "analytic",
        build_memory_evidence=build.get("evidence") or "analytic",
        accuracy_evidence=acc.get("evidence") or floor.get("evidence") or "validation",
    )
