"""One exception hierarchy; each class carries the process exit code the CLI maps it to (DESIGN section 7).

Library code raises these; only ``wave_deploy.cli`` turns them into exit codes and one-line messages.
Anything that is not a ``WaveDeployError`` is a bug and exits 1 with a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 3
EXIT_MISSING_DEPENDENCY = 4
EXIT_NO_FEASIBLE_MODEL = 5
EXIT_STAGE_FAILED = 6
EXIT_PARITY_FAILED = 7
EXIT_BUDGET_BROKEN = 8
EXIT_INSUFFICIENT_EVIDENCE = 9


class WaveDeployError(Exception):
    """Base class of every error a user can cause or fix. ``hint`` says what to do about it."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}  # extra fields of the --json error object (e.g. per-profile results)

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


def first_line(exc: BaseException) -> str:
    """The first non-empty line of a foreign exception's message, or its type's name when it has none (an
    empty file makes torch.load raise ``EOFError('')``): what a one-line error quotes of its cause."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class UsageError(WaveDeployError):
    """Bad command-line usage: conflicting or missing options."""

    exit_code = EXIT_USAGE


class InvalidInputError(WaveDeployError):
    """An invalid config, profile, template bank, checkpoint or data file."""

    exit_code = EXIT_INVALID_INPUT


class MissingDependencyError(WaveDeployError):
    """An optional package or hardware (TensorRT, a GPU) that this operation needs is absent."""

    exit_code = EXIT_MISSING_DEPENDENCY


class NoFeasibleModelError(WaveDeployError):
    """No candidate ViT size fits the profile's budgets."""

    exit_code = EXIT_NO_FEASIBLE_MODEL


class StageFailedError(WaveDeployError):
    """A pipeline stage failed for a reason other than bad input (e.g. training diverged)."""

    exit_code = EXIT_STAGE_FAILED


class ParityError(WaveDeployError):
    """An exported model does not compute what the PyTorch model computes, within tolerance."""

    exit_code = EXIT_PARITY_FAILED


class BudgetBrokenError(WaveDeployError):
    """The built model breaks a latency, memory or accuracy budget (the report is still written)."""

    exit_code = EXIT_BUDGET_BROKEN


class InsufficientEvidenceError(WaveDeployError):
    """A budget verdict rests on weaker evidence than required (--require-evidence, the profile's
    budgets.require_evidence): e.g. a latency predicted where a device measurement is asked for. The value
    itself is within its budget (a broken budget is exit 8); the report is still written."""

    exit_code = EXIT_INSUFFICIENT_EVIDENCE


ALL_ERRORS: tuple[type[WaveDeployError], ...] = (
    UsageError,
    InvalidInputError,
    MissingDependencyError,
    NoFeasibleModelError,
    StageFailedError,
    ParityError,
    BudgetBrokenError,
    InsufficientEvidenceError,
)
