"""The one function behind ``wave-deploy plan`` and ``wave_deploy.plan``: a profile, a bank and
``PlanOptions`` -> the chosen size and its frontier (``plan``), or what one given size would cost (``predict``).

The command line only parses and prints; the API only validates its keyword arguments; both call these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wave_deploy.data_shape import DataShape, check_bank_channels, probe_data
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.options import PlanOptions
from wave_deploy.pipeline.geometry_source import (
    check_objective,
    no_bank_to_score,
    search_geometry,
    wants_bank,
)
from wave_deploy.planning.headroom import beyond_bank, headroom
from wave_deploy.planning.latency import Calibration, load_calibration
from wave_deploy.planning.selection import (
    Candidate,
    SearchSpace,
    Selection,
    evaluate,
    resolve_calibration,
    select,
)
from wave_deploy.profiles import DeviceProfile, apply_overrides, load_profile
from wave_deploy.spec import ViTSpec, check_img_size, macs
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank
from wave_deploy.wave.geometry import BankGeometry

SPEC_KEYS = ("depth", "embed_dim", "num_heads", "batch", "img_size", "patch_size", "in_chans")


@dataclass(frozen=True)
class PlanInputs:
    """What a plan reads before it predicts anything: the profile (with --set), the search space for the task
    at the requested image sizes from the geometry the build of the same ``--init`` would use
    (``bank_space``) and the space searched (``space``: past a bank's sizes with ``beyond_bank``), the task
    (channels and classes, and where they came from), the calibration to predict with (None: the profile's
    own or analytic) and where the geometry came from (``geometry_source``: bank, teacher or default, as in
    ``build --dry-run``; ``bank``/``teacher``: the files read, None where none)."""

    profile: DeviceProfile
    space: SearchSpace
    bank: Path | None
    calibration: Calibration | None
    task: dict[str, Any]
    bank_space: SearchSpace
    notes: tuple[str, ...] = ()
    geometry_source: str = "bank"
    teacher: str | None = None

    def sources(self) -> dict[str, Any]:
        """Where the search space came from, JSON-ready (``plan --json``; build --dry-run's names)."""
        return {"geometry_source": self.geometry_source, "bank": None if self.bank is None else str(self.bank),
                "teacher": self.teacher}  # fmt: skip


def plan_shape(options: PlanOptions, bank: BankGeometry | None) -> tuple[DataShape, str]:
    """(the shape a plan is for, where it came from): the data's channels, classes and image size (a listing
    and image headers), --in-chans and --num-classes, else the bank's own task, or without a bank the build's
    default data (the built-in MNIST-5k)."""
    if options.data is not None:
        return probe_data(options.data), f"data {options.data}"
    given = options.in_chans is not None or options.num_classes is not None
    if bank is None and not given:
        return probe_data(None), "the built-in data (build's default --data)"
    own = bank if bank is not None else probe_data(None)
    in_chans = options.in_chans if options.in_chans is not None else own.in_chans
    classes = options.num_classes if options.num_classes is not None else own.num_classes
    source = f"--in-chans {in_chans}/--num-classes {classes}" if given else "the bank's own task"
    return DataShape(source, in_chans, classes, (), None, 0), source


def plan_geometry(
    options: PlanOptions, shape: DataShape, bank: BankGeometry | None, bank_path: Path | None
) -> tuple[BankGeometry, str, str | None]:
    """(geometry, where it comes from, the teacher read) by the build's rule (``pipeline.geometry_source``):
    the bank's, the teacher's (loading it imports torch) or the default at the one image size a build takes."""
    teacher = None
    if options.teacher_checkpoint is not None:  # imports torch: only with a teacher
        from wave_deploy.pipeline.inits import checked_teacher

        teacher = checked_teacher(options.teacher_checkpoint, options.teacher_arch, shape).spec
    if bank is not None:
        check_bank_channels(
            shape, bank.in_chans, bank_path or "the template bank"
        )  # the same refusal as build's
    sizes = options.img_size
    if bank is None and teacher is None:  # the default geometry
        if len(sizes) > 1:
            raise UsageError(f"--init {options.init} without a bank or teacher takes its default geometry (patch, "
                             "head size) from one image size, as build does: give one --img-size")  # fmt: skip
        if not sizes and shape.img_size is None and options.data is None:
            raise UsageError(f"--init {options.init} without a bank or teacher takes its default geometry from "
                             "the image size: give --img-size (or --data)")  # fmt: skip
    geometry, source = search_geometry(
        options.init, shape, bank=bank, teacher=teacher, img_size=sizes[0] if len(sizes) == 1 else None
    )
    return geometry, source, options.teacher_checkpoint if source == "teacher" else None


def _task_notes(
    options: PlanOptions, shape: DataShape, geometry: BankGeometry, source: str
) -> tuple[str, ...]:
    notes: tuple[str, ...] = ()
    wanted = options.img_size or (geometry.img_size,)
    if options.data is not None and shape.img_size is not None and shape.img_size not in wanted:
        size = max(wanted)
        notes = (f"the data's images are {shape.img_size} px, the models {size} px: build resizes them "
                 f"at load only with --img-size {size}"),  # fmt: skip
    if options.beyond_bank > 1 and source != "bank":
        notes += (f"--beyond-bank grows a bank's sizes; the {source} geometry's are searched as they are "
                  "(as build does)"),  # fmt: skip
    return notes


def plan_inputs(profile: str | Path | DeviceProfile, options: PlanOptions) -> PlanInputs:
    """Load and check everything a plan needs; bad input raises before any prediction (exit 2 or 3). The
    search space is the one ``build`` with the same --init, --templates, --teacher-checkpoint, data and image
    size would search (``pipeline.geometry_source``)."""

    loaded = profile if isinstance(profile, DeviceProfile) else load_profile(str(profile))
    loaded = apply_overrides(loaded, options.profile_overrides)
    bank_path = bank = None
    if wants_bank(options.init, options.templates):
        bank_path = Path(options.templates) if options.templates else default_bank_path()
        bank = inspect_bank(bank_path).geometry  # no torch
    shape, task_source = plan_shape(options, bank)
    geometry, source, teacher = plan_geometry(options, shape, bank, bank_path)
    check_objective(options.objective, options.init, bank is not None)
    task = {"in_chans": shape.in_chans, "num_classes": shape.num_classes, "source": task_source}
    bank_space = SearchSpace.from_bank(geometry, shape.num_classes)
    if options.img_size:
        for size in options.img_size:
            check_img_size(size, bank_space.patch_size)
        bank_space = bank_space.with_resolutions(options.img_size)
    calibration = load_calibration(options.calibration) if options.calibration else None
    # past a teacher's sizes weight selection cannot go; the default geometry is searched as build does
    space = beyond_bank(bank_space, options.beyond_bank) if source == "bank" else bank_space
    notes = _task_notes(options, shape, geometry, source)
    return PlanInputs(loaded, space, bank_path, calibration, task, bank_space, notes, source, teacher)


def plan(profile: str | Path | DeviceProfile, options: PlanOptions) -> tuple[Selection, PlanInputs]:
    """Choose the size that fits the profile's budgets best (NoFeasibleModelError, exit 5, when none does)."""
    inputs = plan_inputs(profile, options)
    accuracy = None
    if options.objective == "accuracy":  # imports torch: only on request
        from wave_deploy.wave.score import accuracy_table

        if inputs.bank is None:  # plan_inputs refused this already
            raise no_bank_to_score(options.init)
        accuracy = accuracy_table(inputs.bank, inputs.space.specs(), scoring_data(options, inputs))  # cached
    from_bank = inputs.geometry_source == "bank"  # only a bank's sizes have headroom to speak of
    selection = select_with_headroom(
        inputs.profile, inputs.space, inputs.bank_space if from_bank else None, objective=options.objective,
        calibration=inputs.calibration, accuracy=accuracy,
    )  # fmt: skip
    if inputs.notes:
        selection = dataclasses.replace(selection, notes=selection.notes + inputs.notes)
    return selection, inputs


def scoring_data(options: PlanOptions, inputs: PlanInputs):
    """The data ``--objective accuracy`` scores on: ``--data``, loaded as a build loads it (at the bank's image
    size, its images refused at any other size as the build refuses them, exit 3; with ``--img-size``, resized
    to the smallest size given), else the data the bank was built on (``wave.score.bank_data``)."""
    from wave_deploy import data as datasets
    from wave_deploy.wave.score import bank_data

    if options.data is None:
        if inputs.bank is None:  # plan_inputs refused this already
            raise no_bank_to_score(options.init)
        return bank_data(inputs.bank)
    space = inputs.bank_space
    size = min(options.img_size) if options.img_size else space.img_size
    return datasets.load_for_bank(
        options.data, in_chans=space.in_chans, img_size=size, resize=bool(options.img_size)
    )


def select_with_headroom(
    profile: DeviceProfile, space: SearchSpace, bank_space: SearchSpace | None, **select_options: Any
) -> Selection:
    """``select`` over ``space``, with the headroom of ``bank_space`` (the bank's own sizes; None: a space
    that is no bank's) in ``Selection.headroom`` and its notes: the one choice behind plan and build."""
    selection = select(profile, space, **select_options)
    if bank_space is None:
        return selection
    calibration = resolve_calibration(profile, select_options.get("calibration"))
    room = headroom(bank_space, profile, calibration=calibration)
    if room is None:
        return selection
    return dataclasses.replace(selection, notes=(*selection.notes, room["note"]), headroom=room)


def predict(
    profile: str | Path | DeviceProfile, options: PlanOptions, values: dict[str, int]
) -> dict[str, Any]:
    """What one size (``plan --spec``: depth, embed_dim and optionally num_heads, batch, img_size, patch_size,
    in_chans) would cost on the profile: latency, memory, FLOPs, params, and whether it fits. The image size,
    patch size and channels default to the bank's (or ``options.img_size``); no bank of that geometry is needed.
    """
    inputs = plan_inputs(profile, options)
    if len(options.img_size) > 1:
        raise UsageError("--spec predicts one size: give at most one --img-size (or img_size= in --spec)")
    values = dict(values)
    space, loaded = inputs.space, inputs.profile
    batch = values.pop("batch", loaded.budgets.latency_batch)
    patch = values.get("patch_size", space.patch_size)
    img_size = values.get("img_size", options.img_size[0] if options.img_size else space.img_size)
    check_img_size(img_size, patch, "--spec")
    heads = values.get("num_heads")
    spec = ViTSpec(
        depth=values["depth"], embed_dim=values["embed_dim"],
        num_heads=heads if heads is not None else _heads(values["embed_dim"], space.head_dim),
        mlp_ratio=space.mlp_ratio, patch_size=patch, img_size=img_size,
        in_chans=values.get("in_chans", space.in_chans), num_classes=space.num_classes,
    )  # fmt: skip
    c = evaluate(spec, loaded, calibration=inputs.calibration, batch=batch)
    return prediction_record(c, loaded, batch)


def _heads(embed_dim: int, head_dim: int) -> int:

    if embed_dim % head_dim:
        raise InvalidInputError(f"embed_dim={embed_dim} is not a multiple of head_dim={head_dim}")
    return embed_dim // head_dim


def prediction_record(c: Candidate, profile: DeviceProfile, batch: int) -> dict[str, Any]:
    """``plan --spec --json``: one size's predicted costs on a profile."""
    return {
        "profile": profile.name,
        "spec": c.spec.to_dict(),
        "name": c.spec.name,
        "batch": batch,
        "params": c.params,
        "flops_per_image": c.flops,
        "macs_per_image": macs(c.spec),
        "latency": c.latency.to_dict(),
        "budget_percentile": profile.budgets.latency_percentile,
        "latency_at_budget_ms": c.latency_at_budget_ms,
        "budget_ms": profile.budgets.latency_ms,
        "memory": c.memory.to_dict(),
        "memory_budget_mib": profile.budgets.memory_mib,
        "fits_budgets": c.feasible,
        "reasons": list(c.reasons),
        "latency_extrapolated": bool(c.latency.notes),
    }
