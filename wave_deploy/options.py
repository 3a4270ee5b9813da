"""The options of wave-deploy's jobs, defined once: typed models that the CLI turns into flags and the Python
API into keyword arguments.

Each option is declared once below, as an ``Annotated`` type whose pydantic ``Field`` holds its help text, its
bounds (ge/le/gt) or choices (``Literal``) and, in ``json_schema_extra``, how the command line spells it. The
job models compose them:

    PlanOptions    plan: bank, image sizes, objective, calibration, --set, the task, --init (as build's)
    InitOptions    init: one size from the bank, its two training phases
    ExportOptions  export: ONNX, its data (variants judged and int8 calibrated on it), opset, exporter
    BuildOptions   build: everything a build is asked, plus out and force

``wave_deploy.cli.options.model_options`` makes the click options of a command from its model (a value out of
range is exit 2 before any work) and the API validates its keyword arguments against the same model with
``parse`` (exit 2 naming the option). ``api`` gives each API function the model's signature and help.

Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wave_deploy.errors import UsageError
from wave_deploy.spec import IMG_SIZE_MAX

SEED_MAX = 2**32 - 1  # every seed feeds torch, numpy or a derived seed (seed * 1_000_003 + step) in 64 bits
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 17, 23, 18  # LayerNormalization .. the newest both exporters accept
MAX_EPOCHS = 1000.0
DEFAULT_BEYOND_BANK = 1.0  # benchmarks/headroom.py: see docs/decisions.md


def _cli(**extra: Any) -> dict[str, Any]:
    return extra


# --- every option, once ------------------------------------------------------------------------------------

Templates = Annotated[
    str | None,
    Field(
        description="Template bank (.safetensors); default: the bank shipped with wave-deploy.",
        json_schema_extra=_cli(path=True),
    ),
]
Data = Annotated[
    str | None,
    Field(
        description="ImageFolder tree (one folder per class); default: the built-in MNIST-5k.",
        json_schema_extra=_cli(path=True),
    ),
]
ImgSize = Annotated[
    int | None,
    Field(
        ge=1,
        le=IMG_SIZE_MAX,
        description=f"Input size in pixels of the models, a multiple of the bank's patch size up to {IMG_SIZE_MAX}; "
        "default: the bank's. Images are resized to it once, at load; position embeddings are resampled.",
    ),
]
ImgSizes = Annotated[
    tuple[int, ...],
    Field(
        description=f"Image sizes to search (repeatable or a comma list, each a multiple of the bank's patch "
        f"size up to {IMG_SIZE_MAX}): the profile then chooses depth x width x resolution. Default: the bank's "
        "image size only.",
        json_schema_extra=_cli(flag="--img-size", metavar="PX[,PX...]"),
    ),
]
Seed = Annotated[
    int, Field(ge=0, le=SEED_MAX, description="Random seed (data split, initialization, training order).")
]
Objective = Annotated[
    Literal["flops", "params", "accuracy"],
    Field(
        description="What to maximize among the sizes that fit. accuracy: each depth x width sliced from the "
        "bank and scored, untrained, on the validation split of --data (without --data: the built-in data "
        "for build, the data the bank was built on for plan), at one image size (seconds; cached); ties to "
        "lower latency."
    ),
]
CalibrationFile = Annotated[
    str | None,
    Field(
        description="Latency calibration file (from `wave-deploy calibrate`) to predict with instead of the "
        "profile's own.",
        json_schema_extra=_cli(path=True, dir_okay=False),
    ),
]
Overrides = Annotated[
    tuple[str, ...],
    Field(
        description="Override a profile field for this run, e.g. --set budgets.latency_ms=0.5 (repeatable; "
        "applies to every profile given).",
        json_schema_extra=_cli(flag="--set", metavar="SECTION.FIELD=VALUE"),
    ),
]
Strategy = Annotated[
    Literal["aux", "random"],
    Field(
        description="WAVE only (--init wave): how the target's weight scalers start, before the scaler phase: "
        "sliced from the bank's auxiliary model (aux), or random scalers over the bank's templates (random). "
        "Both start from the bank's templates; a model without templates is --init random."
    ),
]
PlanData = Annotated[
    str | None,
    Field(
        description="ImageFolder tree to plan for: its channels and classes are read from a directory listing "
        "and image headers (no image is decoded); a bank of other channels is refused (exit 3). Default: "
        "the bank's own task.",
        json_schema_extra=_cli(path=True),
    ),
]
InChans = Annotated[
    int | None,
    Field(ge=1, le=64, description="Input channels to plan for without --data (1 grayscale, 3 RGB); must be "
          "the bank's. Default: the bank's."),
]  # fmt: skip
NumClasses = Annotated[
    int | None,
    Field(ge=2, le=1_000_000, description="Classes to plan for without --data. Default: the bank's."),
]
BeyondBank = Annotated[
    float,
    Field(ge=1.0, le=8.0, description="Search sizes up to this factor past the bank's largest depth and width "
          "(their scalers are grown: docs/wave.md). 1: the bank's sizes only. The default follows "
          "benchmarks/headroom.py (docs/benchmarks.md, 'Headroom')."),
]  # fmt: skip
Init = Annotated[
    Literal["wave", "weight-selection", "random"],
    Field(
        description="How the model starts, and so which sizes are searched (plan searches what build would): "
        "wave (the bank's templates and scalers, then the scaler phase; the bank's sizes), weight-selection "
        "(weights selected from --teacher-checkpoint, Xu et al. 2024; no bank; the teacher's patch, head size "
        "and sizes up to its depth and width) or random (timm's own initialization; no templates; the bank's "
        "sizes with --templates, else the teacher's with --teacher-checkpoint, else a default geometry at "
        "the data's image size: docs/decisions.md). See docs/wave.md, 'Initialization'."
    ),
]
TeacherCheckpoint = Annotated[
    str | None,
    Field(
        description="Teacher for --init weight-selection (and build's --compare-init): a wave-deploy "
        "checkpoint, or with --teacher-arch a timm state dict (safetensors, or a torch file read with "
        "weights_only). Its geometry (patch, channels, depth, width) bounds the search without a bank. "
        "Reading it loads torch (plan too).",
        json_schema_extra=_cli(path=True, dir_okay=False),
    ),
]
TeacherArch = Annotated[
    str | None,
    Field(description="timm architecture of --teacher-checkpoint's state dict, e.g. vit_small_patch16_224."),
]
Steps = Annotated[int | None, Field(ge=0)]  # help per job: see the models
Epochs = Annotated[float, Field(gt=0, le=MAX_EPOCHS)]
BatchSize = Annotated[
    int, Field(ge=1, description="Batch size of the training phases (at most the training split).")
]
Device = Annotated[
    Literal["auto", "cpu", "cuda"], Field(description="Where to train (auto: CUDA when present).")
]
Compile = Annotated[
    bool,
    Field(
        description="torch.compile the training steps (inductor: a C++ compiler on the CPU, Triton on CUDA). "
        "The first step of each phase pays the compilation (tens of seconds); worth it for long runs on a GPU, "
        "see docs/benchmarks.md. Off by default."
    ),
]
Opset = Annotated[int, Field(ge=MIN_OPSET, le=MAX_OPSET, description="ONNX opset.")]
Exporter = Annotated[
    Literal["dynamo", "legacy"],
    Field(description="torch.onnx exporter: dynamo (torch.export) or legacy (TorchScript tracing)."),
]
DeviceValImages = Annotated[
    int,
    Field(
        ge=0,
        le=100_000,
        description="Labelled validation images the on-device bundle carries (uint8, stratified by class) to "
        "measure the device's top-1; 0: none. The accuracy gates need at least 100 to judge.",
    ),
]
RequireEvidence = Annotated[
    Literal["device", "calibrated", "any"],
    Field(
        description="Fail a budget judged on weaker evidence than this (exit 9): device (a merged device "
        "report, or the build host where the profile says it is the device), calibrated (a calibrated latency "
        "model inside its measured range, or better; memory is not calibrated, so asked nothing more), any. The stricter of this and the profile's "
        "budgets.require_evidence applies.",
    ),
]
DEFAULT_DEVICE_VAL_IMAGES = 500  # 224 px RGB uint8: 73.5 MiB in the bundle


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _files_not_directories(self) -> _Options:
        """A path option marked ``dir_okay=False`` names a file: a directory is a usage error (exit 2), the
        same from the command line (click lets it through to here) and the API."""
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            value = getattr(self, name)
            if extra.get("dir_okay") is False and value is not None and Path(value).is_dir():
                flag = extra.get("flag", "--" + name.replace("_", "-"))
                raise ValueError(f"{flag} {value} is a directory: give a file")
        return self

    def resolved(self) -> dict[str, Any]:
        """Every option with its value (defaults filled in), JSON-ready: what ``--dry-run`` prints."""
        return self.model_dump(mode="json")


def _sizes(value: Any) -> tuple[int, ...]:
    """One size, or sizes in the order given: an int, a comma list ("160,224", as the command line gives it)
    or a sequence of either."""
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, str):
        sizes = []
        for raw in value.split(","):
            try:
                sizes.append(int(raw.strip()))
            except ValueError:
                raise ValueError(f"expected integers (e.g. 160,224), got {raw.strip()!r}") from None
        return tuple(sizes)
    if isinstance(value, (list, tuple)):
        return tuple(s for item in value for s in _sizes(item))
    raise ValueError(f"expected an image size or a list of them, got {value!r}")


def _check_init_inputs(options: PlanOptions | BuildOptions) -> None:
    """The rules of --init, --teacher-checkpoint, --teacher-arch and --templates, the same for plan and build."""
    if options.teacher_arch is not None and options.teacher_checkpoint is None:
        raise ValueError("--teacher-arch names the architecture of --teacher-checkpoint: give both")
    if options.init == "weight-selection" and options.teacher_checkpoint is None:
        raise ValueError("--init weight-selection needs --teacher-checkpoint (and --teacher-arch for a timm "
                         "state dict)")  # fmt: skip
    if options.init == "weight-selection" and options.templates is not None:
        raise ValueError("--init weight-selection uses no bank: leave --templates out")


class PlanOptions(_Options):
    """``wave-deploy plan`` / ``wave_deploy.plan``: choose a size (or several resolutions) for a profile."""

    templates: Templates = None
    img_size: ImgSizes = ()
    objective: Objective = "flops"
    calibration: CalibrationFile = None
    profile_overrides: Overrides = ()
    data: PlanData = None
    in_chans: InChans = None
    num_classes: NumClasses = None
    beyond_bank: BeyondBank = DEFAULT_BEYOND_BANK
    init: Init = "wave"
    teacher_checkpoint: TeacherCheckpoint = None
    teacher_arch: TeacherArch = None

    @model_validator(mode="after")
    def _one_task_source(self) -> PlanOptions:
        given = [f"--{n.replace('_', '-')}" for n in ("in_chans", "num_classes") if getattr(self, n) is not None]  # fmt: skip
        if self.data is not None and given:
            raise ValueError(f"give --data or {'/'.join(given)}, not both (the data says its own)")
        _check_init_inputs(self)
        return self

    @field_validator("img_size", mode="before")
    @classmethod
    def _flatten_sizes(cls, value: Any) -> tuple[int, ...]:
        sizes = _sizes(value)
        for size in sizes:
            if not 1 <= size <= IMG_SIZE_MAX:
                raise ValueError(f"{size} is not in 1..{IMG_SIZE_MAX}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"{min(s for s in sizes if sizes.count(s) > 1)} given twice")
        return sizes


class _TrainFields(_Options):
    templates: Templates = None
    data: Data = None
    img_size: ImgSize = None
    seed: Seed = 0
    strategy: Strategy = "aux"
    batch_size: BatchSize = 128
    device: Device = "auto"
    compile: Compile = False


class InitOptions(_TrainFields):
    """``wave-deploy init`` / ``wave_deploy.init``: one size from the bank, trained and folded into timm."""

    depth: Annotated[int, Field(ge=1, description="Number of transformer blocks L.")]
    embed_dim: Annotated[int, Field(ge=1, description="Width D (a multiple of the bank's template size).")]
    heads: Annotated[
        int | None, Field(ge=1, description="Attention heads (default: D / the bank's head_dim).")
    ] = None
    scaler_steps: Annotated[int, Field(ge=0, description="Scaler-only training steps.")] = 100
    dense_steps: Annotated[
        int,
        Field(ge=0, description="Full training steps after folding (0: fold right after the scaler phase)."),
    ] = 0


class ExportOptions(_Options):
    """``wave-deploy export`` / ``wave_deploy.export``: a folded checkpoint to ONNX, variants, engine or bundle."""

    data: Annotated[
        str | None,
        Field(
            description="ImageFolder tree (the build's data): its validation split judges the fp16/int8 variants "
            "and 256 of its training images calibrate int8. Default: built-in MNIST-5k when it fits the model.",
            json_schema_extra=_cli(path=True),
        ),
    ] = None
    seed: Seed = 0
    opset: Opset = DEFAULT_OPSET
    exporter: Exporter = "dynamo"
    slim: Annotated[
        bool, Field(description="Slim the graph with onnxslim (optional extra); outputs are re-checked.")
    ] = False
    build_engine: Annotated[
        bool,
        Field(
            description="Build a TensorRT engine here when a GPU and TensorRT are present and the profile does "
            "not require an on-device build (--no-engine: always write the on-device bundle).",
            json_schema_extra=_cli(flag="--engine/--no-engine"),
        ),
    ] = True
    device_val_images: DeviceValImages = DEFAULT_DEVICE_VAL_IMAGES


class BuildOptions(_TrainFields):
    """``wave-deploy build`` / ``wave_deploy.build``: what a build is asked, for every profile it builds."""

    out: Annotated[
        str,
        Field(
            description="Output root; each device writes <out>/<profile name>/.",
            json_schema_extra=_cli(path=True),
        ),
    ] = "artifacts"
    # Training length scales with the data: epochs over the training split, unless steps are given. The
    # defaults give exactly the 60 + 150 steps of earlier releases on the built-in MNIST-5k (4,500 training
    # images at batch 128) and proportionally fewer or more steps on smaller or larger data.
    scaler_steps: Annotated[
        Steps,
        Field(description="Scaler-only training steps; default: --scaler-epochs over the training split."),
    ] = None
    dense_steps: Annotated[
        Steps,
        Field(
            description="Full training steps after folding; default: --dense-epochs over the training split."
        ),
    ] = None
    scaler_epochs: Annotated[
        Epochs,
        Field(
            description="Length of the scaler phase in passes over the training split (60 steps on the built-in data)."
        ),
    ] = 1.7
    dense_epochs: Annotated[
        Epochs,
        Field(
            description="Length of the dense phase in passes over the training split (150 steps on the built-in data)."
        ),
    ] = 4.25
    objective: Objective = "flops"
    calibration: CalibrationFile = None
    profile_overrides: Overrides = ()
    opset: Opset = DEFAULT_OPSET
    exporter: Exporter = "dynamo"
    bench_iterations: Annotated[
        int, Field(ge=1, le=1_000_000, description="Timed iterations of the local ONNX Runtime benchmark.")
    ] = 200
    bench_warmup: Annotated[
        int, Field(ge=0, le=1_000_000, description="Untimed iterations before the local benchmark.")
    ] = 20
    device_val_images: DeviceValImages = DEFAULT_DEVICE_VAL_IMAGES
    require_evidence: RequireEvidence = "any"
    force: Annotated[
        bool,
        Field(
            description="Rerun every stage: plan, train (the model is trained again, never reused from the "
            "cache), export, bench and report; interrupted training checkpoints are discarded."
        ),
    ] = False
    init: Init = "wave"
    teacher_checkpoint: TeacherCheckpoint = None
    teacher_arch: TeacherArch = None
    compare_init: Annotated[bool, Field(
        description="Train every usable initialization (wave with a bank of the data's channels, weight-selection "
        "with a teacher, random) for the same training FLOPs and --compare-seeds seeds, deploy the one of highest "
        "mean validation accuracy and record the table in the report. Prints a cost estimate first.")] = False  # fmt: skip
    compare_seeds: Annotated[int, Field(
        ge=1, le=10, description="Seeds per initialization of --compare-init (--seed, --seed+1, ...).")] = 2  # fmt: skip
    beyond_bank: BeyondBank = DEFAULT_BEYOND_BANK

    @model_validator(mode="after")
    def _init_inputs(self) -> BuildOptions:
        if self.compare_init and self.init != "wave":
            raise ValueError("--compare-init trains every initialization: leave --init out")
        _check_init_inputs(self)
        if self.compare_init and self.seed + self.compare_seeds - 1 > SEED_MAX:
            raise ValueError(
                f"--compare-init seeds run from --seed to --seed + {self.compare_seeds - 1}: past {SEED_MAX}"
            )
        return self

    def phase_steps(self, n_train: int) -> tuple[int, int]:
        """(scaler steps, dense steps) for a training split of ``n_train`` images: explicit steps win, else
        ceil(epochs x n_train / batch_size), so a small data set gets few steps and a large one many."""

        def steps(explicit: int | None, epochs: float) -> int:
            return explicit if explicit is not None else max(1, math.ceil(epochs * n_train / self.batch_size))

        return steps(self.scaler_steps, self.scaler_epochs), steps(self.dense_steps, self.dense_epochs)

    def training_fields(self, n_train: int) -> dict[str, Any]:
        """What determines the trained model (the train stage's cache key): resolved step counts, not epochs."""
        scaler_steps, dense_steps = self.phase_steps(n_train)
        names = ("seed", "strategy", "batch_size", "init", "teacher_arch", "compare_init")
        fields = {k: getattr(self, k) for k in names}
        fields["compare_seeds"] = self.compare_seeds if self.compare_init else None
        return {**fields, "scaler_steps": scaler_steps, "dense_steps": dense_steps}


# --- the API side -----------------------------------------------------------------------------------------

M = TypeVar("M", bound=_Options)


def parse(model: type[M], values: Mapping[str, Any], what: str) -> M:
    """``model`` from keyword arguments; an unknown option or a bad value is a UsageError (exit 2) naming it."""
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields)
        raise UsageError(f"{what}: unknown option(s) {', '.join(unknown)}; known: {known}")
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        value = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        message = err["msg"].removeprefix("Value error, ")
        where = f"option {name}: " if name else ""  # a rule between options names its flags itself
        raise UsageError(f"{what}: {where}{message}{value}") from None


def api(model: type[_Options], *leading: str) -> Callable[[Callable], Callable]:
    """Give an API function taking ``*leading`` parameters and ``**options`` the signature and help of
    ``model``'s fields, so that ``help(wave_deploy.build)`` lists every option with its default and meaning."""

    def decorate(fn: Callable) -> Callable:
        params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in leading]
        lines = ["", f"    Options (``{model.__name__}``, the command line's flags):"]
        for name, field in model.model_fields.items():
            default = inspect.Parameter.empty if field.is_required() else field.default
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
            shown = "required" if field.is_required() else f"default {field.default!r}"
            lines.append(f"        {name} ({shown}): {field.description or ''}")
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
        return fn

    return decorate
