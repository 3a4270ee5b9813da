"""Typed, versioned schemas of the files a build's verdict rests on: report.json and device_report.json.

Both are pydantic models: every writer builds the model (so a malformed report cannot be written) and every
reader validates through it (so a hand-edited or foreign file is exit 3, naming the file and the field).
docs/report-schema.md is generated from these models (``schema_markdown``; a test keeps the two in step).
The latency calibration file has its own model beside its reader and writer (wave_deploy.calibration.file).

A report whose build failed keeps the same kind and version: ``failure`` says at which stage and why, the
verdict is "fail", and the sections the failed stage never produced are null.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from wave_deploy.bench.stats import Latency  # LatencyStats, the one definition (export/kit_stats.py)
from wave_deploy.calibration.file import CalibrationFile
from wave_deploy.errors import InvalidInputError

SCHEMA_VERSION = 3  # report.json; 2: failure section, null sections, typed on read; 3: latency blocks nested
DEVICE_REPORT_SCHEMA_VERSION = 1  # device_report.json (written by export/run_on_device.py on the device)


class _Open(BaseModel):
    """A section whose named fields are typed; further keys are kept as they are (additive changes)."""

    model_config = ConfigDict(extra="allow", strict=True)  # strict: "yes" is not a bool, "1" not a number


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# A measured figure: finite (no NaN/Infinity, which strict JSON already refuses, nor 1e999) and in range.
Milliseconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
MiB = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Points = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]


class DeviceAccuracy(_Open):
    """The kit's top-1 on the bundle's labelled subset (export/kit_common.accuracy_record)."""

    top1: Fraction
    n_images: Count
    source: str | None = None
    build_machine_top1: Fraction | None = None
    onnx_fp32_top1_build_machine: Fraction | None = None
    drop_points: Points | None = None
    max_drop_points: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    passed: bool | None = None


class DeviceMemory(_Open):
    """Memory the kit measured, in MiB: ``peak_rss_mib`` and any further ``*_mib`` figure (finite, >= 0)."""

    peak_rss_mib: MiB | None = None

    @model_validator(mode="after")
    def _mib_in_range(self) -> DeviceMemory:
        for key, value in (self.model_extra or {}).items():
            if key.endswith("_mib") and value is not None:
                problem = _not_finite_mib(value)
                if problem:
                    raise ValueError(f"{key} must be a finite number of MiB >= 0, got {problem}")
        return self


def _not_finite_mib(value: object) -> str | None:
    """What is wrong with a memory figure that readers convert with float() (None: a finite number >= 0).
    An integer too large for a float (10**400, which strict JSON reads) is refused here, not left to
    raise OverflowError where a reader converts it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    try:
        as_float = float(value)
    except OverflowError:
        return "an integer too large for a float"
    return None if math.isfinite(as_float) and as_float >= 0 else repr(value)


class DeviceParity(_Open):
    """The kit's check of the model's outputs against the reference batches the bundle ships."""

    max_abs_err: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    passed: bool | None = None
    gated: bool | None = None


Evidence = Literal["device", "host", "validation", "calibrated", "extrapolated", "analytic"]
Requirement = Literal["device", "calibrated", "any"]


class _Check(_Closed):
    """What every budget check records about its evidence (reports.judge; docs/reports.md, "Evidence")."""

    evidence: Evidence | None = None  # what the value was judged on (None: a report from before levels)
    required_evidence: Requirement | None = None  # the requirement it was judged under
    evidence_ok: bool | None = None  # evidence meets the requirement (ok is false when it does not)
    note: str | None = None  # e.g. a measurement beyond the prediction's stated error


class LatencyCheck(_Check):
    budget_ms: float
    percentile: str
    batch: int | None = None
    value_ms: float
    source: str
    ok: bool
    predicted_ms: float | None = None  # the prediction a measurement replaced (device or host)


class MemoryCheck(_Check):
    budget_mib: float
    value_mib: float
    source: str = "predicted"
    ok: bool
    predicted_mib: float | None = None  # the prediction a measurement replaced


class AccuracyCheck(_Check):
    min: float
    value: float
    source: str = "validation split"
    ok: bool
    validation_value: float | None = None  # the validation-split figure a device value replaced


