"""What a build reads, checked before any image is decoded (``check_inputs``, called by ``build()`` and by
``build --dry-run``), and what a build would do, resolved without doing it (``resolve_build``: the profiles
with their ``--set`` settings, where each writes, the bank or teacher and the geometry its search uses, the
data, every option with its value).

One function checks a build's inputs, so a dry run refuses exactly what the build refuses before training
(a bad profile, setting, calibration file, bank, teacher, data path or image size: exit 2 or 3) and accepts
exactly what it accepts. Nothing is trained, exported or written by a dry run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wave_deploy.data import check_probed_shape
from wave_deploy.data_shape import DataShape, probe_data
from wave_deploy.fileio import check_writable_dir
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.inits import Sources, check_objective, resolve_sources
from wave_deploy.planning.latency import load_calibration
from wave_deploy.profiles import DeviceProfile, apply_overrides, load_profile


@dataclass(frozen=True)
class BuildInputs:
    """A build's inputs, checked: the profiles (``--set`` applied), the data's shape, the sources and the
    image size the models take."""

    profiles: list[DeviceProfile]
    shape: DataShape
    sources: Sources
    img_size: int


def check_inputs(profiles: list[str], options: BuildOptions) -> BuildInputs:
    """Every check a build makes before it decodes an image, in the build's order: each profile and --set,
    the calibration file, the data's listing and image headers, the bank or teacher (their channels against
    the data's), --objective against the sources, the image size against the geometry and the data's."""

    loaded = [apply_overrides(load_profile(p), options.profile_overrides) for p in profiles]
    if options.calibration:
        load_calibration(options.calibration)  # a missing or invalid file: exit 3 before any work
    shape = probe_data(options.data)  # a bank of other channels is refused before any image is decoded
    sources = resolve_sources(options, shape)
    check_objective(options, sources)
    img_size = sources.geometry.target_img_size(options.img_size)
    check_probed_shape(
        shape, in_chans=sources.geometry.in_chans, img_size=img_size, resize=bool(options.img_size)
    )
    return BuildInputs(loaded, shape, sources, img_size)


def resolve_build(profiles: list[str], options: BuildOptions) -> dict[str, Any]:
    """The resolved build as one JSON-ready object (``build --dry-run``)."""

    check_writable_dir(options.out, "--out")
    inputs = check_inputs(profiles, options)
    sources = inputs.sources
    bank = teacher = None
    if sources.bank is not None:
        geometry = sources.bank.geometry
        bank = {"path": str(sources.bank_path), "img_size": geometry.img_size,
                "patch_size": geometry.patch_size, "in_chans": geometry.in_chans}  # fmt: skip
    if sources.teacher is not None:
        teacher = {"path": options.teacher_checkpoint, **sources.teacher.spec.to_dict()}
    return {
        "ok": True,
        "dry_run": True,
        "profiles": [
            {
                "name": p.name,
                "out_dir": str(Path(options.out) / p.name),
                "runtime": p.software.runtime,
                "precision": p.runtime.precision,
                "overrides": list(p.overrides),
            }
            for p in inputs.profiles
        ],
        "bank": bank,
        "teacher": teacher,
        "geometry_source": sources.geometry_source,  # bank, teacher or default (pipeline.inits)
        "img_size": inputs.img_size,
        "data": options.data or "builtin:mnist_5k",
        "task": {"in_chans": inputs.shape.in_chans, "num_classes": inputs.shape.num_classes},
        "options": options.resolved(),
    }
