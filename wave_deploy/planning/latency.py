"""Latency models of a ViTSpec on a device profile: analytic (roofline per kernel) and calibrated (fitted).

Both models see one inference as the list of kernel-level ops a runtime executes (``model_ops``): per block
norm1, qkv, Q K^T, softmax, A V, proj, residual add, norm2, fc1, GELU, fc2, residual add; before and after the
blocks the patch embedding, the class-token/position add, the final norm and the head.

- Analytic: each op takes max(flops / (peak x compute_efficiency), bytes / (bandwidth x memory_efficiency))
  plus the profile's per-kernel overhead; peak is the profile's peak at the op's precision (scaled by the
  share of cores the runtime uses on CPUs).
- Calibrated: the same ops summed into a few features (kernel count, GEMM and attention GFLOP, softmax and
  elementwise traffic, weight bytes, weight bytes that do not fit the cache), with non-negative coefficients
  fitted to whole-model measurements made on the device by ``calibrate`` (docs/latency.md).

Both predict a typical (median, p50) latency. ``Prediction.at('p99')`` maps it to a budget percentile with a
factor: measured on the device for calibrated models, DEFAULT_PERCENTILE_FACTORS otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from wave_deploy.calibration.file import (
    FEATURES,
    CalibrationFile,
    features,
    predicted_ms,
    read_calibration_file,
)
from wave_deploy.errors import InvalidInputError
from wave_deploy.profiles import DeviceProfile
from wave_deploy.spec import ViTSpec, model_ops
from wave_deploy.target import Target

log = logging.getLogger(__name__)

# Tail over median when nothing was measured: a quiet, pinned device (CHOICE, docs/latency.md).
DEFAULT_PERCENTILE_FACTORS = {"p50": 1.00, "p90": 1.05, "p95": 1.07, "p99": 1.10}

# Geometry a calibrated prediction must share with its file to be inside the calibrated range.
RANGE_GEOMETRY = ("img_size", "patch_size", "in_chans", "mlp_ratio")


@dataclass(frozen=True)
class Prediction:
    """Predicted typical (p50) latency of one spec at one batch, and where the number comes from."""

    latency_ms: float
    batch: int
    source: (
        str  # "analytic", "calibrated:<file>", or "quick-calibration:<file>" (a quick design: not calibrated)
    )
    breakdown_ms: dict[str, float]  # analytic: per op (summed over layers); calibrated: per feature
    percentile_factors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PERCENTILE_FACTORS))
    notes: tuple[str, ...] = ()

    def at(self, percentile: str) -> float:
        """Predicted latency at a budget percentile ('p50', 'p90', 'p95', 'p99')."""
        if percentile not in self.percentile_factors:
            raise InvalidInputError(f"unknown percentile {percentile!r}; expected one of p50, p90, p95, p99")
        return self.latency_ms * self.percentile_factors[percentile]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        return data


def _peak_flops(profile: DeviceProfile, precision: str) -> float:
    """FLOP/s the runtime can reach at ``precision``: the profile's peak, times the share of CPU cores used."""
    hw = profile.hardware
    peak = {"fp32": hw.peak_tflops_fp32, "fp16": hw.peak_tflops_fp16, "int8": hw.peak_tops_int8}[
        precision
    ] * 1e12
    threads = profile.runtime.intra_op_threads
    if hw.accelerator == "cpu" and threads:
        peak *= min(threads, hw.cpu_cores) / hw.cpu_cores
    return peak


