"""Samples measured on the device by the bundle's kit (`run_on_device.py --calibrate`), fitted into a calibration.

``read_samples`` reads a samples file strictly: JSON without duplicate keys or NaN/Infinity tokens, every
field typed (booleans are not numbers), latencies positive and finite with p50 <= p90 <= p95 <= p99, widths
equal to heads x the recorded head size, no point twice. ``fit_samples`` checks that the samples are the
profile's (its name, runtime and deployed precision) and of the geometry asked for, and fits them with
``calibrate.calibration_data``: the calibration file then records the device's machine and runtime, and the
samples file's sha256. Any problem is InvalidInputError (exit 3) naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_bytes
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.profiles import DeviceProfile
from wave_deploy.target import Target

SAMPLES_SCHEMA_VERSION = 1
SAMPLES_KIND = "calibration_samples"
MAX_SAMPLES_BYTES = 16 << 20

PositiveInt = Annotated[StrictInt, Field(ge=1)]
Ms = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSample(_Strict):
    depth: PositiveInt
    embed_dim: PositiveInt
    num_heads: PositiveInt
    batch: PositiveInt
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
    img_size: PositiveInt
    patch_size: PositiveInt
    in_chans: PositiveInt
    num_classes: PositiveInt
    mlp_ratio: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    head_dim: PositiveInt


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
    design_sha256: str
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


def _pairs(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_samples(path: str | Path) -> tuple[SamplesFile, str]:
    """The validated samples file and its sha256; InvalidInputError (exit 3) for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"samples file {path} does not exist")
    try:
        if path.stat().st_size > MAX_SAMPLES_BYTES:
            raise InvalidInputError(f"samples file {path} is larger than {MAX_SAMPLES_BYTES >> 20} MiB")
        data = path.read_bytes()
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"invalid samples file {path}: {exc}") from exc
    try:
        return SamplesFile.model_validate(raw), sha256_bytes(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InvalidInputError(f"invalid samples file {path}: field '{where}': {first['msg']}") from exc


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
    for key, want in expected.items():
        got = getattr(samples.geometry, key)
        if want is not None and got != want:
            problems.append(f"their {key} is {got:g}, not the {want:g} asked for")
    if problems:
        raise InvalidInputError(f"samples file {path} does not fit: {'; '.join(problems)}")


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
        )  # fmt: skip
    except InvalidInputError as exc:
        raise InvalidInputError(f"samples file {path}: {exc}") from exc
