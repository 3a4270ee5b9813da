"""What stage 1 starts from: the teacher, the data at the bank's geometry, a head for the data's classes and the
teacher's measured accuracy. Everything here happens before the auxiliary model exists; nothing is written.

Order: load the teacher (its own head) -> read its geometry -> load the data at the teacher's image size (an
ImageFolder decoded straight to it, the built-in set resized as tensors) -> check channels -> resolve the rest
of the geometry (wave.stage1.geometry) -> fit the head to the data's classes when it does not predict them ->
measure and judge the teacher on the validation split (wave.stage1.teacher_check).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wave_deploy import data as datasets
from wave_deploy import probe
from wave_deploy.errors import InvalidInputError, MissingDependencyError
from wave_deploy.training import distributed as D
from wave_deploy.wave.stage1 import geometry as sg
from wave_deploy.wave.stage1.teacher import TeacherGeometry, load_teacher, teacher_geometry, teacher_input
from wave_deploy.wave.stage1.teacher_check import TeacherVerdict, fit_head, measure

log = logging.getLogger(__name__)

GEOMETRY_FIELDS = (
    "img_size",
    "in_chans",
    "patch_size",
    "head_dim",
    "w",
    "mlp_ratio",
    "aux_depth",
    "aux_embed_dim",
)


@dataclass
class TeacherSource:
    """Where the teacher comes from: exactly one of ``name`` or ``checkpoint``."""

    name: str | None = None
    pretrained: bool = False
    checkpoint: str | Path | None = None
    arch: str | None = None

    @property
    def trained(self) -> bool:
        """Its weights were trained (timm's pretrained weights, or a checkpoint file)."""
        return self.pretrained or self.checkpoint is not None


@dataclass
class Stage1Inputs:
    teacher: (
        nn.Module
    )  # what the student distils from: the teacher fed its own input (TeacherInput or itself)
    info: dict[str, Any]  # the ancestry, for the provenance
    data: Any  # wave_deploy.data.Dataset at the bank's geometry
    geometry: sg.Stage1Geometry
    verdict: TeacherVerdict


def stage1_device(device: str) -> torch.device:
    """The device the teacher is measured and probed on: the one training will use."""
    if device == "cuda" and not probe.cuda_available():
        raise MissingDependencyError("device 'cuda' was requested but no CUDA GPU is available")
    if device == "cuda" or (device == "auto" and probe.cuda_available()):
        return torch.device("cuda", D.local_rank() if D.is_distributed() else torch.cuda.current_device())
    return torch.device("cpu")


def load_stage1_data(
    path: str | Path | None,
    *,
    img_size: int | None,
    in_chans: int | None,
    seed: int,
    classes: list[int | str] | None = None,
):
    """The data at the bank's image size (and ``in_chans``, image folders only); ``classes``: a subset."""
    if path is None or str(path) == datasets.BUILTIN_SOURCE:
        if in_chans not in (None, 1):
            raise InvalidInputError(f"--in-chans {in_chans}: the built-in data are grey (1 channel)")
        data = datasets.load(None, seed=seed)
        if img_size is not None and data.info.img_size != img_size:
            data = data.resized(img_size)
    else:
        data = datasets.load(path, seed=seed, img_size=img_size, in_chans=in_chans)
    return data.select_classes(classes) if classes else data


def prepare(
    source: TeacherSource,
    config,
    *,
    data_path: str | Path | None,
    classes: list[int | str] | None,
    device: str,
) -> tuple[Stage1Inputs, Any]:
    """The teacher, data and geometry of a stage-1 run, and ``config`` with its geometry resolved.

    ``config`` is a LearngeneConfig whose geometry fields (``GEOMETRY_FIELDS``) are the user's options (None:
    decide). Raises InvalidInputError (exit 3) for data or a teacher that cannot be used.
    """
    model, info = load_teacher(
        name=source.name,
        pretrained=source.pretrained,
        checkpoint=source.checkpoint,
        arch=source.arch,
        seed=config.seed,
    )
    tgeom = teacher_geometry(model, trained_norm=source.pretrained or source.arch is not None)
    opts = sg.Stage1Options(**{k: getattr(config, k) for k in GEOMETRY_FIELDS})
    img_size, _ = sg.teacher_image_size(tgeom, opts)
    data = load_stage1_data(
        data_path, img_size=img_size, in_chans=config.in_chans, seed=config.seed, classes=classes
    )
    sg.check_channels(tgeom, data.info.in_chans, opts)
    geom = sg.resolve(tgeom, opts, img_size=data.info.img_size, in_chans=data.info.in_chans)
    config = dataclasses.replace(config, **{k: getattr(geom, k) for k in GEOMETRY_FIELDS})
    fed = teacher_input(
        model,
        geom.img_size,
        geom.in_chans,
        geometry=tgeom,
        data_norm=(tuple(data.info.mean), tuple(data.info.std)),
    )
    where = stage1_device(device)
    info = {**info, "geometry": tgeom.to_dict(), "input": _input_note(tgeom, geom)}
    info["head"] = _fit_head(model, fed, data, source, tgeom, seed=config.seed, device=where)
    verdict = measure(fed.to(where), data, where)
    return Stage1Inputs(fed, info, data, geom, verdict), config


def _fit_head(
    model: Any,
    fed: nn.Module,
    data,
    source: TeacherSource,
    tgeom: TeacherGeometry,
    *,
    seed: int,
    device,
) -> dict[str, Any]:
    """A head that predicts the data's classes: the teacher's own, a linear probe (trained weights), or a fresh
    random one (an untrained teacher: probing random features would hide that it learned nothing)."""
    k = data.info.num_classes
    if tgeom.num_classes == k:
        return {"probed": False, "classes": k}
    if source.trained:
        return fit_head(model, fed, data, device)
    if not hasattr(model, "reset_classifier"):
        raise InvalidInputError(f"the teacher predicts {tgeom.num_classes} classes but the data has {k}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_classifier(k)
    return {"probed": False, "classes": k, "fresh_random_head": True, "replaced_classes": tgeom.num_classes}


def _input_note(tgeom: TeacherGeometry, geom: sg.Stage1Geometry) -> dict[str, Any]:
    """How the data reach the teacher (recorded in the provenance)."""
    t_img = tgeom.img_size if tgeom.vit and tgeom.img_size else geom.img_size
    t_chans = tgeom.in_chans or geom.in_chans
    return {
        "normalisation": "the teacher's (timm pretrained_cfg mean/std)" if tgeom.mean else "the data's",
        "resized_to": t_img if t_img != geom.img_size else None,
        "channels_repeated_to": t_chans if t_chans != geom.in_chans else None,
    }
