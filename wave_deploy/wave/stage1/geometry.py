"""Which bank stage 1 builds: its geometry and auxiliary model, from the teacher unless an option says otherwise.

Every field is resolved in this order, and the source of each value is recorded (``option``, ``teacher``,
``data`` or ``default``):

- image size: ``--img-size``; else the teacher's input size (a ViT's patch embedding, else timm's
  ``pretrained_cfg["input_size"]``); else the data's own size. The data are resized to it at load.
- channels: ``--in-chans``; else the data's (the models a bank makes are fed the user's images). A 3-channel
  teacher is fed grey images repeated to 3 channels; RGB data with a 1-channel teacher is refused unless
  ``--in-chans 1`` converts the data to grey at load.
- patch size, head size (embed_dim / num_heads), MLP ratio: the options; else a ViT teacher's; else patch
  ``default_patch_size`` (about a 14 x 14 grid, at least 4), head size 32, MLP ratio 4.
- template size w: ``--template-size``; else the head size (DESIGN 3.1: w = head_dim).
- auxiliary model: ``--aux-depth/--aux-embed-dim``; else the teacher's own depth and width capped at DeiT-Small
  (depth 12, width 384), the width rounded down to one the bank serves; a teacher without depth and width
  (not a ViT) gets depth 6, width 128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.wave.stage1.teacher import TeacherGeometry

AUX_CAP = (12, 384)  # DeiT-Small: the largest auxiliary model stage 1 picks by itself (depth, width)
FALLBACK = {"head_dim": 32, "mlp_ratio": 4.0, "aux_depth": 6, "aux_embed_dim": 128}  # no teacher geometry
MIN_PATCH = 4  # the patch of a teacher without one never goes below today's default


@dataclass(frozen=True)
class Stage1Options:
    """What the user asked for (None: not given)."""

    img_size: int | None = None
    in_chans: int | None = None
    patch_size: int | None = None
    head_dim: int | None = None
    w: int | None = None
    mlp_ratio: float | None = None
    aux_depth: int | None = None
    aux_embed_dim: int | None = None


@dataclass
class Stage1Geometry:
    img_size: int
    in_chans: int
    patch_size: int
    head_dim: int
    w: int
    mlp_ratio: float
    aux_depth: int
    aux_embed_dim: int
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in self.sources}
        return {"values": values, "sources": dict(self.sources)}


def default_patch_size(img_size: int) -> int:
    """A teacher without a patch (a ResNet): the patch that cuts ``img_size`` into about a 14 x 14 grid, as
    DeiT's 16 px patch does at 224 px, never below 4 (today's default, 7 x 7 at 28 px): among the divisors
    of ``img_size`` that are at least 4, the one nearest to max(4, img_size / 14), the smaller on a tie
    (``img_size`` itself below 4)."""
    target = max(MIN_PATCH, img_size / 14)
    divisors = [p for p in range(MIN_PATCH, img_size + 1) if img_size % p == 0] or [img_size]
    return min(divisors, key=lambda p: (abs(p - target), p))


def teacher_image_size(geom: TeacherGeometry, opts: Stage1Options) -> tuple[int | None, str]:
    """(image size, its source) before the data are read; None: the data's own size."""
    if opts.img_size is not None:
        return opts.img_size, "option"
    if geom.img_size is not None:
        return geom.img_size, "teacher"
    return None, "data"


def check_channels(geom: TeacherGeometry, data_chans: int, opts: Stage1Options) -> None:
    """Raise unless the teacher can be fed ``data_chans``-channel images (grey to RGB is repeated)."""
    t = geom.in_chans
    if t is None or t == data_chans or (data_chans == 1 and t == 3):
        return
    hint = "give --in-chans 1 to convert the images to grey at load" if t == 1 and data_chans == 3 else None
    what = "--in-chans" if opts.in_chans is not None else "the data"
    raise InvalidInputError(
        f"the teacher takes {t}-channel images but {what} gives {data_chans}-channel images", hint=hint
    )


def resolve(geom: TeacherGeometry, opts: Stage1Options, *, img_size: int, in_chans: int) -> Stage1Geometry:
    """The bank's geometry and auxiliary model for a teacher of geometry ``geom`` and data of ``img_size`` x
    ``img_size`` x ``in_chans`` (already resized/converted by the caller); sources recorded per field."""
    sources = {
        "img_size": teacher_image_size(geom, opts)[1],
        "in_chans": "option" if opts.in_chans else "data",
    }

    def pick(name: str, teacher_value, fallback):
        value = getattr(opts, name)
        if value is not None:
            sources[name] = "option"
            return value
        if geom.vit and teacher_value is not None:
            sources[name] = "teacher"
            return teacher_value
        sources[name] = "default"
        return fallback

    patch = pick("patch_size", geom.patch_size, default_patch_size(img_size))
    head_dim = pick("head_dim", geom.head_dim, FALLBACK["head_dim"])
    mlp_ratio = float(pick("mlp_ratio", geom.mlp_ratio, FALLBACK["mlp_ratio"]))
    if opts.w is not None:
        w, sources["w"] = opts.w, "option"
    else:
        w, sources["w"] = head_dim, "head_dim"
    if img_size % patch:
        raise UsageError(
            f"the image size {img_size} is not a multiple of the patch size {patch} "
            f"({sources['patch_size']}); give --patch-size or --img-size"
        )
    depth_t = min(geom.depth, AUX_CAP[0]) if geom.vit and geom.depth else None
    width_t = min(geom.embed_dim, AUX_CAP[1]) if geom.vit and geom.embed_dim else None
    aux_depth = pick("aux_depth", depth_t, FALLBACK["aux_depth"])
    aux_width = pick("aux_embed_dim", width_t, FALLBACK["aux_embed_dim"])
    if sources["aux_embed_dim"] != "option":
        aux_width = served_width(aux_width, w=w, head_dim=head_dim, mlp_ratio=mlp_ratio)
    return Stage1Geometry(
        img_size=img_size,
        in_chans=in_chans,
        patch_size=patch,
        head_dim=head_dim,
        w=w,
        mlp_ratio=mlp_ratio,
        aux_depth=aux_depth,
        aux_embed_dim=aux_width,
        sources=sources,
    )


def served_width(width: int, *, w: int, head_dim: int, mlp_ratio: float) -> int:
    """The largest width <= ``width`` a bank of this geometry serves (a multiple of lcm(w, head_dim) whose MLP
    hidden size is a multiple of w), or the smallest one when none is that small."""
    step = math.lcm(w, head_dim)
    served = [
        d for d in range(step, step * (max(width // step, 1) + 64) + 1, step) if (d * mlp_ratio) % w == 0
    ]
    if not served:
        raise UsageError(
            f"no auxiliary width suits template size {w}, head size {head_dim} and MLP ratio {mlp_ratio:g}; "
            "give --aux-embed-dim, --template-size or --mlp-ratio"
        )
    below = [d for d in served if d <= width]
    return below[-1] if below else served[0]
