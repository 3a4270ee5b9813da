"""Samples measured on the device by the bundle's kit (`run_on_device.py --calibrate`), fitted into a calibration.

``read_samples`` reads a samples file strictly (``wave_deploy.strict_json``: no duplicate keys, NaN/Infinity
tokens, huge integers or deep nesting), every field typed (booleans are not numbers), every size within the
calibration file's limits (``file.SIZE_LIMITS``: no check loops long over a hostile size), latencies positive
and finite with p50 <= p90 <= p95 <= p99, widths equal to heads x the recorded head size, no point twice.
``fit_samples`` checks that the samples are the profile's (its name, runtime, deployed precision and deployed
ONNX variant: for TensorRT the engine's source) and of the geometry asked for, that the settings are the
design's timing (full or quick), and that the points are exactly a bundle design's (``design.bundle_point_sets``:
the full design or its quick subset for this profile's batches, at the samples' geometry); then fits them with
``calibrate.calibration_data``: the calibration file records the device's machine and runtime, the samples
file's sha256 and whether the design was the quick one (a smoke check: ``plan`` does not count it as calibrated
evidence). Any problem is InvalidInputError (exit 3) naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from wave_deploy import strict_json
from wave_deploy.calibration.design import TIMING, bundle_point_sets
from wave_deploy.calibration.file import SIZE_LIMITS
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_bytes
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.profiles import DeviceProfile
from wave_deploy.target import Target
from wave_deploy.wave.geometry import MAX_MLP_RATIO

SAMPLES_SCHEMA_VERSION = 1
SAMPLES_KIND = "calibration_samples"
MAX_SAMPLES_BYTES = 16 << 20

PositiveInt = Annotated[StrictInt, Field(ge=1)]
# Sizes up to the calibration file's limits (SIZE_LIMITS): a samples file fits into a calibration file, and every
# loop over its sizes (``design.bundle_point_sets``) stays short (issue 19).
Depth = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["depth"])]
Width = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["embed_dim"])]
Batch = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["batch"])]
ImgSize = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["img_size"])]
PatchSize = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["patch_size"])]
InChans = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["in_chans"])]
NumClasses = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["num_classes"])]
HeadDim = Annotated[StrictInt, Field(ge=1, le=SIZE_LIMITS["head_dim"])]
Ms = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSample(_Strict):
    depth: Depth
    embed_dim: Width
    num_heads: Width
    batch: Batch
    p50_ms: Ms
    p90_ms: Ms
    p95_ms: Ms
    p99_ms: Ms
    mean_ms: Ms
    iterations: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> DeviceSample:
        if not self.p50_ms <= self.p90_ms <= self.p95_ms <= self.p99_ms:
            raise ValueError("percentiles out of order (need p50 <= p90 <= p95 <= p99)")
        return self


class SamplesRuntime(_Strict):
    name: Literal["onnxruntime", "tensorrt"]
    version: str
    detail: str
    precision: Literal["fp32", "fp16", "int8"]
    threads: PositiveInt | None
    clock: Literal["wall", "thread", "gpu"]


class SamplesMachine(_Strict):
    cpu: str
    logical_cores: PositiveInt
    platform: str
    python: str
    date: str


class SamplesGeometry(_Strict):
    img_size: ImgSize
    patch_size: PatchSize
    in_chans: InChans
    num_classes: NumClasses
    mlp_ratio: Annotated[float, Field(strict=True, gt=0, le=MAX_MLP_RATIO, allow_inf_nan=False)]
    head_dim: HeadDim


class SamplesSettings(_Strict):
    passes: PositiveInt
    quick: bool
    warmup: Annotated[StrictInt, Field(ge=0)]
    iterations: PositiveInt
    min_duration_s: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class SamplesFile(_Strict):
    """What `run_on_device.py --calibrate --out FILE` writes."""

    schema_version: Literal[1]
    kind: Literal["calibration_samples"]
    profile: str
    variant: str  # the ONNX variant key timed (fp32, fp16, int8, int8_qdq)
    design_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    runtime: SamplesRuntime
    machine: SamplesMachine
    geometry: SamplesGeometry
    settings: SamplesSettings
    samples: list[DeviceSample] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SamplesFile:
        seen = set()
        for s in self.samples:
            if s.embed_dim != s.num_heads * self.geometry.head_dim:
                raise ValueError(
                    f"sample depth {s.depth} width {s.embed_dim}: {s.num_heads} heads of "
                    f"{self.geometry.head_dim} is not its width"
                )
            key = (s.depth, s.embed_dim, s.batch)
            if key in seen:
                raise ValueError(f"sample depth {s.depth} width {s.embed_dim} batch {s.batch} appears twice")
            seen.add(key)
        return self


def read_samples(path: str | Path) -> tuple[SamplesFile, str]:
    """The validated samples file and its sha256; InvalidInputError (exit 3) for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"samples file {path} does not exist")
    try:
        if path.stat().st_size > MAX_SAMPLES_BYTES:
            raise InvalidInputError(f"samples file {path} is larger than {MAX_SAMPLES_BYTES >> 20} MiB")
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"invalid samples file {path}: {' '.join(str(exc).split())}") from None
    raw = strict_json.loads(text, f"invalid samples file {path}")
    try:
        return SamplesFile.model_validate(raw), sha256_bytes(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InvalidInputError(f"invalid samples file {path}: field '{where}': {first['msg']}") from None


def check_fits(samples: SamplesFile, profile: DeviceProfile, expected: dict, path: str | Path) -> None:
    """The samples are this profile's (name, runtime, deployed precision) and of the ``expected`` geometry
    (only the keys given: image size, patch size, channels, MLP ratio, head size)."""
    target = Target.of(profile)
    problems = []
    if samples.profile != profile.name:
        problems.append(f"they were measured for profile '{samples.profile}', not '{profile.name}'")
    if samples.runtime.name != target.runtime:
        problems.append(
            f"they were measured with {samples.runtime.name}; '{profile.name}' deploys with {target.runtime}"
        )
    if samples.runtime.precision != target.precision:
        problems.append(
            f"they time {samples.runtime.precision} models; '{profile.name}' deploys {target.precision}"
        )
    variant = target.engine_source if target.tensorrt else target.deployed
    if samples.variant != variant.key:
        problems.append(
            f"they time the ONNX variant '{samples.variant}'; '{profile.name}' deploys '{variant.key}'"
        )
    for key, want in expected.items():
        got = getattr(samples.geometry, key)
        if want is not None and got != want:
            problems.append(f"their {key} is {got:g}, not the {want:g} asked for")
    problems += _settings_problems(samples)
    hint = None
    if not problems:
        problems += _points_problems(samples, profile)
        if problems:  # the design follows the profile's batches: a build's --set may have changed them
            hint = (
                "a bundle built with --set (e.g. runtime.batch_max, budgets.latency_batch) measures that "
                "profile's design: pass the build's --set options to calibrate"
            )
    if problems:
        raise InvalidInputError(f"samples file {path} does not fit: {'; '.join(problems)}", hint=hint)


def _settings_problems(samples: SamplesFile) -> list[str]:
    """The settings are the design's timing (full or quick) as the kit applies it: ONNX Runtime all of it,
    TensorRT (trtexec) the passes and iterations, without a warm-up count or a minimum duration."""
    settings = samples.settings
    timing = TIMING["quick" if settings.quick else "full"]
    want = {k: timing[k] for k in ("passes", "warmup", "iterations", "min_duration_s")}
    if samples.runtime.name == "tensorrt":
        want.update(warmup=0, min_duration_s=0.0)
    got = settings.model_dump()
    wrong = [f"{k} {got[k]!r} (the design's is {v!r})" for k, v in want.items() if got[k] != v]
    if wrong:
        which = "quick" if settings.quick else "full"
        return [f"their settings are not the {which} design's timing: {', '.join(wrong)}"]
    return []


def _points_problems(samples: SamplesFile, profile: DeviceProfile) -> list[str]:
    """The points are exactly a bundle design's for this profile (its quick subset when settings.quick)."""
    got = {(s.depth, s.embed_dim, s.batch) for s in samples.samples}
    geometry = samples.geometry.model_dump()
    depth, width = max(d for d, _, _ in got), max(w for _, w, _ in got)
    quick = samples.settings.quick
    candidates = bundle_point_sets(geometry, profile, quick=quick, depth=depth, embed_dim=width)
    if got in candidates:
        return []
    which = "quick subset of the design" if quick else "design"
    name = f"'{profile.name}'" + (f" with --set {' '.join(profile.overrides)}" if profile.overrides else "")
    if not candidates:
        return [f"no bundle's {which} for {name} has depths up to {depth} and widths up to {width}"]
    want = min(candidates, key=lambda c: len(c ^ got))
    extra, missing = sorted(got - want), sorted(want - got)
    top_depth, top_width = max(d for d, _, _ in want), max(w for _, w, _ in want)
    head = (
        f"{len(got)} points where the {which} for {name} (depth up to {top_depth}, width up to "
        f"{top_width}) has {len(want)}"
    )
    parts = [head]
    if extra:
        parts.append("not in it: " + ", ".join(f"depth {d} width {w} batch {b}" for d, w, b in extra[:3]))
    if missing:
        parts.append("missing: " + ", ".join(f"depth {d} width {w} batch {b}" for d, w, b in missing[:3]))
    return [f"they are not the points of a bundle's design: {'; '.join(parts)}"]


def space_of(samples: SamplesFile):
    """The SearchSpace of the samples' geometry (sizes: the samples' ranges)."""

    g = samples.geometry
    return SearchSpace(
        img_size=g.img_size, patch_size=g.patch_size, in_chans=g.in_chans, num_classes=g.num_classes,
        mlp_ratio=g.mlp_ratio, w=g.head_dim, head_dim=g.head_dim,
        max_depth=max(s.depth for s in samples.samples), max_embed_dim=max(s.embed_dim for s in samples.samples),
    )  # fmt: skip


def fit_samples(profile: DeviceProfile, path: str | Path, expected: dict | None = None):
    """The calibration file's content (a ``CalibrationFile``) fitted to a device's samples file."""
    from wave_deploy.calibration.calibrate import calibration_data

    samples, digest = read_samples(path)
    check_fits(samples, profile, expected or {}, path)
    rows = [s.model_dump() for s in samples.samples]
    try:
        return calibration_data(
            profile, rows, runtime=samples.runtime.name, detail=samples.runtime.detail,
            threads=samples.runtime.threads, clock=samples.runtime.clock, space=space_of(samples),
            machine=samples.machine.model_dump(),
            source={"kind": "device", "samples_file": str(path), "samples_sha256": digest},
            quick=samples.settings.quick,
        )  # fmt: skip
    except InvalidInputError as exc:
        raise InvalidInputError(f"samples file {path}: {exc}") from exc
