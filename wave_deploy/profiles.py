"""Device profiles: hardware facts, runtime settings, budgets and latency model of one target device.

Profiles are YAML files (``profiles/*.yaml`` in the repository, shipped in the wheel as
``wave_deploy/_profiles``). Units live in field names; unknown keys are an error. ``load_profile`` accepts a
name, an alias or a path. Every failure raises ``InvalidInputError`` (exit 3) naming the file and the field.
"""

from __future__ import annotations

import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.profile_yaml import read_profile_yaml, read_yaml_value

Precision = Literal["fp32", "fp16", "int8"]
Runtime = Literal["tensorrt", "onnxruntime"]
Percentile = Literal["p50", "p90", "p95", "p99"]


MAX_BATCH = 65536  # the largest batch any profile field may name (bench --batch has the same bound)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # inf and nan: exit 3

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``latency_ms: true`` is a mistake, not 1.0 (pydantic's lax mode would convert it)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            kinds = {annotation, *typing.get_args(annotation)}
            if bool not in kinds and {int, float} & kinds:
                raise ValueError("expected a number, not a boolean")
        return value


class PowerMode(_Strict):
    """Jetson power setting; latency figures are meaningless without it."""

    nvpmodel_mode: str
    jetson_clocks: bool


class Hardware(_Strict):
    accelerator: Literal["gpu", "cpu"]
    device_name: str
    cpu_cores: int = Field(gt=0)
    cpu_clock_ghz: float = Field(gt=0)
    gpu_sm_count: int | None = Field(default=None, gt=0)
    gpu_clock_mhz: float | None = Field(default=None, gt=0)
    compute_capability: str | None = None
    peak_tflops_fp32: float = Field(gt=0)
    peak_tflops_fp16: float = Field(gt=0)
    peak_tops_int8: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    memory_bandwidth_gb_per_s: float = Field(gt=0)
    unified_memory: bool
    power_mode: PowerMode | None = None
    build_host_is_device: bool = Field(
        default=False,
        description="True only when builds run on this device itself (or an identical machine under the same "
        "load): the local benchmark then counts as measured evidence ('host') for the budgets. No shipped "
        "profile sets it.",
    )

    @model_validator(mode="after")
    def _gpu_facts(self) -> Hardware:
        if self.accelerator == "gpu":
            missing = [
                name
                for name in ("gpu_sm_count", "gpu_clock_mhz", "compute_capability")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"a gpu profile needs {', '.join(missing)}")
        return self


class Software(_Strict):
    runtime: Runtime
    jetpack_version: str | None = None
    tensorrt_version: str | None = None
    cuda_version: str | None = None
    onnxruntime_version: str | None = None
    engine_built_on_device: bool = Field(
        description="True when the TensorRT engine must be built on the device itself (write a bundle)."
    )


class RuntimeSettings(_Strict):
    precision: Precision
    batch_min: int = Field(ge=1, le=MAX_BATCH)
    batch_opt: int = Field(ge=1, le=MAX_BATCH)
    batch_max: int = Field(ge=1, le=MAX_BATCH)
    input_size_px: int = Field(gt=0, description="The input resolution the budgets were set for.")
    workspace_mib: int | None = Field(default=None, gt=0)
    intra_op_threads: int | None = Field(default=None, gt=0)
    int8_method: Literal["static", "dynamic"] = Field(
        default="static",
        description="static: QDQ calibrated on training images; dynamic: activations quantized at run time "
        "(ONNX Runtime only).",
    )
    max_accuracy_drop_points: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="fp16/int8 variants pass when their validation top-1 is at most this many percentage "
        "points below the ONNX fp32 model's.",
    )

    @model_validator(mode="after")
    def _batch_order(self) -> RuntimeSettings:
        if not self.batch_min <= self.batch_opt <= self.batch_max:
            raise ValueError(
                f"need batch_min <= batch_opt <= batch_max, got {self.batch_min}/{self.batch_opt}/{self.batch_max}"
            )
        return self


class Budgets(_Strict):
    latency_ms: float = Field(gt=0)
    latency_percentile: Percentile
    latency_batch: int = Field(default=1, ge=1, le=MAX_BATCH)
    memory_mib: float = Field(gt=0)
    build_memory_mib: float | None = Field(default=None, gt=0)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    # the built model's validation accuracy must exceed this many times chance (1 / classes); null: off
    min_accuracy_over_chance: float | None = Field(default=1.5, ge=0)
    require_evidence: Literal["device", "calibrated", "any"] = Field(
        default="any",
        description="The weakest evidence a budget may be judged on (device > calibrated > any); build "
        "--require-evidence can only make it stricter. A check judged on less fails (exit 9).",
    )


