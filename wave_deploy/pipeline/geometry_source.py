"""Where a search space's geometry comes from, for each ``--init``, without torch: the one rule behind the
build (``pipeline.inits.resolve_sources``) and the plan (``planning.plan``), so that ``plan --init X``
searches exactly the sizes ``build --init X`` would search.

    wave              the bank's
    weight-selection  the teacher's (``teacher_geometry``): depth and width up to the teacher's
    random            the bank's when --templates is given; else the teacher's when one is given; else
                      ``default_geometry`` at the data's image size and channels (docs/decisions.md)

Only sizes from a bank are searched past the bank (``--beyond-bank``) and have a headroom note: weight
selection cannot cut past its teacher, and the default geometry is already the largest a default serves.
"""

from __future__ import annotations

from wave_deploy.data_shape import DataShape
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.geometry import BankGeometry

# The geometry of a random-init build with neither bank nor teacher: DeiT-Small at most (depth 12, width 384).
DEFAULT_MAX_DEPTH, DEFAULT_MAX_EMBED_DIM, DEFAULT_MLP_RATIO = 12, 384, 4.0
PATCH_CHOICES = (16, 14, 8, 7, 4, 2, 1)  # the largest that divides the image into at least 4 x 4 patches
GEOMETRY_SOURCES = ("bank", "teacher", "default")


def wants_bank(init: str, templates: str | None) -> bool:
    """Whether a build (or plan) of ``init`` reads a bank: WAVE always, random when --templates names one."""
    return init == "wave" or templates is not None


def default_geometry(img_size: int, in_chans: int, num_classes: int) -> BankGeometry:
    """The search space of a random-init build without bank or teacher: patch the largest of PATCH_CHOICES
    that leaves at least 4 x 4 patches (224 px: 16, 28 px: 7), head size 64 from 112 px up (32 below),
    depth up to 12 and width up to 384 (DeiT-Small), MLP ratio 4."""
    patch = next(p for p in PATCH_CHOICES if img_size % p == 0 and img_size // p >= 4 or p == 1)
    head = 64 if img_size >= 112 else 32
    return BankGeometry.create(
        img_size=img_size, patch_size=patch, in_chans=in_chans, num_classes=num_classes, w=head,
        head_dim=head, mlp_ratio=DEFAULT_MLP_RATIO, max_depth=DEFAULT_MAX_DEPTH,
        max_embed_dim=DEFAULT_MAX_EMBED_DIM,
    )  # fmt: skip


def teacher_geometry(spec: ViTSpec) -> BankGeometry:
    """The sizes weight selection can cut from a teacher: depth and width up to its own, its patch, channels,
    head size and MLP ratio (widths in steps of its head size)."""
    return BankGeometry.create(
        img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans,
        num_classes=spec.num_classes, w=spec.head_dim, head_dim=spec.head_dim, mlp_ratio=spec.mlp_ratio,
        max_depth=spec.depth, max_embed_dim=spec.embed_dim,
    )  # fmt: skip


def search_geometry(
    init: str, shape: DataShape, *, bank: BankGeometry | None, teacher: ViTSpec | None, img_size: int | None
) -> tuple[BankGeometry, str]:
    """(the search space's geometry, where it comes from: "bank" | "teacher" | "default") for ``init`` given
    the bank and teacher it reads (None: none) and the data's shape; ``img_size`` is --img-size (None: the
    data's). Images that are not square, without --img-size, leave the default geometry no size (exit 3)."""
    if bank is not None and init != "weight-selection":
        return bank, "bank"
    if teacher is not None:
        return teacher_geometry(teacher), "teacher"
    size = img_size or shape.img_size
    if size is None:
        raise InvalidInputError(
            f"data {shape.source}: the images are not square; give --img-size N to resize them at load"
        )
    return default_geometry(size, shape.in_chans, shape.num_classes), "default"


def check_objective(objective: str, init: str, has_bank: bool) -> None:
    """--objective accuracy scores sizes sliced from a bank: a build or plan without one cannot use it
    (exit 2)."""
    if objective == "accuracy" and not has_bank:
        raise no_bank_to_score(init)


def no_bank_to_score(init: str) -> UsageError:
    """The refusal of --objective accuracy without a bank (exit 2)."""
    return UsageError(f"--objective accuracy scores sizes sliced from a bank; --init {init} here has none: "
                      "use --objective flops or params")  # fmt: skip
