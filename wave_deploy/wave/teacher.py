"""The ancestry model of stage 1 (DESIGN 3.2): a timm model by name, or a local checkpoint, frozen.

Weights are read only from safetensors or with ``torch.load(weights_only=True)``: nothing from a file runs.
``teacher_input`` adapts the teacher to the data's image size and channels when they differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_file
from wave_deploy.training.folding import load_folded_file
from wave_deploy.wave.provenance import portable_path


def load_teacher(
    *,
    name: str | None = None,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    num_classes: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """The ancestry model, frozen, and a description of it for the bank's provenance.

    ``name`` (+ ``pretrained``): a timm model (weights downloaded by timm where the machine can).
    ``checkpoint``: a wave-deploy folded checkpoint (spec in its metadata), or with ``arch`` a timm state dict
    in safetensors or a torch file read with ``weights_only=True``. Nothing from the file is executed.
    """
    import timm

    model: Any  # a timm model, or a VisionTransformer from a folded checkpoint
    if name is not None and checkpoint is None:
        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
        except RuntimeError as exc:  # unknown model name
            raise InvalidInputError(f"cannot create teacher {name!r}: {exc}") from exc
        return model.eval(), {"name": name, "pretrained": pretrained}
    if checkpoint is None or name is not None:
        raise InvalidInputError("give exactly one of a teacher model name or a teacher checkpoint")
    path = Path(checkpoint)
    if not path.is_file():
        raise InvalidInputError(f"teacher checkpoint {path} does not exist")
    if arch is None:
        model, spec, extra = load_folded_file(path)
        info = {
            "checkpoint": portable_path(path),  # relative to the working directory, or the file name
            "checkpoint_sha256": sha256_file(path),
            "spec": spec.to_dict(),
            **{k: v for k, v in extra.items() if k != "spec"},
        }
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
        state = _read_state_dict(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InvalidInputError(
                f"teacher checkpoint {path} does not fit {arch}: {str(exc).splitlines()[0]}"
            ) from exc
        info = {"checkpoint": portable_path(path), "checkpoint_sha256": sha256_file(path), "arch": arch}
    head_out = model.get_classifier().out_features if hasattr(model, "get_classifier") else None
    if head_out is not None and head_out != num_classes:
        raise InvalidInputError(f"teacher predicts {head_out} classes but the data has {num_classes}")
    return model.eval(), info


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InvalidInputError(f"cannot read teacher checkpoint {path}: {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and containers
        raise InvalidInputError(
            f"cannot read teacher checkpoint {path} safely: {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InvalidInputError(f"teacher checkpoint {path} is not a state dict of tensors")
    return state


def teacher_input(teacher: nn.Module, img_size: int, in_chans: int) -> nn.Module:
    """``teacher``, wrapped in TeacherInput when its input geometry differs from the data's."""
    cfg = getattr(teacher, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    t_chans, t_img = (size[0], size[-1]) if size else (in_chans, img_size)
    pe = getattr(teacher, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):
        t_img = pe.img_size[0]
    if pe is not None and hasattr(pe, "proj"):
        t_chans = pe.proj.in_channels
    if (t_img, t_chans) == (img_size, in_chans):
        return teacher
    return TeacherInput(teacher, t_img, t_chans)


class TeacherInput(nn.Module):
    """Feeds the teacher its own input geometry: resizes images and repeats grey channels when needed."""

    def __init__(self, teacher: nn.Module, img_size: int, in_chans: int):
        super().__init__()
        self.teacher, self.img_size, self.in_chans = teacher, img_size, in_chans

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_chans:
            if x.shape[1] != 1:
                raise InvalidInputError(
                    f"cannot feed {x.shape[1]}-channel images to a {self.in_chans}-channel teacher"
                )
            x = x.expand(-1, self.in_chans, -1, -1)
        if x.shape[-1] != self.img_size:
            x = nn.functional.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
        return self.teacher(x)
