"""The calibration file (docs/latency.md): its schema, and the one place that reads and writes it.

``CalibrationFile`` is the whole file as a pydantic model (versioned by ``schema_version``, unknown fields
rejected). ``read_calibration_file`` reads a file as strict JSON (``wave_deploy.strict_json``: no duplicate keys,
NaN, Infinity, huge integers or deep nesting), validates it in strict mode (a string is not a number, every number
finite, every size within SIZE_LIMITS), recomputes every sample's prediction from the stored model and requires
the recorded fit (sample count, MAPE, worst error, share within 10%) to be what the samples and the model give;
anything wrong (an arithmetic error while recomputing too) raises InvalidInputError (exit 3) naming the first bad
field. ``write_calibration_file`` writes a validated model
atomically. ``wave_deploy.calibration.calibrate`` makes the
content; ``wave_deploy.planning.latency`` predicts with it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wave_deploy import strict_json
from wave_deploy.errors import InvalidInputError, WaveDeployError
from wave_deploy.fileio import write_json
from wave_deploy.profiles import MAX_BATCH
from wave_deploy.spec import IMG_SIZE_MAX, ViTSpec, model_ops, weight_bytes
from wave_deploy.wave.geometry import GEOMETRY_LIMITS, MAX_MLP_RATIO, TARGET_LIMITS

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
MAX_CALIBRATION_BYTES = 16 << 20  # a real file is a few kB (a sample is a line)

Precision = Literal["fp32", "fp16", "int8"]

# The largest value of each size a calibration file (and a device's samples file, calibration.device_samples)
# may hold: a bank's geometry (GEOMETRY_LIMITS: what `calibrate` measures by default), which includes the largest
# model a bank makes (TARGET_LIMITS: what a bundle's design covers) and the image-size rule (IMG_SIZE_MAX); the
# largest batch a profile names (MAX_BATCH). Far above any real ViT, they keep every feature a file's samples give
# finite and every loop over its sizes short (issue 19).
SIZE_LIMITS = {
    "img_size": IMG_SIZE_MAX,
    "patch_size": GEOMETRY_LIMITS["patch_size"],
    "in_chans": GEOMETRY_LIMITS["in_chans"],
    "num_classes": GEOMETRY_LIMITS["num_classes"],
    "head_dim": GEOMETRY_LIMITS["head_dim"],
    "depth": max(GEOMETRY_LIMITS["max_depth"], TARGET_LIMITS["depth"]),
    "embed_dim": max(GEOMETRY_LIMITS["max_embed_dim"], TARGET_LIMITS["embed_dim"]),
    "batch": MAX_BATCH,
}


# How far a recorded fit statistic may be from the one recomputed on reading (float rounding of the sums).
FIT_REL_TOL = 1e-6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Sample(_Strict):
    """One measured (shape, batch) point: latency statistics of the best pass."""

    depth: int = Field(ge=1, le=SIZE_LIMITS["depth"])
    embed_dim: int = Field(ge=1, le=SIZE_LIMITS["embed_dim"])
    num_heads: int = Field(ge=1, le=SIZE_LIMITS["embed_dim"])
    batch: int = Field(ge=1, le=SIZE_LIMITS["batch"])
    p50_ms: float = Field(gt=0)
    p90_ms: float = Field(gt=0)
    p95_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    mean_ms: float = Field(gt=0)
    iterations: int = Field(ge=1)


class Geometry(_Strict):
    img_size: int = Field(ge=1, le=SIZE_LIMITS["img_size"])
    patch_size: int = Field(ge=1, le=SIZE_LIMITS["patch_size"])
    in_chans: int = Field(ge=1, le=SIZE_LIMITS["in_chans"])
    num_classes: int = Field(ge=1, le=SIZE_LIMITS["num_classes"])
    mlp_ratio: float = Field(gt=0, le=MAX_MLP_RATIO)
    # channels per attention head (None: a version-2 file)
    head_dim: int | None = Field(default=None, ge=1, le=SIZE_LIMITS["head_dim"])


SPAN_MAX = max(SIZE_LIMITS[k] for k in ("depth", "embed_dim", "batch"))  # a Span is one of Covered's ranges


class Span(_Strict):
    lo: int = Field(ge=1, le=SPAN_MAX)
    hi: int = Field(ge=1, le=SPAN_MAX)

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
        if not any(v > 0 for v in self.coefficients_ms.values()):
            raise ValueError("every coefficient is 0: the model predicts no time at all")
        if not (self.cache_mb == -1 or 0 < self.cache_mb < 1e9):
            raise ValueError(f"cache_mb {self.cache_mb} is neither -1 (no cache term) nor a positive size")
        factors = self.percentile_factors
        if set(factors) != set(PERCENTILES) or any(not (1.0 <= v < 100) for v in factors.values()):
            raise ValueError("percentile_factors need p50..p99, each >= 1")
        return self


class Fit(_Strict):
    n_samples: int = Field(ge=1)
    mape_pct: float = Field(ge=0)
    max_abs_pct: float = Field(ge=0)
    within_10pct: float = Field(ge=0, le=1)


def features(spec: ViTSpec, batch: int, weight_prec: str, act_prec: str, cache_mb: float) -> list[float]:
    """Values of FEATURES for one inference (units in the names; MB = 1e6 bytes)."""
    ops = model_ops(spec, batch, weight_prec, act_prec)
    total = {"gemm": 0.0, "attention": 0.0, "softmax": 0.0, "elementwise": 0.0}
    for op in ops:
        total[op.kind] += (op.flops if op.kind in ("gemm", "attention") else op.bytes) * op.count
    weights_mb = weight_bytes(spec, weight_prec) / 1e6
    return [
        1.0,
        float(sum(op.count for op in ops)),
        total["gemm"] / 1e9,
        total["attention"] / 1e9,
        total["softmax"] / 1e6,
        total["elementwise"] / 1e6,
        weights_mb,
        max(0.0, weights_mb - cache_mb),
    ]


def sample_spec(geometry: Geometry, sample: Sample) -> ViTSpec:
    """The ViTSpec a sample measured (the file's geometry, the sample's size)."""
    return ViTSpec(
        depth=sample.depth, embed_dim=sample.embed_dim, num_heads=sample.num_heads,
        mlp_ratio=geometry.mlp_ratio, patch_size=geometry.patch_size, img_size=geometry.img_size,
        in_chans=geometry.in_chans, num_classes=geometry.num_classes,
    )  # fmt: skip


def predicted_ms(model: LatencyModel, spec: ViTSpec, batch: int) -> tuple[float, dict[str, float]]:
    """The model's typical (p50) latency of ``spec`` at ``batch`` and its per-feature parts."""
    cache_mb = model.cache_mb if model.cache_mb >= 0 else math.inf
    values = features(spec, batch, model.weight_precision, model.activation_precision, cache_mb)
    parts = {name: model.coefficients_ms[name] * v for name, v in zip(FEATURES, values)}
    return sum(parts.values()), parts


