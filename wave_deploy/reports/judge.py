"""The one place where a value is judged against a device's budgets.

Selection judges every candidate on predicted values, report assembly judges the chosen model, and a merged
device measurement re-judges the latency budget on the device's figure: all three call ``judge_budgets``,
so a rejection reason, a report's budget table and its verdict can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BUDGET_ORDER = ("latency", "memory", "build_memory", "accuracy", "accuracy_floor")
PREDICTED = "predicted"


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
    accuracy_source: str = "validation split"


@dataclass(frozen=True)
class Judgement:
    checks: dict[str, dict[str, Any] | None]  # report.json's "budgets" section, in BUDGET_ORDER
    verdict: str  # "pass" | "fail"
    failed: list[str]  # names of broken budgets, in BUDGET_ORDER
    reasons: tuple[str, ...]  # one line per broken budget (selection's rejection reasons)

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
    failed = [name for name in BUDGET_ORDER if (check := checks[name]) is not None and not check["ok"]]
    return Judgement(checks, "fail" if failed else "pass", failed, tuple(reasons))


def _mib_cap(what: str, budget: float, value: float, source: str, reasons: list[str]) -> dict[str, Any]:
    """The check of a memory cap in MiB; a broken cap adds its one-line reason to ``reasons``."""
    ok = value <= budget
    if not ok:
        reasons.append(f"{what} {value:.0f} MiB > budget {budget:g} MiB")
    return {"budget_mib": budget, "value_mib": value, "source": source, "ok": ok}


def observed_in(checks: Mapping[str, Any]) -> Observed:
    """The values a report's ``budgets`` section was judged on, to judge again with one of them replaced."""
    lat, mem = checks["latency"], checks["memory"]
    build, acc = checks.get("build_memory") or {}, checks.get("accuracy") or {}
    floor = checks.get("accuracy_floor") or {}
    return Observed(
        latency_ms=lat["value_ms"],
        memory_mib=mem["value_mib"],
        build_memory_mib=build.get("value_mib"),
        accuracy=acc.get("value", floor.get("value")),
        num_classes=floor.get("num_classes"),
        latency_source=lat.get("source", PREDICTED),
        memory_source=mem.get("source", PREDICTED),
        build_memory_source=build.get("source", PREDICTED),
        accuracy_source=acc.get("source", "validation split"),
    )
