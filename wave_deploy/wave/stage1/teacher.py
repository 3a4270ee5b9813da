"""The ancestry model of stage 1 (DESIGN 3.2): a timm model by name, or a local checkpoint, frozen.

Weights are read only from safetensors or with ``torch.load(weights_only=True)``: nothing from a file runs.
``load_teacher`` returns the model with its own classifier (the head is fitted to the data's classes later,
``wave.stage1.teacher_check``); ``teacher_geometry`` reads what a bank built from it should look like (image size, patch,
channels, head size, MLP ratio, depth, width); ``teacher_input`` feeds it the data at its own input geometry
and normalisation.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wave_deploy.errors import InvalidInputError, MissingDependencyError, first_line
from wave_deploy.fileio import sha256_file
from wave_deploy.training.folding import load_folded_file
from wave_deploy.wave.provenance import portable_path

# The first timm release whose Hugging Face hub loads default to torch.load(weights_only=True) everywhere (timm PR
# #2679, "default weights_only=True for load fns", first in v1.0.26): before it, load_state_dict_from_hf called
# without weights_only (a pretrained_cfg naming a hub file) fell back to full unpickling of pytorch_model.bin
# with torch < 2.6. pyproject.toml's floor is this version; --pretrained checks it too (an older timm installed
# by hand). Checked in the v1.0.25 and v1.0.26 sources of timm/models/_builder.py and _hub.py.
TIMM_SAFE_LOADS = (1, 0, 26)

OFFLINE_HINT = (
    "pretrained weights come from the Hugging Face hub: connect this machine, or copy a populated hub cache "
    "here and set HF_HUB_OFFLINE=1 (docs/wave.md), or give --teacher-checkpoint FILE --teacher-arch NAME"
)


@dataclass(frozen=True)
class TeacherGeometry:
    """What a teacher's architecture says about the bank to build from it (None: the teacher does not say).

    ``vit``: a timm ViT (patch embedding + blocks with attention heads and an MLP), whose patch size, head size,
    MLP ratio, depth and width are read; other teachers (a ResNet) give only their input size and channels.
    ``mean``/``std``: the input normalisation its weights expect (timm's pretrained_cfg), when they expect one.
    """

    vit: bool
    img_size: int | None
    in_chans: int | None
    patch_size: int | None = None
    head_dim: int | None = None
    mlp_ratio: float | None = None
    depth: int | None = None
    embed_dim: int | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_teacher(
    *,
    name: str | None = None,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """The ancestry model in eval mode, with its own classifier, and a description of it for the provenance.

    ``name`` (+ ``pretrained``): a timm model; with ``pretrained`` timm's weights through the Hugging Face hub
    (cached; exit 4 when they cannot be fetched), without it random weights drawn from ``seed`` (and, when
    ``num_classes`` is given, a fresh head of that size: an untrained teacher's head is as good as any other).
    ``checkpoint``: a wave-deploy folded checkpoint (spec in its metadata), or with ``arch`` a timm state dict
    in safetensors or a torch file read with ``weights_only=True`` (its head size is read from the file; a
    state dict without a classifier, a self-supervised backbone's, builds the model headless: ``num_classes=0``).
    A state dict that does not fit ``arch`` is refused naming its missing, unexpected and mismatched keys.
    """
    import timm

    model: Any  # a timm model, or a VisionTransformer from a folded checkpoint
    if name is not None and checkpoint is None:
        if pretrained:
            check_timm_loads_safely(timm.__version__)
        with torch.random.fork_rng(devices=[]):  # random weights follow --seed, not the global stream
            torch.manual_seed(seed)
            model = _create(timm, name, pretrained)
            if not pretrained and num_classes is not None and _head_size(model) != num_classes:
                model.reset_classifier(num_classes)
        info = {"name": name, "pretrained": pretrained}
        if pretrained:
            cfg = getattr(model, "pretrained_cfg", None) or {}
            info.update(hf_hub_id=cfg.get("hf_hub_id"), tag=cfg.get("tag"))
        return model.eval(), info
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
        return model.eval(), info
    state = _read_state_dict(path)
    model = _create(timm, arch, False, num_classes=_state_head_size(timm, arch, state))
    misfit = _misfit(model.state_dict(), state)
    if misfit:
        raise InvalidInputError(f"teacher checkpoint {path} does not fit {arch}: {misfit}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # what _misfit does not foresee; its first line, then the keys it names
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InvalidInputError(
            f"teacher checkpoint {path} does not fit {arch}: {' '.join(lines)[:400]}"
        ) from exc
    info = {"checkpoint": portable_path(path), "checkpoint_sha256": sha256_file(path), "arch": arch}
    return model.eval(), info


def check_timm_loads_safely(version: str) -> None:
    """MissingDependencyError (exit 4) when timm ``version`` may unpickle hub weights (``TIMM_SAFE_LOADS``)."""
    found = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    if found < TIMM_SAFE_LOADS:
        need = ".".join(map(str, TIMM_SAFE_LOADS))
        raise MissingDependencyError(
            f"--pretrained needs timm>={need} (timm {version} may load hub weights with full unpickling)",
            hint=f"pip install 'timm>={need}', or give --teacher-checkpoint FILE.safetensors --teacher-arch NAME",
        )


def _create(timm, name: str, pretrained: bool, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:  # unknown model name (timm says so before any download)
        if "Unknown model" in str(exc) or not pretrained:
            raise InvalidInputError(f"cannot create teacher {name!r}: {first_line(exc)}") from exc
        raise MissingDependencyError(
            f"cannot load pretrained weights for {name!r}: {first_line(exc)}", hint=OFFLINE_HINT
        ) from exc
    except (OSError, ValueError) as exc:  # the hub: offline without a cached copy, HTTP errors, no such file
        first = first_line(exc)
        raise MissingDependencyError(
            f"cannot load pretrained weights for {name!r}: {first}", hint=OFFLINE_HINT
        ) from exc


def _head_size(model: Any) -> int | None:
    """Classes the model predicts (its classifier's outputs), None when that cannot be told."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return head.out_features if isinstance(head, nn.Linear) else getattr(model, "num_classes", None)


def _misfit(expected: dict[str, Tensor], state: dict[str, Tensor], shown: int = 3) -> str:
    """What keeps ``state`` from loading strictly into a model whose state dict is ``expected`` ("" when it
    fits): its missing and unexpected keys and mismatched shapes, the first ``shown`` of each named."""

    def some(keys: list[str]) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} (the model's {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = [
        f"{len(keys)} {what} key{'s' if len(keys) != 1 else ''} ({some(keys)})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", shapes))
        if keys
    ]
    return "; ".join(parts)


def _state_head_size(timm, arch: str, state: dict[str, Tensor]) -> int | None:
    """The class count of a timm state dict for ``arch``: its classifier weight's rows, 0 when the state dict
    has no classifier (a headless backbone: DINO, DINOv2, MAE; timm builds it with ``num_classes=0``), None
    when ``arch`` does not name its classifier."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch) or timm.create_model(arch, pretrained=False).pretrained_cfg
    except RuntimeError as exc:
        raise InvalidInputError(f"cannot create teacher {arch!r}: {first_line(exc)}") from exc
    classifier = cfg.classifier if hasattr(cfg, "classifier") else (cfg or {}).get("classifier")
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    if not names or not names[0]:
        return None
    weight = state.get(f"{names[0]}.weight")
    if weight is None and not any(k.startswith(f"{names[0]}.") for k in state):
        return 0  # headless: no classifier key at all
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.ndim == 2 else None


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
        raise InvalidInputError(f"cannot read teacher checkpoint {path} safely: {first_line(exc)}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InvalidInputError(f"teacher checkpoint {path} is not a state dict of tensors")
    return state


def teacher_geometry(model: nn.Module, *, trained_norm: bool = False) -> TeacherGeometry:
    """Read a teacher's geometry (timm ViT: ``patch_embed``, ``blocks[0].attn.num_heads``, fc1 width /
    embed_dim, ``pretrained_cfg["input_size"]``). ``trained_norm``: its weights were trained with timm's data
    config (pretrained or a timm state dict), so it expects ``pretrained_cfg``'s mean/std."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    img = int(size[-1]) if size and size[-1] == size[-2] else None
    chans = int(size[0]) if size else _first_conv_channels(model)
    mean = std = None
    if trained_norm and cfg.get("mean") and cfg.get("std"):
        mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    classes = _head_size(model)
    pe: Any = getattr(model, "patch_embed", None)
    blocks: Any = getattr(model, "blocks", None)
    proj = getattr(pe, "proj", None)
    if isinstance(proj, nn.Conv2d):
        chans = proj.in_channels
        pe_img = getattr(pe, "img_size", None)
        if pe_img and pe_img[0] == pe_img[1]:
            img = int(pe_img[0])
    try:
        attn, fc1 = blocks[0].attn, blocks[0].mlp.fc1
        patch = tuple(pe.patch_size)
        heads, width, hidden = int(attn.num_heads), int(attn.qkv.in_features), int(fc1.out_features)
        head_dim = int(attn.qkv.out_features) // 3 // heads
    except (AttributeError, TypeError, IndexError):
        return TeacherGeometry(False, img, chans, num_classes=classes, mean=mean, std=std)
    if patch[0] != patch[-1] or not isinstance(proj, nn.Conv2d):
        return TeacherGeometry(False, img, chans, num_classes=classes, mean=mean, std=std)
    return TeacherGeometry(
        True,
        img,
        chans,
        int(patch[0]),
        head_dim,
        hidden / width,
        len(blocks),
        width,
        classes,
        mean,
        std,
    )


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else None


