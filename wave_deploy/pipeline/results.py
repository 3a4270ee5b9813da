"""What a build answers: one ``DeviceResult`` per profile and the error the whole build exits with
(``outcome``), most severe first (``SEVERITY``). What a build is asked is ``wave_deploy.options.BuildOptions``;
the stages that turn the one into the other are in ``wave_deploy.pipeline.build``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wave_deploy.errors import (
    ALL_ERRORS,
    EXIT_BUDGET_BROKEN,
    EXIT_INSUFFICIENT_EVIDENCE,
    EXIT_INTERNAL,
    BudgetBrokenError,
    InsufficientEvidenceError,
    WaveDeployError,
)
from wave_deploy.reports.judge import Limits, judge_budgets, observed_in


@dataclass
class DeviceResult:
    """One profile's outcome: its report (a failing one when the build failed) and the error, if any."""

    profile: str
    out_dir: str
    report: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)
    error: WaveDeployError | None = None  # the build of this profile failed (its report says so)

    @property
    def verdict(self) -> str:
        return self.report["verdict"]

    @property
    def exit_code(self) -> int:
        """This profile's own exit code: its error's, 8 for a broken budget, 9 when every failed check is
        within its budget but judged on weaker evidence than required, else 0."""
        if self.error is not None:
            return self.error.exit_code
        if self.verdict == "pass":
            return 0
        unproven = unproven_budgets(self.report)
        only_evidence = unproven and set(unproven) == set(self.report["failed_budgets"])
        return EXIT_INSUFFICIENT_EVIDENCE if only_evidence else EXIT_BUDGET_BROKEN

    def gate_code(self, strict: bool) -> int:
        """The exit code this profile asks of the build: ``exit_code``, except that with ``strict`` off
        (--no-fail-on-budget) a broken budget is forgiven, never a check on too weak evidence (9)."""
        if self.error is not None or strict:
            return self.exit_code
        return EXIT_INSUFFICIENT_EVIDENCE if unproven_budgets(self.report) else 0


def unproven_budgets(report: dict[str, Any]) -> list[str]:
    """The checks of a report that are within their budget but judged on weaker evidence than required,
    asked of the judge again on the values and the requirement the report recorded."""

    checks = report.get("budgets")
    if not checks or report.get("failure") is not None:
        return []
    batch = (report.get("prediction") or {}).get("batch") or 1
    return judge_budgets(Limits.of_report(checks, batch=batch), observed_in(checks)).unproven


# Which exit code a multi-profile build reports when profiles fail differently, most severe first: a bug,
# then a stage or a gate that failed, then inputs that are missing or wrong, then a model that does not fit,
# a budget it breaks (8), and last a budget within its limit that was judged on too weak evidence (9).
SEVERITY = (1, 6, 7, 4, 3, 5, 8, 9, 0)


def outcome(results: list[DeviceResult], strict: bool = True) -> WaveDeployError | None:
    """The error a build exits with: the most severe of its profiles' (SEVERITY), naming every profile
    that failed and why; None when every profile passed (or, with ``strict`` off, only budgets broke)."""
    codes = {id(r): r.gate_code(strict) for r in results}
    failed = [r for r in results if codes[id(r)]]
    if not failed:
        return None
    if len(results) == 1 and failed[0].error is not None:
        return failed[0].error
    code = min((codes[id(r)] for r in failed), key=SEVERITY.index)
    hint = "reports are written; see report.md" + (", or pass --no-fail-on-budget" if code == 8 else "")
    if all(r.error is None for r in failed):  # only broken budgets, or budgets on too weak evidence
        broken = "; ".join(f"{r.profile} ({', '.join(r.report['failed_budgets'])})" for r in failed)
        if code == EXIT_INSUFFICIENT_EVIDENCE:
            return InsufficientEvidenceError(
                f"budgets judged on weaker evidence than required on: {broken}",
                hint="merge the device's report (wave-deploy report DIR --device-report FILE; for "
                "'calibrated', a calibration that covers the chosen size also does); reports are written",
            )
        return BudgetBrokenError(f"built model breaks a budget on: {broken}", hint=hint)
    parts = []
    for r in failed:
        why = (
            r.error.one_line() if r.error is not None else "budget: " + ", ".join(r.report["failed_budgets"])
        )
        parts.append(f"{r.profile}: exit {codes[id(r)]} ({why})")
    message = f"{len(failed)} of {len(results)} device builds failed: " + "; ".join(parts)
    cls = next((e for e in ALL_ERRORS if e.exit_code == code), None)
    if cls is None or code == EXIT_INTERNAL:
        raise RuntimeError(message)
    return cls(message, hint=hint)
