"""The calibration file (docs/latency.md): its schema, and the one place that reads and writes it.

``CalibrationFile`` is the whole file as a pydantic model (versioned by ``schema_version``, unknown fields
rejected). ``read_calibration_file`` validates a file and raises InvalidInputError (exit 3) naming the first bad
field; ``write_calibration_file`` writes a validated model atomically. ``wave_deploy.calibration.calibrate`` makes the
content; ``wave_deploy.planning.latency`` predicts with it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import write_json

# 2: adds ``covered`` (the measured depth, width and batch ranges). 3: adds ``source`` (measured here or on a
# device by the kit) and ``geometry.head_dim``; TensorRT runtimes (threads null, clock "gpu"). 2 is still read.
CALIBRATION_SCHEMA_VERSION = 3

# The calibrated latency model's features, in the order of its coefficients (wave_deploy.planning.latency.features).
FEATURES = (
    "run",  # one per inference: session call, input/output copies
    "kernels",  # ops executed
    "gemm_gflop",
    "attention_gflop",
    "softmax_mb",
    "elementwise_mb",
    "weight_mb",  # weights read once per inference
    "spilled_weight_mb",  # weights beyond the fitted cache size: read from DRAM every inference
)
PERCENTILES = ("p50", "p90", "p95", "p99")

Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sample(_Strict):
    """One measured (shape, batch) point: latency statistics of the best pass."""

    depth: int = Field(ge=1)
    embed_dim: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    batch: int = Field(ge=1)
    p50_ms: float = Field(gt=0)
    p90_ms: float = Field(gt=0)
    p95_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    mean_ms: float = Field(gt=0)
    iterations: int = Field(ge=1)


class Geometry(_Strict):
    img_size: int = Field(ge=1)
    patch_size: int = Field(ge=1)
    in_chans: int = Field(ge=1)
    num_classes: int = Field(ge=1)
    mlp_ratio: float = Field(gt=0)
    head_dim: int | None = Field(default=None, ge=1)  # channels per attention head (None: a version-2 file)


class Span(_Strict):
    lo: int = Field(ge=1)
    hi: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo} is above hi {self.hi}")
        return self


class Covered(_Strict):
    """The sizes the calibration measured (at ``geometry``): predictions outside them are extrapolated."""

    depth: Span
    embed_dim: Span
    batch: Span


class RuntimeInfo(_Strict):
    name: Literal["onnxruntime", "torch", "tensorrt"]
    version: str
    detail: str  # what executed, e.g. "onnxruntime 1.32.0 [CPUExecutionProvider]"
    precision: Precision
    threads: int | None = Field(ge=1)  # intra-op threads; null for TensorRT
    clock: Literal["wall", "thread", "gpu"]  # gpu: TensorRT's per-iteration GPU compute time (trtexec)

    @model_validator(mode="after")
    def _threads(self) -> RuntimeInfo:
        if (self.threads is None) != (self.name == "tensorrt"):
            raise ValueError("threads is null exactly for TensorRT")
        return self


class Source(_Strict):
    """Where the samples were measured: here by `calibrate` ("local"), or on a device by the bundle's kit
    (`run_on_device.py --calibrate`, fitted by `calibrate --from-device`; with the samples file's sha256)."""

    kind: Literal["local", "device"]
    samples_file: str | None
    samples_sha256: str | None


class Machine(_Strict):
    cpu: str
    logical_cores: int = Field(ge=1)
    platform: str
    python: str
    date: str


class LatencyModel(_Strict):
    features: list[str]
    coefficients_ms: dict[str, float]  # ms per unit of each feature
    cache_mb: float  # -1: no cache term
    percentile_factors: dict[str, float]  # p50, p90, p95, p99 (checked below)
    weight_precision: Precision
    activation_precision: Precision

    @model_validator(mode="after")
    def _usable(self) -> LatencyModel:
        if tuple(self.features) != FEATURES or set(self.coefficients_ms) != set(FEATURES):
            raise ValueError(
                f"its features {self.features} are not this version's {list(FEATURES)}; "
                "re-run wave-deploy calibrate"
            )
        bad = [k for k, v in self.coefficients_ms.items() if not (math.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(f"negative or non-finite coefficient(s) {bad}")
        factors = self.percentile_factors
        if set(factors) != set(PERCENTILES) or any(not (1.0 <= v < 100) for v in factors.values()):
            raise ValueError("percentile_factors need p50..p99, each >= 1")
        return self


class Fit(_Strict):
    n_samples: int = Field(ge=1)
    mape_pct: float = Field(ge=0)
    max_abs_pct: float = Field(ge=0)
    within_10pct: float = Field(ge=0, le=1)


class CalibrationFile(_Strict):
    """A calibration file: the runtime and machine measured, the fitted latency model and every sample."""

    schema_version: Literal[2, 3]
    profile: str
    source: Source | None = None  # required from version 3
    runtime: RuntimeInfo
    machine: Machine
    geometry: Geometry
    covered: Covered
    model: LatencyModel
    fit: Fit
    samples: list[Sample] = Field(min_length=1)

    @model_validator(mode="after")
    def _samples_inside_covered(self) -> CalibrationFile:
        if self.schema_version >= 3 and (self.source is None or self.geometry.head_dim is None):
            raise ValueError("a version-3 file records its source and geometry.head_dim")
        for key in ("depth", "embed_dim", "batch"):
            span: Span = getattr(self.covered, key)
            values = [getattr(s, key) for s in self.samples]
            if min(values) != span.lo or max(values) != span.hi:
                raise ValueError(
                    f"covered.{key} {span.lo}..{span.hi} is not the samples' range {min(values)}..{max(values)}"
                )
        return self

    @classmethod
    def build(cls, data: dict) -> CalibrationFile:
        """Validate freshly made content (e.g. measured tails too wide to use): InvalidInputError, exit 3."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(
                f"the calibration just measured is not usable: {_first_error(exc)}"
            ) from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"field '{where}': {first['msg']}"


def read_calibration_file(path: str | Path) -> CalibrationFile:
    """Read and validate a calibration file; any problem raises InvalidInputError (exit 3)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"calibration file {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"invalid calibration file {path}: {exc}") from exc
    try:
        return CalibrationFile.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid calibration file {path}: {_first_error(exc)}") from exc


def write_calibration_file(calibration: CalibrationFile, path: str | Path) -> Path:
    """Write ``calibration`` atomically as JSON; an unwritable path raises InvalidInputError (exit 3)."""
    try:
        return write_json(path, calibration.model_dump(mode="json"))
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write calibration file {path}: {exc}", hint="pass --out FILE"
        ) from exc