def teacher_input(
    teacher: nn.Module,
    img_size: int,
    in_chans: int,
    *,
    geometry: TeacherGeometry | None = None,
    data_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> nn.Module:
    """``teacher``, wrapped in TeacherInput when its input geometry or normalisation differs from the data's.

    ``data_norm``: the (mean, std) the data tensors are normalised with; when the teacher's geometry names a
    normalisation of its own (``geometry.mean/std``), inputs are re-normalised to it.
    """
    geom = geometry or teacher_geometry(teacher)
    t_img = geom.img_size if geom.vit and geom.img_size else img_size
    t_chans = geom.in_chans or in_chans
    renorm = None
    if data_norm is not None and geom.mean is not None and geom.std is not None:
        renorm = (data_norm, (geom.mean, geom.std))
    if (t_img, t_chans) == (img_size, in_chans) and renorm is None:
        return teacher
    return TeacherInput(teacher, t_img, t_chans, renorm)


class TeacherInput(nn.Module):
    """Feeds the teacher its own input: re-normalised, grey channels repeated, resized when needed."""

    def __init__(self, teacher: nn.Module, img_size: int, in_chans: int, renorm=None):
        super().__init__()
        self.teacher, self.img_size, self.in_chans = teacher, img_size, in_chans
        self.renorm = renorm  # ((data mean, data std), (teacher mean, teacher std)) per channel, or None

    def forward(self, x: Tensor) -> Tensor:
        if self.renorm is not None:  # back to 0..1 pixels with the data's statistics
            (dm, ds), _ = self.renorm
            x = x * _vec(ds, x) + _vec(dm, x)
        if x.shape[1] != self.in_chans:
            if x.shape[1] != 1:
                raise InvalidInputError(
                    f"cannot feed {x.shape[1]}-channel images to a {self.in_chans}-channel teacher"
                )
            x = x.expand(-1, self.in_chans, -1, -1)
        if self.renorm is not None:
            _, (tm, ts) = self.renorm
            x = (x - _vec(tm, x)) / _vec(ts, x)
        if x.shape[-1] != self.img_size:
            x = nn.functional.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
        return self.teacher(x)


def _vec(values, x: Tensor) -> Tensor:
    return torch.tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
