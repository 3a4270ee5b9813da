"""What a template bank's tensors look like: parameter kinds, bank geometry, per-spec layouts.

A kind is a ViT parameter named as timm names it (per-layer kinds without the ``blocks.{l}.`` prefix).
``BankGeometry`` says which ViTSpecs a bank can produce; ``kind_layouts`` says, for one spec, the template
shape, the scaler grid and timm's parameter shape of every kind (DESIGN 3.1). Storage is wave.bank's job.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import IMG_SIZE_MAX, ViTSpec, check_img_size

# ---- The weight kinds: the one table of what every parameter kind looks like ---------------------------
# A kind's axes name what each dimension runs along. Width axes grow with the model and are tiled by
# templates of size w: "embed" (D, the residual stream), "attn" (D, attention channels: whole heads),
# "qkv" (3D: q, k and v blocks of attention channels), "mlp" (H, the mlp hidden units). Fixed axes keep
# their size whatever the width: "one" (1), "tokens" (patches + 1), "classes" (the head's task),
# "pixels" (in_chans * patch**2), "chans" (in_chans), "patch" (patch_size).
WIDTH_AXES = ("embed", "attn", "qkv", "mlp")


@dataclass(frozen=True)
class Kind:
    """One parameter kind, named as timm names it (block kinds without the ``blocks.{l}.`` prefix)."""

    name: str
    per_layer: bool  # True: one per block, at blocks.{l}.<name>; False: one global parameter
    axes: tuple[str, ...]  # the expanded form (rows, cols) or (length,): templates tile its width axes
    param_axes: tuple[str, ...]  # timm's parameter tensor, dimension by dimension (a reshape of ``axes``)

    @property
    def vector(self) -> bool:
        """True: 1-D templates (expand_vec); False: 2-D templates (block-form expand)."""
        return len(self.axes) == 1


def _kinds(per_layer: bool, rows: list[tuple[str, tuple[str, ...], tuple[str, ...] | None]]) -> list[Kind]:
    return [Kind(name, per_layer, axes, param or axes) for name, axes, param in rows]


# Order matters: it is the order of a bank's tensors and of every per-kind loop.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in _kinds(
        True,
        [
            ("attn.qkv.weight", ("qkv", "embed"), None),
            ("attn.proj.weight", ("embed", "attn"), None),
            ("mlp.fc1.weight", ("mlp", "embed"), None),
            ("mlp.fc2.weight", ("embed", "mlp"), None),
            ("norm1.weight", ("embed",), None),  # attention half of a block
            ("norm1.bias", ("embed",), None),
            ("attn.qkv.bias", ("qkv",), None),
            ("attn.proj.bias", ("embed",), None),
            ("norm2.weight", ("embed",), None),  # mlp half
            ("norm2.bias", ("embed",), None),
            ("mlp.fc1.bias", ("mlp",), None),
            ("mlp.fc2.bias", ("embed",), None),
        ],
    )
    + _kinds(
        False,
        [
            ("patch_embed.proj.weight", ("embed", "pixels"), ("embed", "chans", "patch", "patch")),
            ("cls_token", ("one", "embed"), ("one", "one", "embed")),
            ("pos_embed", ("tokens", "embed"), ("one", "tokens", "embed")),
            ("head.weight", ("classes", "embed"), None),
            ("patch_embed.proj.bias", ("embed",), None),
            ("norm.weight", ("embed",), None),
            ("norm.bias", ("embed",), None),
            ("head.bias", ("classes",), None),
        ],
    )
}
BLOCK_MATRIX_KINDS = tuple(k.name for k in KINDS.values() if k.per_layer and not k.vector)
BLOCK_VECTOR_KINDS = tuple(k.name for k in KINDS.values() if k.per_layer and k.vector)
GLOBAL_MATRIX_KINDS = tuple(k.name for k in KINDS.values() if not k.per_layer and not k.vector)
GLOBAL_VECTOR_KINDS = tuple(k.name for k in KINDS.values() if not k.per_layer and k.vector)
BLOCK_KINDS = BLOCK_MATRIX_KINDS + BLOCK_VECTOR_KINDS
ALL_KINDS = BLOCK_KINDS + GLOBAL_MATRIX_KINDS + GLOBAL_VECTOR_KINDS
HEAD_KINDS = ("head.weight", "head.bias")

# Upper bounds of a bank geometry's fields (far above any real ViT; they keep every size computed from a
# geometry small). The tensors pin w, patch_size, in_chans, img_size, num_classes and the template counts
# exactly; max_depth and max_embed_dim are bounded by the number of sizes they make a bank serve.
GEOMETRY_LIMITS = {
    "img_size": 4096,
    "patch_size": 4096,
    "in_chans": 64,
    "num_classes": 1_000_000,
    "w": 4096,
    "head_dim": 4096,
    "max_depth": 1024,
    "max_embed_dim": 1 << 20,
}
MAX_TEMPLATES = 65536  # templates per kind
MAX_MLP_RATIO = 64.0
MAX_WIDTHS = 1024  # embed widths a bank serves
MAX_SIZES = 16384  # (depth, width) pairs a bank serves: what plan and build evaluate
# The largest target any bank initializes (beyond the auxiliary model the scalers are grown, wave.slicing).
TARGET_LIMITS = {"depth": 256, "embed_dim": 8192, "img_size": IMG_SIZE_MAX}


def axis_sizes(
    *, embed_dim: int, mlp_hidden: int, in_chans: int, patch_size: int, tokens: int, classes: int
) -> dict[str, int]:
    """The size of every axis of the kinds table for one model."""
    return {
        "embed": embed_dim,
        "attn": embed_dim,
        "qkv": 3 * embed_dim,
        "mlp": mlp_hidden,
        "one": 1,
        "tokens": tokens,
        "classes": classes,
        "pixels": in_chans * patch_size**2,
        "chans": in_chans,
        "patch": patch_size,
    }


def tiling(kind: Kind, sizes: dict[str, int], w: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(template shape, scaler grid) of ``kind``: a width axis of size m is m/w tiles of w; a fixed axis is
    one tile of its whole size."""
    template = tuple(w if a in WIDTH_AXES else sizes[a] for a in kind.axes)
    grid = tuple(sizes[a] // w if a in WIDTH_AXES else 1 for a in kind.axes)
    return template, grid


@dataclass(frozen=True)
class KindLayout:
    """How one kind is produced for one spec. Shapes exclude the template axis N and the layer axis L."""

    kind: str
    per_layer: bool  # True: one scaler set per block, param at blocks.{l}.<kind>
    vector: bool  # True: expand_vec with 1-D templates; False: block-form expand
    template_shape: tuple[int, ...]  # (u, v) or (w,)
    grid: tuple[int, ...]  # scaler grid (a, b) or (m/w,)
    param_shape: tuple[int, ...]  # timm's shape of the parameter

    def scaler_shape(self, n: int, depth: int) -> tuple[int, ...]:
        return ((depth,) if self.per_layer else ()) + (n, *self.grid)


@dataclass(frozen=True)
class BankGeometry:
    """What a bank's templates look like and which ViTSpecs they can produce."""

    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int  # of the bank's own task (the templated head)
    w: int  # template size
    head_dim: int
    mlp_ratio: float
    templates: dict[str, int]  # kind -> N
    max_depth: int
    max_embed_dim: int

    def __post_init__(self) -> None:
        for name in [f.name for f in dataclasses.fields(self) if f.type == "int"]:
            value, limit = getattr(self, name), GEOMETRY_LIMITS[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise InvalidInputError(
                    f"bank geometry: {name} must be an integer in 1..{limit}, got {_short(value)}"
                )
        ratio = self.mlp_ratio
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= MAX_MLP_RATIO:
            raise InvalidInputError(
                f"bank geometry: mlp_ratio must be a number in (0, {MAX_MLP_RATIO}], got {_short(ratio)}"
            )
        if self.img_size % self.patch_size:
            raise InvalidInputError("bank geometry: img_size must be a multiple of patch_size")
        if not isinstance(self.templates, dict):
            raise InvalidInputError("bank geometry: templates must map each kind to its template count")
        missing = sorted(set(ALL_KINDS) - set(self.templates))
        unknown = sorted(set(self.templates) - set(ALL_KINDS))
        if missing or unknown:
            raise InvalidInputError(
                f"bank geometry: templates per kind: missing {missing}, unknown {[_short(k) for k in unknown[:5]]}"
            )
        for kind, n in self.templates.items():
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_TEMPLATES:
                raise InvalidInputError(
                    f"bank geometry: templates[{kind!r}] must be an integer in 1..{MAX_TEMPLATES}"
                )
        # The sizes a bank serves: depth 1..max_depth x embed_dim in steps of lcm(w, head_dim). Bounded, so
        # that listing them (templates info, plan, build) is quick. w itself is pinned by the template shapes.
        widths = self.max_embed_dim // math.lcm(self.w, self.head_dim)
        if widths < 1:
            raise InvalidInputError(
                f"bank geometry: max_embed_dim={self.max_embed_dim} is below the smallest width "
                f"lcm(w, head_dim)={math.lcm(self.w, self.head_dim)}"
            )
        if widths > MAX_WIDTHS or widths * self.max_depth > MAX_SIZES:
            raise InvalidInputError(
                f"bank geometry: max_depth={self.max_depth} x {widths} widths up to max_embed_dim="
                f"{self.max_embed_dim} is more sizes than a bank serves (at most {MAX_WIDTHS} widths "
                f"and {MAX_SIZES} sizes)"
            )

    @classmethod
    def create(cls, *, n_matrix: int = 4, n_vector: int = 2, **fields: Any) -> BankGeometry:
        """Geometry with n_matrix templates for every matrix kind and n_vector for every vector kind."""
        vectors = set(BLOCK_VECTOR_KINDS + GLOBAL_VECTOR_KINDS)
        templates = {k: (n_vector if k in vectors else n_matrix) for k in ALL_KINDS}
        return cls(templates=templates, **fields)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def problems(self, spec: ViTSpec) -> list[str]:
        """Every reason this bank cannot produce ``spec`` (empty when it can).

        Any depth and width (multiples of w and head_dim) up to TARGET_LIMITS, beyond the auxiliary model
        too (wave.slicing grows the scalers), and any image size that is a multiple of the patch size (the
        position-embedding templates are resampled); patch size, channels and mlp ratio are the bank's.
        """
        out = []
        for name in ("patch_size", "in_chans", "mlp_ratio"):
            if getattr(spec, name) != getattr(self, name):
                out.append(f"{name}={getattr(spec, name)} differs from the bank's {getattr(self, name)}")
        d = spec.embed_dim
        if d % self.w:
            out.append(f"embed_dim={d} is not a multiple of the template size w={self.w}")
        elif spec.mlp_hidden % self.w:
            out.append(f"mlp hidden size {spec.mlp_hidden} is not a multiple of w={self.w}")
        if d % self.head_dim:
            out.append(f"embed_dim={d} is not a multiple of the bank's head_dim={self.head_dim}")
        for name, limit in TARGET_LIMITS.items():
            if getattr(spec, name) > limit:
                out.append(f"{name}={getattr(spec, name)} exceeds the largest target a bank makes ({limit})")
        return out

    def target_img_size(self, img_size: int | None) -> int:
        """The image size of a target (``--img-size``; None: the bank's), checked against the patch size."""
        return self.img_size if img_size is None else check_img_size(img_size, self.patch_size)

    def aux_problems(self, spec: ViTSpec) -> list[str]:
        """``problems`` plus the limits of a bank's own auxiliary model: the bank's image size, depth up to
        max_depth and width up to max_embed_dim (what the bank file's aux_spec must satisfy)."""
        out = self.problems(spec)
        if spec.img_size != self.img_size:
            out.append(f"img_size={spec.img_size} differs from the bank's {self.img_size}")
        if spec.depth > self.max_depth:
            out.append(f"depth={spec.depth} exceeds the bank's max_depth={self.max_depth}")
        if spec.embed_dim > self.max_embed_dim:
            out.append(f"embed_dim={spec.embed_dim} exceeds the bank's max_embed_dim={self.max_embed_dim}")
        return out

    def check_spec(self, spec: ViTSpec, *, aux: bool = False) -> None:
        """Raise InvalidInputError explaining why ``spec`` cannot be produced from this bank (``aux``: why it
        cannot be the bank's auxiliary model)."""
        problems = self.aux_problems(spec) if aux else self.problems(spec)
        if problems:
            what = "auxiliary model" if aux else "template bank"
            raise InvalidInputError(f"the {what} cannot produce {spec.name}: " + "; ".join(problems))

    def valid_embed_dims(self) -> list[int]:
        step = self.w * self.head_dim // math.gcd(self.w, self.head_dim)
        return [d for d in range(step, self.max_embed_dim + 1, step) if (d * self.mlp_ratio) % self.w == 0]

    def make_spec(
        self,
        depth: int,
        embed_dim: int,
        num_heads: int | None = None,
        num_classes: int | None = None,
        img_size: int | None = None,
    ) -> ViTSpec:
        """A checked ViTSpec of this geometry (num_heads defaults to embed_dim / head_dim, img_size to the
        bank's)."""
        if num_heads is None:
            if embed_dim % self.head_dim:
                raise InvalidInputError(
                    f"embed_dim={embed_dim} is not a multiple of head_dim={self.head_dim}"
                )
            num_heads = embed_dim // self.head_dim
        spec = ViTSpec(
            depth=depth,
            embed_dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=self.mlp_ratio,
            patch_size=self.patch_size,
            img_size=self.img_size if img_size is None else img_size,
            in_chans=self.in_chans,
            num_classes=self.num_classes if num_classes is None else num_classes,
        )
        self.check_spec(spec)
        return spec

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> BankGeometry:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != known:
            got = [_short(k) for k in sorted(data)][:12] if isinstance(data, dict) else type(data).__name__
            raise InvalidInputError(f"bank geometry must have exactly the fields {sorted(known)}, got {got}")
        return cls(**data)


def _short(value: Any) -> str:
    """A value from a bank file for an error message: repr, escaped, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def template_shape(geom: BankGeometry, kind: str) -> tuple[int, ...]:
    sizes = axis_sizes(
        embed_dim=geom.w,
        mlp_hidden=geom.w,
        in_chans=geom.in_chans,
        patch_size=geom.patch_size,
        tokens=geom.num_patches + 1,
        classes=geom.num_classes,
    )
    return tiling(KINDS[kind], sizes, geom.w)[0]


def kind_layouts(
    geom: BankGeometry, spec: ViTSpec, templated_head: bool = True, *, aux: bool = False
) -> dict[str, KindLayout]:
    """Layout of every templated kind for ``spec`` (head kinds only when ``templated_head``; ``aux``: the
    spec is the bank's auxiliary model, held to its limits)."""
    geom.check_spec(spec, aux=aux)
    if templated_head and spec.num_classes != geom.num_classes:
        raise InvalidInputError(
            f"a templated head needs num_classes={geom.num_classes} (the bank's task), got {spec.num_classes}"
        )
    sizes = axis_sizes(
        embed_dim=spec.embed_dim,
        mlp_hidden=spec.mlp_hidden,
        in_chans=spec.in_chans,
        patch_size=spec.patch_size,
        tokens=spec.seq_len,
        classes=spec.num_classes,
    )
    out = {}
    for name, kind in KINDS.items():
        if name in HEAD_KINDS and not templated_head:
            continue
        t_shape, grid = tiling(kind, sizes, geom.w)
        shape = tuple(sizes[a] for a in kind.param_axes)
        out[name] = KindLayout(name, kind.per_layer, kind.vector, t_shape, grid, shape)
    return out