def predict_analytic(spec: ViTSpec, profile: DeviceProfile, batch: int) -> Prediction:
    """Roofline per op from the profile's hardware facts and efficiency factors (uncalibrated)."""
    lm = profile.latency_model
    target = Target.of(profile)
    w_prec, a_prec = target.weight_dtype, target.activation_dtype
    matmul_peak = _peak_flops(profile, w_prec) * lm.compute_efficiency
    vector_peak = _peak_flops(profile, a_prec) * lm.compute_efficiency
    bandwidth = profile.hardware.memory_bandwidth_gb_per_s * 1e9 * lm.memory_efficiency
    overhead_s = lm.per_kernel_overhead_us * 1e-6
    breakdown: dict[str, float] = {}
    for op in model_ops(spec, batch, w_prec, a_prec):
        peak = matmul_peak if op.kind in ("gemm", "attention") else vector_peak
        seconds = max(op.flops / peak, op.bytes / bandwidth) + overhead_s
        breakdown[op.name] = breakdown.get(op.name, 0.0) + 1e3 * seconds * op.count
    return Prediction(
        latency_ms=sum(breakdown.values()), batch=batch, source="analytic", breakdown_ms=breakdown
    )


# --- calibrated model: features, fit, file -----------------------------------------------------------------


def nnls(a, b, *, tol: float = 1e-12, max_iter: int | None = None):
    """Non-negative least squares min ||a x - b|| s.t. x >= 0 (Lawson and Hanson's active-set method)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(max_iter or 3 * n + 10):
        grad = a.T @ (b - a @ x)  # negative gradient of 0.5 ||a x - b||^2
        if passive.all() or grad[~passive].max() <= tol * max(1.0, abs(grad).max()):
            break
        passive[int(np.argmax(np.where(passive, -np.inf, grad)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            blocking = passive & (z <= 0)
            step = np.min(x[blocking] / (x[blocking] - z[blocking]))
            x = x + step * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
    return x


@dataclass(frozen=True)
class FitResult:
    coefficients: dict[str, float]  # ms per unit of each feature
    cache_mb: float
    mape_pct: float  # on the fitted samples
    max_abs_pct: float
    within_10pct: float


def _relative_errors(pred, meas):
    import numpy as np

    return np.abs(np.asarray(pred) - np.asarray(meas)) / np.asarray(meas)


def fit_latency(rows: list[tuple[ViTSpec, int, float]], weight_prec: str, act_prec: str) -> FitResult:
    """Fit FEATURES coefficients to (spec, batch, measured p50 ms) rows, minimizing squared relative error.

    The cache size (a nonlinear parameter) is chosen from a log grid by the same criterion.
    """
    import numpy as np

    if len(rows) < len(FEATURES):
        raise InvalidInputError(f"need at least {len(FEATURES)} measurements to fit, got {len(rows)}")
    meas = np.array([r[2] for r in rows], dtype=np.float64)
    if not np.all(np.isfinite(meas)) or (meas <= 0).any():
        raise InvalidInputError("measured latencies must be positive and finite")
    best: tuple[float, float, Any, Any] | None = None  # (score, cache_mb, coefficients, errors)
    for cache_mb in [math.inf] + [0.25 * 2 ** (k / 2) for k in range(21)]:  # 0.25 MB .. 256 MB
        x = np.array([features(s, bt, weight_prec, act_prec, cache_mb) for s, bt, _ in rows])
        a = x / meas[:, None]  # rows scaled by 1 / measured: least squares on relative error
        scale = np.maximum(np.abs(a).max(axis=0), 1e-30)  # column scaling for conditioning
        coef = nnls(a / scale, np.ones(len(rows))) / scale
        err = _relative_errors(x @ coef, meas)
        score = float(np.sqrt(np.mean(err**2)))
        if best is None or score < best[0] - 1e-12:
            best = (score, cache_mb, coef, err)
    _, cache_mb, coef, err = cast(tuple[float, float, Any, Any], best)  # the grid is never empty
    return FitResult(
        coefficients={name: float(c) for name, c in zip(FEATURES, coef)},
        cache_mb=float(cache_mb) if math.isfinite(cache_mb) else -1.0,  # -1: no cache term
        mape_pct=float(100 * err.mean()),
        max_abs_pct=float(100 * err.max()),
        within_10pct=float((err <= 0.10).mean()),
    )


# --- a calibration file, as a predictor --------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A validated calibration file (``file``, read by wave_deploy.calibration.file) and the model it holds."""

    path: str
    file: CalibrationFile

    @property
    def profile(self) -> str:
        return self.file.profile

    @property
    def data(self) -> dict:
        """The file's content as plain JSON-ready data."""
        return self.file.model_dump(mode="json")

    def predict(self, spec: ViTSpec, batch: int, *, profile: DeviceProfile | None = None) -> Prediction:
        if profile is not None and profile.name != self.profile:
            raise InvalidInputError(
                f"calibration file {self.path} was made for profile '{self.profile}', not '{profile.name}'"
            )
        model = self.file.model
        latency, parts = predicted_ms(model, spec, batch)
        return Prediction(
            latency_ms=latency,
            batch=batch,
            source=f"{'quick-calibration' if self.file.quick else 'calibrated'}:{self.path}",
            breakdown_ms=parts,
            percentile_factors=dict(model.percentile_factors),
            notes=self._range_notes(spec, batch),
        )

    def _range_notes(self, spec: ViTSpec, batch: int) -> tuple[str, ...]:
        """Why a prediction is outside what was measured: another geometry (image size, patch, channels, MLP
        ratio, head size; the head's class count is not flagged), or depth, width or batch beyond the covered
        range."""
        notes = []
        geometry = self.file.geometry
        differs = [
            f"{k} {getattr(spec, k)} (calibrated {getattr(geometry, k)})"
            for k in RANGE_GEOMETRY
            if getattr(spec, k) != getattr(geometry, k)
        ]
        if geometry.head_dim is not None and spec.head_dim != geometry.head_dim:  # version-2 files: unknown
            differs.append(f"head_dim {spec.head_dim} (calibrated {geometry.head_dim})")
        if differs:
            notes.append("extrapolated: " + ", ".join(differs))
        covered = self.file.covered
        for key, value in (("depth", spec.depth), ("embed_dim", spec.embed_dim), ("batch", batch)):
            span = getattr(covered, key)
            if not span.lo <= value <= span.hi:
                notes.append(f"extrapolated: {key}={value} outside the calibrated {span.lo}..{span.hi}")
        return tuple(notes)


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; any problem raises InvalidInputError (exit 3)."""
    return Calibration(path=str(path), file=read_calibration_file(path))


def profile_calibration(profile: DeviceProfile) -> Calibration | None:
    """The profile's own calibration (kind 'calibrated'), its file resolved relative to the profile file."""
    lm = profile.latency_model
    if lm.kind != "calibrated" or not lm.calibration_file:  # the profile's validator requires the file
        return None
    path = Path(lm.calibration_file)
    if not path.is_absolute() and profile.source_file:
        path = Path(profile.source_file).parent / path
    calibration = load_calibration(path)
    if calibration.profile != profile.name:  # what predict() refuses, found when the profile is read
        raise InvalidInputError(
            f"calibration file {path} was made for profile '{calibration.profile}', not '{profile.name}'"
        )
    return calibration


def predict(
    spec: ViTSpec,
    profile: DeviceProfile,
    batch: int | None = None,
    *,
    calibration: Calibration | str | Path | None = None,
) -> Prediction:
    """Predicted p50 latency of ``spec`` on ``profile`` at ``batch`` (default: the budget's batch).

    ``calibration``: a Calibration, a path to a calibration file, or None for the profile's own
    (``latency_model.calibration_file`` when kind is 'calibrated'), else the analytic model.
    """
    batch = profile.budgets.latency_batch if batch is None else batch
    if isinstance(calibration, (str, Path)):
        calibration = load_calibration(calibration)
    elif calibration is None:
        calibration = profile_calibration(profile)
    if calibration is None:
        return predict_analytic(spec, profile, batch)
    return calibration.predict(spec, batch, profile=profile)
