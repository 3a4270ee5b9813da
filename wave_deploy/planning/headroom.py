"""Headroom: when a bank's largest size uses a small share of a profile's budgets, say so and name the size
the budgets would admit; and the search space that goes past the bank's sizes (``beyond_bank``).

The *binding* budget of a size is the budget it comes closest to: the largest of predicted latency / latency
budget, runtime memory / memory budget and engine-build memory / build budget. When the largest size a bank
serves (most FLOPs at the largest searched resolution) uses less than ``HEADROOM_SHARE`` of its binding
budget, ``headroom`` returns a record and a note naming the largest size of the bank's own shape, scaled by
a factor in ``FACTORS`` (depth and width together), that still fits every budget: what ``--beyond-bank`` or a
larger bank (``templates build --aux-depth/--aux-embed-dim``) would let a build use.

No torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from wave_deploy.errors import UsageError
from wave_deploy.planning.selection import Candidate, SearchSpace, evaluate
from wave_deploy.profiles import DeviceProfile
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.geometry import MAX_SIZES, TARGET_LIMITS

HEADROOM_SHARE = 0.25  # issue 18: "less than a quarter of a profile's binding budget"
FACTORS = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)  # the scaled sizes tried for the admitted size


def beyond_bank(space: SearchSpace, factor: float) -> SearchSpace:
    """``space`` searching depths up to floor(factor x max_depth) and widths up to factor x max_embed_dim
    (rounded down to the width step), capped at the largest target a bank makes (TARGET_LIMITS)."""
    if factor == 1.0:
        return space
    depth, width = _scaled(space, factor)
    step = space.width_step
    sizes = depth * (width // step)
    if sizes > MAX_SIZES:
        raise UsageError(
            f"--beyond-bank {factor:g} makes {sizes:,} sizes to search (depth up to {depth}, width up to "
            f"{width}); at most {MAX_SIZES:,}: give a smaller factor"
        )
    return dataclasses.replace(space, max_depth=depth, max_embed_dim=width)


def _scaled(space: SearchSpace, factor: float) -> tuple[int, int]:
    """(depth, width) of the bank's largest size scaled by ``factor``, width a multiple of the width step."""
    step = space.width_step
    depth = min(TARGET_LIMITS["depth"], max(space.max_depth, math.floor(space.max_depth * factor)))
    width = min(TARGET_LIMITS["embed_dim"], max(space.max_embed_dim, space.max_embed_dim * factor))
    return depth, max(step, int(width // step) * step)


def binding(c: Candidate, profile: DeviceProfile) -> tuple[str, float, float, float]:
    """(budget, share used, value, limit) of the budget ``c`` comes closest to."""
    b = profile.budgets
    shares = [("latency", c.latency_at_budget_ms, b.latency_ms), ("memory", c.memory.total_mib, b.memory_mib)]
    if b.build_memory_mib is not None and c.memory.build_peak_mib is not None:
        shares.append(("build_memory", c.memory.build_peak_mib, b.build_memory_mib))
    name, value, limit = max(shares, key=lambda s: s[1] / s[2])
    return name, value / limit, value, limit


def _largest(space: SearchSpace, img_size: int) -> ViTSpec:
    return space.spec(space.max_depth, max(space.widths()), img_size=img_size)


def headroom(
    bank_space: SearchSpace, profile: DeviceProfile, *, calibration=None, batch: int | None = None
) -> dict[str, Any] | None:
    """The headroom record of a bank on a profile, or None when its largest size uses a quarter of the
    binding budget or more. ``calibration``: what selection predicts with (a Calibration, or None for the
    profile's own)."""
    img_size = bank_space.resolutions()[-1]
    largest = evaluate(_largest(bank_space, img_size), profile, calibration=calibration, batch=batch)
    budget, share, value, limit = binding(largest, profile)
    if share >= HEADROOM_SHARE:
        return None
    admitted = None
    for factor in FACTORS:  # sizes grow with the factor: the last that fits is the largest admitted
        depth, width = _scaled(bank_space, factor)
        spec = dataclasses.replace(
            largest.spec, depth=depth, embed_dim=width, num_heads=width // bank_space.head_dim
        )
        c = evaluate(spec, profile, calibration=calibration, batch=batch)
        if not c.feasible:
            break
        admitted = {"factor": factor, "name": spec.name, "depth": depth, "embed_dim": width,
                    "share": round(binding(c, profile)[1], 4), "flops": c.flops, "params": c.params}  # fmt: skip
    unit = "ms" if budget == "latency" else "MiB"
    note = (
        f"headroom: the largest size the bank serves, {largest.spec.name}, uses {share:.0%} of the "
        f"{budget.replace('_', ' ')} budget ({value:.3g} of {limit:g} {unit})"
    )
    if admitted is None:
        note += "; no size of the bank's shape 1.25x larger fits every budget"
    else:
        note += (
            f"; the budgets would admit {admitted['name']} ({admitted['factor']:g}x the bank's largest depth "
            f"and width): search it with --beyond-bank {admitted['factor']:g}, or build a larger bank"
        )
    return {
        "largest_in_bank": largest.spec.name,
        "binding_budget": budget,
        "share": round(share, 4),
        "value": value,
        "limit": limit,
        "threshold": HEADROOM_SHARE,
        "admits": admitted,
        "note": note,
    }
