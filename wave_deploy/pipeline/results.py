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
    EXIT_INTERNAL,
    BudgetBrokenError,
    WaveDeployError,
)


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
        """This profile's own exit code: its error's, 8 for a broken budget, else 0."""
        if self.error is not None:
            return self.error.exit_code
        return EXIT_BUDGET_BROKEN if self.verdict != "pass" else 0


# Which exit code a multi-profile build reports when profiles fail differently, most severe first: a bug,
# then a stage or a gate that failed, then inputs that are missing or wrong, then a model that does not fit.
SEVERITY = (1, 6, 7, 4, 3, 5, 8, 0)


def outcome(results: list[DeviceResult], strict: bool = True) -> WaveDeployError | None:
    """The error a build exits with: the most severe of its profiles' (SEVERITY), naming every profile
    that failed and why; None when every profile passed (or, with ``strict`` off, only budgets broke)."""
    failed = [r for r in results if r.exit_code and (r.error is not None or strict)]
    if not failed:
        return None
    if len(results) == 1 and failed[0].error is not None:
        return failed[0].error
    code = min((r.exit_code for r in failed), key=SEVERITY.index)
    hint = "reports are written; see report.md" + (", or pass --no-fail-on-budget" if code == 8 else "")
    if all(r.error is None for r in failed):  # only broken budgets
        broken = "; ".join(f"{r.profile} ({', '.join(r.report['failed_budgets'])})" for r in failed)
        return BudgetBrokenError(f"built model breaks a budget on: {broken}", hint=hint)
    parts = []
    for r in failed:
        why = (
            r.error.one_line() if r.error is not None else "budget: " + ", ".join(r.report["failed_budgets"])
        )
        parts.append(f"{r.profile}: exit {r.exit_code} ({why})")
    message = f"{len(failed)} of {len(results)} device builds failed: " + "; ".join(parts)
    cls = next((e for e in ALL_ERRORS if e.exit_code == code), None)
    if cls is None or code == EXIT_INTERNAL:
        raise RuntimeError(message)
    return cls(message, hint=hint)