class LatencyModelSettings(_Strict):
    """How latency is predicted until (and after) the device is calibrated."""

    kind: Literal["analytic", "calibrated"] = "analytic"
    calibration_file: str | None = None
    compute_efficiency: float = Field(gt=0, le=1)
    memory_efficiency: float = Field(gt=0, le=1)
    per_kernel_overhead_us: float = Field(ge=0)
    runtime_overhead_mib: float = Field(ge=0)

    @model_validator(mode="after")
    def _calibrated_needs_file(self) -> LatencyModelSettings:
        if self.kind == "calibrated" and not self.calibration_file:
            raise ValueError("kind 'calibrated' needs calibration_file")
        return self


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    aliases: list[str] = Field(default_factory=list)
    description: str
    hardware: Hardware
    software: Software
    runtime: RuntimeSettings
    budgets: Budgets
    latency_model: LatencyModelSettings
    source_file: str | None = Field(default=None, exclude=True)
    overrides: tuple[str, ...] = Field(default=(), exclude=True)  # `--set` settings applied on load

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.software.runtime == "tensorrt" and self.hardware.accelerator != "gpu":
            raise ValueError("runtime 'tensorrt' needs accelerator 'gpu'")
        if self.software.runtime == "tensorrt" and not self.software.tensorrt_version:
            raise ValueError("runtime 'tensorrt' needs software.tensorrt_version")
        if self.software.runtime == "tensorrt" and self.runtime.int8_method == "dynamic":
            raise ValueError(
                "runtime.int8_method 'dynamic' needs runtime 'onnxruntime' (TensorRT needs Q/DQ)"
            )
        if self.budgets.latency_batch > self.runtime.batch_max:
            raise ValueError("budgets.latency_batch is larger than runtime.batch_max")
        return self


def builtin_profiles_dir() -> Path:
    """The directory of the shipped profiles (inside the installed package)."""
    return Path(str(resources.files("wave_deploy._profiles")))