class AccuracyFloorCheck(_Check):
    """Validation accuracy must exceed over_chance x chance (min = over_chance / num_classes)."""

    min: float
    over_chance: float
    num_classes: int
    value: float
    source: str = "validation split"
    ok: bool
    validation_value: float | None = None


class BudgetChecks(_Closed):
    latency: LatencyCheck
    memory: MemoryCheck
    build_memory: MemoryCheck | None = None
    accuracy: AccuracyCheck | None = None
    accuracy_floor: AccuracyFloorCheck | None = None


class Failure(_Closed):
    """Why a build did not produce a passing model: the stage, the exit code and the one-line message."""

    stage: str
    exit_code: int
    error: str  # the error class, e.g. "NoFeasibleModelError"
    message: str


class ProfileSection(_Open):
    name: str
    description: str | None = None
    device_name: str | None = None
    accelerator: str | None = None
    runtime: str | None = None
    precision: str | None = None
    engine_built_on_device: bool | None = None
    input_size_px: int | None = None
    power_mode: dict[str, Any] | None = None
    overrides: list[str] = Field(default_factory=list)
    deployed: str | None = None  # wave_deploy.target.Target.describe(), e.g. "ONNX Runtime int8 (static-qdq)"
    build_host_is_device: bool | None = None  # the local benchmark counts as measured evidence (host)


class InitRow(_Closed):
    """One initialization of ``build --compare-init``: its accuracy over seeds, or why it was skipped."""

    init: Literal["wave", "weight-selection", "random"]
    status: Literal["trained", "skipped"]
    reason: str | None = None  # why it was skipped
    seeds: list[int]
    val_accs: list[float]  # per seed, in the order of seeds
    val_acc_mean: float | None
    val_acc_std: float | None  # sample standard deviation over seeds (0 for one seed)
    val_acc_min: float | None
    val_acc_max: float | None
    val_acc_at_init_mean: float | None
    training_flops: int | None  # per run: analytic, teacher forwards of distillation included
    scaler_steps: int | None
    dense_steps: int | None
    wall_s_mean: float | None  # per run, on the build machine


class InitComparison(_Closed):
    """``build --compare-init``: every usable initialization trained for the same FLOPs; the chosen one is
    deployed (its first seed's model)."""

    budget_flops: int  # per run: (scaler + dense steps of the build's schedule) x a dense step
    seeds: list[int]
    batch_size: int
    schedule_steps: int  # the build's scaler + dense steps the budget is made of
    chosen: Literal["wave", "weight-selection", "random"]
    rule: str
    estimate_s: float  # the estimate printed before training
    wall_s: float
    rows: list[InitRow]


class LocalMeasurement(_Closed):
    """The local benchmark on the build machine: its statistics, what was timed and which model file."""

    latency: Latency
    what: str
    model: str
    memory: dict[str, Any] | None = None  # the session's peak memory, where the build host is the device


class DeviceMeasurement(_Open):
    """A device's own measurement (the kit's device_report.json), as merged into report.json."""

    latency: Latency
    source: str
    device_report_sha256: str
    model_file: str | None = None
    model_sha256: str | None = None
    power_mode: Any = None
    runtime_version: str | None = None
    precision: str | None = None
    parity_max_abs_err: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    accuracy: DeviceAccuracy | None = None
    memory: DeviceMemory | None = None
    notes: list[str] = Field(default_factory=list)


class Measured(_Closed):
    local: LocalMeasurement | None = None
    device: DeviceMeasurement | None = None


class BuildReport(_Closed):
    """report.json of one device output directory."""

    schema_version: Literal[3]
    kind: Literal["build_report"]
    created: str | None = None
    wave_deploy: str | None = None
    profile: ProfileSection
    verdict: Literal["pass", "fail"]
    failed_budgets: list[str]
    failure: Failure | None = None
    budgets: BudgetChecks | None = None
    spec: dict[str, Any] | None = None
    spec_name: str | None = None
    costs: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    measured: Measured = Field(default_factory=Measured)
    latency_samples_ms: list[float] = Field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    sizes: dict[str, Any] | None = None
    artifacts: dict[str, Any] = Field(default_factory=dict)
    init_comparison: InitComparison | None = None  # build --compare-init's table (None without it)

    @model_validator(mode="after")
    def _consistent(self) -> BuildReport:
        if self.failure is None and (self.budgets is None or self.spec is None or self.prediction is None):
            raise ValueError("a report without a failure needs budgets, spec and prediction")
        if self.failure is not None and self.verdict != "fail":
            raise ValueError("a failed build's verdict must be 'fail'")
        if self.failure is None and (self.verdict == "fail") != bool(self.failed_budgets):
            raise ValueError("verdict must be 'fail' exactly when failed_budgets is not empty")
        return self


