"""The calibration design: which (spec, batch) points a calibration measures, at which geometry, and how
each is timed (``TIMING``). ``calibrate`` measures it here; a bundle ships it for the on-device kit
(``calibration.bundle.bundle_design``), so both measure the same points the same way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from wave_deploy.calibration.file import FEATURES
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.spec import ViTSpec, check_img_size

# Per point and pass: warm-up runs, then timed runs until both counts are reached. Shipped to the kit too.
TIMING: dict[str, dict[str, Any]] = {
    "full": {"warmup": 10, "iterations": 30, "min_duration_s": 0.3, "passes": 3},
    "quick": {"warmup": 3, "iterations": 10, "min_duration_s": 0.05, "passes": 1},
}
MIN_POINTS = len(FEATURES)  # the fit needs at least one measurement per coefficient
# Above this many tokens per image (class token included) the design times batches 1 and 2 only: at
# 224 px / patch 16 (197 tokens) a DeiT-Small-sized model at batch 8 takes over a second per run on one core.
LARGE_TOKENS = 65


def _spread(values: list[int], k: int) -> list[int]:
    """k values spread evenly over ``values`` by index, ends included."""
    if len(values) <= k:
        return list(values)
    return sorted({values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)})


def default_batches(space, batch_max: int, *, quick: bool = False, latency_batch: int = 1) -> list[int]:
    """Batches the design times: 1, 2, 4, 8 (quick: 1, 4), or 1, 2 (quick: 1) at more than LARGE_TOKENS
    tokens per image; plus the profile's budget batch; all capped at ``batch_max``."""
    tokens = (space.img_size // space.patch_size) ** 2 + 1
    base: tuple[int, ...]
    if tokens > LARGE_TOKENS:
        base = (1,) if quick else (1, 2)
    else:
        base = (1, 4) if quick else (1, 2, 4, 8)
    return sorted({b for b in (*base, latency_batch) if b <= batch_max} or {1})


def _widen(axes: list[list[int]], pools: list[list[int]]) -> list[list[int]]:
    """Add values from ``pools`` (depths, widths, batches; the farthest from those taken first) until the grid
    has MIN_POINTS points or the pools are used up."""
    axes = [sorted(a) for a in axes]
    for i in range(3):
        while len(axes[0]) * len(axes[1]) * len(axes[2]) < MIN_POINTS:
            left = [v for v in pools[i] if v not in axes[i]]
            if not left:
                break
            axes[i] = sorted([*axes[i], max(left, key=lambda v: min(abs(v - a) for a in axes[i]))])
    return axes


def design_axes(space, batch_max: int, *, quick: bool = False, batches: list[int] | None = None):
    """(depths, widths, batches) of the design. Full: widths spread over the space (6, ends included), depths
    1, 2, 4, 8, 12 and the maximum, ``batches`` (default 1, 2, 4, 8 up to ``batch_max``). Quick: a subset (3
    widths, depths 1 and 4, batches 1 and 4 where the full design has them). Both are widened (more depths,
    then widths, then batches) to at least MIN_POINTS points; InvalidInputError says what to pass when even
    every size of the space is fewer."""
    all_depths, all_widths = list(range(1, space.max_depth + 1)), space.widths()
    batches = sorted(batches or [b for b in (1, 2, 4, 8) if b <= batch_max] or [1])
    pools = [all_depths, all_widths, sorted({*batches, *(b for b in (1, 2, 4, 8, 16) if b <= batch_max)})]
    depths = sorted({1, 2, 4, 8, 12, space.max_depth} & set(all_depths))
    full = _widen([depths, _spread(all_widths, 6), batches], pools)
    count = len(full[0]) * len(full[1]) * len(full[2])
    if count < MIN_POINTS:
        per_depth, per_width = len(all_widths) * len(pools[2]), len(all_depths) * len(pools[2])
        raise InvalidInputError(
            f"the fit needs at least {MIN_POINTS} measurements, but this geometry allows only {count} (depths "
            f"1..{space.max_depth}, widths {all_widths[0]}..{all_widths[-1]}, batches {pools[2]})",
            hint=f"pass --max-depth {-(-MIN_POINTS // per_depth)} or --max-embed-dim "
            f"{space.width_step * -(-MIN_POINTS // per_width)} (or raise the profile's runtime.batch_max)",
        )
    if not quick:
        return full
    start = [
        [d for d in full[0] if d in (1, 4)] or full[0][:1],
        _spread(full[1], 3),
        [b for b in full[2] if b in (1, 4)] or full[2][:1],
    ]
    return _widen(start, full)


def design_samples(
    space, batch_max: int, *, quick: bool = False, batches: list[int] | None = None
) -> list[tuple[ViTSpec, int]]:
    """The (spec, batch) grid calibration measures at ``space``'s geometry (``design_axes``); the quick design
    is a subset of the full one, so a bundle that ships the full design serves both."""
    depths, widths, batches = design_axes(space, batch_max, quick=quick, batches=batches)
    return [(space.spec(d, w), b) for w in widths for d in depths for b in batches]


def calibration_space(
    space,
    *,
    img_size=None,
    patch_size=None,
    in_chans=None,
    max_depth=None,
    max_width=None,
    head_dim=None,
    mlp_ratio=None,
):
    """``space`` (a bank's SearchSpace) at another geometry, head size, MLP ratio or size range: what
    ``calibrate`` measures when given --img-size/--patch-size/--in-chans/--head-dim/--mlp-ratio/--max-depth/
    --max-embed-dim. The widths are the ones a bank of that head size serves (``BankGeometry``'s one width
    rule, with templates of the head size): multiples of the head size whose MLP width is one too. Bad values
    raise InvalidInputError (an image size that is not a multiple of the patch: UsageError, the one rule)."""
    changes = {
        k: v
        for k, v in (
            ("img_size", img_size),
            ("patch_size", patch_size),
            ("in_chans", in_chans),
            ("max_depth", max_depth),
            ("max_embed_dim", max_width),
            ("head_dim", head_dim),
            ("mlp_ratio", None if mlp_ratio is None else float(mlp_ratio)),
        )
        if v is not None
    }
    if head_dim is not None or mlp_ratio is not None:
        changes["w"] = changes.get("head_dim", space.head_dim)
    if "img_size" in changes or "patch_size" in changes:
        changes["img_sizes"] = ()
    new = dataclasses.replace(space, **changes)
    check_img_size(new.img_size, new.patch_size)
    if not new.widths():
        raise InvalidInputError(
            f"no width up to {new.max_embed_dim} has an MLP width (x {new.mlp_ratio:g}) that is a multiple of the "
            f"head size {new.head_dim}; give another --mlp-ratio or --head-dim, or a larger --max-embed-dim"
        )
    return new


def bundle_space_at(geometry: dict, *, w: int, depth: int, embed_dim: int) -> SearchSpace:
    """The sizes a bundle's design covers at ``geometry`` (image size, patch, channels, classes, MLP ratio, head
    size) for a model of ``depth`` and ``embed_dim`` whose MLP width's gcd with the head size is ``w``: depths
    up to 12, widths up to 384 (the shipped bank's range) stretched to include the model itself."""
    head = geometry["head_dim"]
    return SearchSpace(
        img_size=geometry["img_size"], patch_size=geometry["patch_size"], in_chans=geometry["in_chans"],
        num_classes=geometry["num_classes"], mlp_ratio=geometry["mlp_ratio"], w=w, head_dim=head,
        max_depth=max(12, depth), max_embed_dim=max(384 // head * head, embed_dim),
    )  # fmt: skip


def bundle_points(space: SearchSpace, profile, *, quick: bool) -> list[tuple[ViTSpec, int]]:
    """The (spec, batch) points a bundle's design at ``space`` holds for ``profile`` (its batch_max and budget
    batch), or its quick subset: what the kit measures (``run_on_device.py --calibrate [--quick]``)."""
    batch_max = profile.runtime.batch_max
    batches = default_batches(space, batch_max, latency_batch=profile.budgets.latency_batch)
    return design_samples(space, batch_max, quick=quick, batches=batches)


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` >= 1, ascending, found up to its square root (sqrt(n) steps, not n)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def bundle_point_sets(geometry: dict, profile, *, quick: bool, depth: int, embed_dim: int) -> list[set]:
    """Every point set {(depth, width, batch)} a bundle's design (or its quick subset) can have at ``geometry``
    for ``profile``, when its largest measured depth and width are ``depth`` and ``embed_dim``: one per
    possible gcd of the head size and the model's MLP width (a divisor of the head size)."""
    out = []
    for w in divisors(geometry["head_dim"]):
        try:
            space = bundle_space_at(geometry, w=w, depth=depth, embed_dim=embed_dim)
            points = bundle_points(space, profile, quick=quick)
        except InvalidInputError:
            continue
        out.append({(s.depth, s.embed_dim, b) for s, b in points})
    return out