# Unknown keys first: a misspelt key or one with the wrong unit (latency_s) also makes its real field
# (latency_ms) "missing", and the unknown key is the line that tells the user what to fix.
_ERROR_ORDER = {"extra_forbidden": 0, "missing": 1}


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of ``loc`` (None inside lists or scalars)."""
    cls: type[BaseModel] = DeviceProfile
    for part in loc[:-1]:
        if not isinstance(part, str) or part not in cls.model_fields:
            return None
        annotation = cls.model_fields[part].annotation
        candidates = typing.get_args(annotation) or (annotation,)
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return None
        cls = models[0]
    return cls


def _suggest_field(loc: tuple) -> str | None:
    owner = _model_at(loc)
    if owner is None or not isinstance(loc[-1], str):
        return None
    match = difflib.get_close_matches(loc[-1], list(owner.model_fields), n=1, cutoff=0.6)
    return match[0] if match else None


def _format_validation_error(path: str | Path, err: ValidationError) -> tuple[str, str | None]:
    """One line naming the file and the first (most telling) bad field, plus a hint where one helps."""
    errors = sorted(err.errors(), key=lambda e: _ERROR_ORDER.get(e["type"], 2))
    first = errors[0]
    loc = tuple(first["loc"])
    field = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    hint = None
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        suggestion = _suggest_field(loc)
        if suggestion:
            hint = f"did you mean '{suggestion}'? units are part of field names"
    elif first["type"] == "missing":
        msg = "missing required field"
    else:
        value = first.get("input")
        if isinstance(value, (str, int, float, bool)) or value is None:
            msg += f", got {value!r}"
        if first["type"] == "string_type" and isinstance(value, (int, float)):
            hint = f'quote version-like values in YAML, e.g. "{value}"'
    more = len(errors) - 1
    suffix = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid profile {path}: field '{field}': {msg}{suffix}", hint


def load_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    data = read_profile_yaml(path)
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        message, hint = _format_validation_error(path, exc)
        raise InvalidInputError(message, hint=hint) from exc
    return profile.model_copy(update={"source_file": str(path)})


def list_profiles() -> list[DeviceProfile]:
    """Every shipped profile, sorted by file name. Two profiles claiming one name or alias is an error."""
    profiles = [load_profile_file(p) for p in sorted(builtin_profiles_dir().glob("*.yaml"))]
    owner: dict[str, DeviceProfile] = {}
    for profile in profiles:
        for key in (profile.name, *profile.aliases):
            if key in owner and owner[key] is not profile:
                raise InvalidInputError(
                    f"invalid profile {profile.source_file}: name or alias '{key}' is already used by "
                    f"{owner[key].source_file}"
                )
            owner[key] = profile
    return profiles


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Look a profile up by shipped name, alias, or file path (ending in .yaml/.yml, or holding a /)."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or Path(text).exists():
        return load_profile_file(text)
    profiles = list_profiles()
    for profile in profiles:
        if text == profile.name or text in profile.aliases:
            return profile
    known = ", ".join(sorted(p.name for p in profiles))
    raise InvalidInputError(f"unknown profile '{text}'", hint=f"known profiles: {known}; or give a YAML path")


# Fields `--set` may not change: they identify the profile (and name its output directory).
IDENTITY_FIELDS = ("name", "aliases")


def _wants_text(path: list[str]) -> bool:
    """True when the profile field at ``path`` holds a string (e.g. a version), so '10.10' stays '10.10'."""
    owner = _model_at(tuple(path))
    field = owner.model_fields.get(path[-1]) if owner is not None else None
    if field is None:
        return False
    kinds = typing.get_args(field.annotation) or (field.annotation,)
    return str in kinds and not {int, float} & set(kinds)


def _shown(setting: str, limit: int = 60) -> str:
    """A ``--set`` setting as an error message quotes it: repr, cut to ``limit`` characters."""
    return (
        repr(setting)
        if len(setting) <= limit
        else repr(setting[:limit]) + f"... ({len(setting):,} characters)"
    )


def _override_value(setting: str, path: list[str], raw: str) -> Any:
    """The value of one ``--set`` setting: a YAML scalar, the raw text for string fields, absolute paths."""
    text = raw.strip()
    value = read_yaml_value(text, f"--set {_shown(setting)}") if text else ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _wants_text(path):
        value = text  # version-like text: YAML would read 10.10 as the number 10.1
    if path == ["latency_model", "calibration_file"] and isinstance(value, str) and value:
        value = str(Path(value).resolve())  # relative to where the command runs, not to the profile's file
    return value


def apply_overrides(profile: DeviceProfile, settings: typing.Sequence[str]) -> DeviceProfile:
    """``profile`` with ``--set SECTION.FIELD=VALUE`` settings applied, then validated like a profile file.

    VALUE is read as a YAML scalar (``1.5`` is a number, ``null`` clears an optional field, ``fp16`` a
    string); a string field keeps the text as given (``software.tensorrt_version=10.10``), and a relative
    ``latency_model.calibration_file`` is taken from the current directory. A setting without ``=``, or one
    that changes ``name`` or ``aliases``, is a usage error (exit 2); an unknown field or a value the profile
    schema refuses is an invalid profile (exit 3), named as ``<profile> with --set ...``.
    """
    if not settings:
        return profile
    data = profile.model_dump(mode="json")
    for setting in settings:
        key, sep, raw = setting.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise UsageError(
                f"--set {_shown(setting)}: expected SECTION.FIELD=VALUE, e.g. budgets.latency_ms=2.5"
            )
        if path[0] in IDENTITY_FIELDS:
            raise UsageError(
                f"--set {_shown(setting)}: name and aliases identify the profile (and name its output directory)",
                hint="copy the profile's YAML file under a new name instead",
            )
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}  # e.g. an absent power_mode: validation names what else it needs
            if not isinstance(child, dict):
                raise InvalidInputError(f"--set {_shown(setting)}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = _override_value(setting, path, raw)
    try:
        updated = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        shown = " ".join(s if len(s) <= 60 else f"{s[:60]}..." for s in settings)
        message, hint = _format_validation_error(f"{profile.name} with --set {shown}", exc)
        raise InvalidInputError(message, hint=hint) from exc
    return updated.model_copy(
        update={"source_file": profile.source_file, "overrides": profile.overrides + tuple(settings)}
    )