class DeviceReport(_Open):
    """device_report.json, written on the device by the bundle's run_on_device.py (numpy only there).

    Read strictly (``wave_deploy.strict_json``) and validated field by field: an invalid report is exit 3
    naming the field, and is never merged."""

    schema_version: Literal[1]
    kind: Literal["device_report"]
    passed: bool
    profile: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    precision: str | None = None
    batch: Count | None = None
    model_file: str | None = None
    model_sha256: str | None = None
    latency: Latency | None = None
    parity: DeviceParity | None = None
    accuracy: DeviceAccuracy | None = None
    memory: DeviceMemory | None = None
    power_mode: Any = None
    hardware: str | None = None
    error: str | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def parse_build_report(data: object, where: str) -> BuildReport:
    """A BuildReport from parsed JSON; InvalidInputError naming ``where`` and the first bad field."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: a report must be a JSON object")
    if data.get("kind") != "build_report" or data.get("schema_version") != SCHEMA_VERSION:
        raise InvalidInputError(
            f"{where}: not a wave-deploy build report of schema_version {SCHEMA_VERSION} "
            f"(kind={data.get('kind')!r}, schema_version={data.get('schema_version')!r})",
            hint="rebuild it with this version of wave-deploy",
        )
    try:
        return BuildReport.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{where}: invalid report.json: {_first_error(exc)}") from None


def parse_device_report(data: object, where: str) -> DeviceReport:
    """A DeviceReport from parsed JSON; InvalidInputError naming ``where`` and the first bad field."""
    if not isinstance(data, dict) or data.get("kind") != "device_report":
        raise InvalidInputError(
            f"{where}: not a device report (kind 'device_report' written by run_on_device.py)"
        )
    if data.get("schema_version") != DEVICE_REPORT_SCHEMA_VERSION:
        raise InvalidInputError(
            f"{where}: schema_version {data.get('schema_version')!r}, expected {DEVICE_REPORT_SCHEMA_VERSION}"
        )
    try:
        return DeviceReport.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{where}: invalid device report: {_first_error(exc)}") from None


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a model, keeping explicit nulls (readers see every section)."""
    return model.model_dump(mode="json")


SCHEMAS: dict[str, type[BaseModel]] = {"report.json": BuildReport, "device_report.json": DeviceReport}


def schema_markdown() -> str:
    """docs/report-schema.md: the JSON Schema of every versioned file, generated from the models."""

    files: dict[str, type[BaseModel]] = {
        **SCHEMAS,
        "calibration file (wave-deploy calibrate)": CalibrationFile,
    }
    out = [
        "# Schemas of report.json, device_report.json and the calibration file",
        "",
        "Generated from the pydantic models in `wave_deploy/reports/schema.py` and",
        "`wave_deploy/calibration/file.py` by `python -m wave_deploy.reports > docs/report-schema.md`",
        "(tests/test_report_schema.py fails when this file and the models differ). Every reader validates",
        "through the same models: a file that does not match is exit 3, naming the file and the first bad",
        "field. See docs/reports.md for what the figures mean.",
        "",
        f"- report.json: schema_version {SCHEMA_VERSION}. A failed build keeps kind and version: `failure`",
        '  names the stage, exit code and message, `verdict` is "fail", and sections the failed stage',
        "  never produced are null.",
        f"- device_report.json: schema_version {DEVICE_REPORT_SCHEMA_VERSION}, written on the device by",
        "  the bundle's `run_on_device.py` (numpy only, no pydantic there).",
        "",
    ]
    for name, model in files.items():
        schema = json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        out += [f"## {name}", "", "```json", schema, "```", ""]
    return "\n".join(out)