def fit_statistics(model: LatencyModel, geometry: Geometry, samples: list[Sample]) -> dict:
    """The fit block the model and the samples give: the count, mean and worst relative error of the predicted
    p50 against the measured one (in %), and the share within 10% (``[low, high]``: the share counting only
    errors clearly within 10%, and counting those within float rounding of it too)."""
    errors = [abs(predicted_ms(model, sample_spec(geometry, s), s.batch)[0] - s.p50_ms) / s.p50_ms
              for s in samples]  # fmt: skip
    n = len(errors)
    return {
        "n_samples": n,
        "mape_pct": 100 * sum(errors) / n,
        "max_abs_pct": 100 * max(errors),
        "within_10pct": [
            sum(e <= 0.10 - 1e-9 for e in errors) / n,
            sum(e <= 0.10 + 1e-9 for e in errors) / n,
        ],
    }


class CalibrationFile(_Strict):
    """A calibration file: the runtime and machine measured, the fitted latency model and every sample."""

    schema_version: Literal[2, 3]
    profile: str
    source: Source | None = None  # required from version 3
    # The design's quick subset (`calibrate --quick`, `run_on_device.py --calibrate --quick`): a smoke check, not
    # calibrated evidence (planning.latency names its predictions "quick-calibration:<file>"). Absent: false.
    quick: bool = False
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
        self._fit_is_the_samples()
        return self

    def _fit_is_the_samples(self) -> None:
        """The recorded fit is what the stored model gives on the stored samples (an edited file is not)."""
        try:
            want = fit_statistics(self.model, self.geometry, self.samples)
        except WaveDeployError as exc:
            raise ValueError(f"a sample is not a model of this geometry: {exc.message}") from None
        except ArithmeticError as exc:  # pydantic turns only ValueError into a validation error
            raise ValueError(f"the model's predictions of the samples cannot be computed: {exc}") from None
        fit = self.fit
        if fit.n_samples != want["n_samples"]:
            raise ValueError(f"fit.n_samples {fit.n_samples} is not the {want['n_samples']} samples recorded")
        for key in ("mape_pct", "max_abs_pct"):
            got = getattr(fit, key)
            if not math.isclose(got, want[key], rel_tol=FIT_REL_TOL, abs_tol=1e-9):
                raise ValueError(
                    f"fit.{key} {got:.6g} is not what the model gives on the samples ({want[key]:.6g}): "
                    "the file was edited after fitting; re-run wave-deploy calibrate"
                )
        low, high = want["within_10pct"]
        if not low - 1e-12 <= fit.within_10pct <= high + 1e-12:
            raise ValueError(
                f"fit.within_10pct {fit.within_10pct:.6g} is not what the model gives on the samples "
                f"({low:.6g}): the file was edited after fitting; re-run wave-deploy calibrate"
            )

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
        if path.stat().st_size > MAX_CALIBRATION_BYTES:
            raise InvalidInputError(
                f"invalid calibration file {path}: larger than {MAX_CALIBRATION_BYTES >> 20} MiB"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"invalid calibration file {path}: {' '.join(str(exc).split())}") from None
    raw = strict_json.loads(text, f"invalid calibration file {path}")
    try:
        return CalibrationFile.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid calibration file {path}: {_first_error(exc)}") from None


def write_calibration_file(calibration: CalibrationFile, path: str | Path) -> Path:
    """Write ``calibration`` atomically as JSON; an unwritable path raises InvalidInputError (exit 3)."""
    try:
        return write_json(path, calibration.model_dump(mode="json"))
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write calibration file {path}: {exc}", hint="pass --out FILE"
        ) from exc
