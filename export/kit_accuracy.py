"""Accuracy gates with a stated confidence: the ONE definition that the export's fp16/int8 gate
(wave_deploy.exporters.quantize.judge_variant) and the on-device kit's accuracy gate (kit_common) both use,
and the labelled subset the bundle ships (stratified by class, uint8 pixels, normalised on the device).

This file is copied into every on-device bundle, so it needs nothing but the Python standard library (numpy
only inside ``normalize_uint8``). wave-deploy imports it as ``wave_deploy._kit.kit_accuracy``.

The rule (docs/export.md, "Accuracy gates"). A candidate (an fp16/int8 file, or the device) is compared with
a reference (ONNX fp32, or the build machine running the same file) on the same n labelled images. Only the
images whose correctness differs carry information: ``losses`` (reference right, candidate wrong) and
``gains`` (reference wrong, candidate right); the drop is (losses - gains) / n. Conditional on the m = losses
+ gains discordant images, losses ~ Binomial(m, p) and the drop is (m / n)(2p - 1), so an exact
(Clopper-Pearson) interval on p gives an exact interval on the drop. The gate

- FAILS when the drop exceeds the allowance with CONFIDENCE (its one-sided lower bound is above it; this is
  the exact conditional binomial test of "drop <= allowance" at 1 - CONFIDENCE, McNemar's exact test when the
  allowance is 0): one changed prediction never fails a gate on its own;
- reports NOT_ENOUGH_DATA when it cannot fail and fewer than MIN_IMAGES images were judged (with fewer, one
  image moves the drop by more than the default one-point allowance): the file is kept (nothing shows it is
  worse), and every report says "not enough data to judge", never "ok";
- PASSES otherwise.

Without labels, the share of changed top-1 classes bounds the drop from above; the same rule applies to it,
with the exact interval of a binomial share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

CONFIDENCE = 0.95  # one-sided: the interval reported is two-sided at 1 - 2 x (1 - CONFIDENCE) = 90 %
MIN_IMAGES = 100  # fewer images: a gate cannot pass ("not enough data to judge")
PASS, FAIL, NOT_ENOUGH_DATA = "pass", "fail", "not enough data"


# --- exact binomial bounds (standard library only) -----------------------------------------------------


def binom_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly term by term (in log space)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]  # fmt: skip
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve(f, target: float) -> float:
    """p in [0, 1] with f(p) = target for f increasing in p (bisection to 1e-12)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def lower_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound on p from k successes in n: P(X >= k | p) = alpha."""
    return 0.0 if k <= 0 else _solve(lambda p: binom_tail(k, n, p), alpha)


def upper_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound on p from k successes in n: P(X <= k | p) = alpha."""
    return 1.0 if k >= n else _solve(lambda p: binom_tail(k + 1, n, p), 1.0 - alpha)


# --- the gate --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropJudgement:
    """One gate decision: what was compared, the drop, its interval and the decision with its reason."""

    n_images: int
    losses: int | None  # reference right, candidate wrong (None without labels)
    gains: int | None  # reference wrong, candidate right
    changed: int  # images whose top-1 class differs (without labels: what is judged)
    drop_points: float | None  # (losses - gains) / n in points; None without labels
    interval_points: tuple[float, float]  # of the drop (labels) or of the changed share (no labels)
    max_drop_points: float
    confidence: float
    min_images: int
    decision: str  # PASS | FAIL | NOT_ENOUGH_DATA
    reason: str

    @property
    def passed(self) -> bool:
        """Not failed: a gate with not enough data keeps the file (and says it did not judge it)."""
        return self.decision != FAIL

    def to_dict(self) -> dict:
        data = asdict(self)
        data["interval_points"] = [round(v, 4) for v in self.interval_points]
        return data


def _decide(lower: float, allowed: float, n: int, min_images: int) -> str:
    if lower > allowed:
        return FAIL
    return NOT_ENOUGH_DATA if n < min_images else PASS


def judge_drop(losses: int, gains: int, n: int, max_drop_points: float, *, min_images: int = MIN_IMAGES,
               confidence: float = CONFIDENCE, what: str = "top-1") -> DropJudgement:  # fmt: skip
    """Judge a paired comparison on n labelled images (see the module docstring for the rule)."""
    if n < 1 or losses < 0 or gains < 0 or losses + gains > n:
        raise ValueError(f"need 0 <= losses + gains <= n and n >= 1, got {losses}, {gains}, {n}")
    m, alpha = losses + gains, 1.0 - confidence
    drop = 100.0 * (losses - gains) / n
    if m == 0:
        lo = hi = 0.0
    else:
        lo = 100.0 * m / n * (2 * lower_bound(losses, m, alpha) - 1)
        hi = 100.0 * m / n * (2 * upper_bound(losses, m, alpha) - 1)
    decision = _decide(lo, max_drop_points, n, min_images)
    counts = f"{n} images, {losses} lost and {gains} gained"
    reason = {
        FAIL: f"{what} drop {drop:.2f} points exceeds the allowed {max_drop_points:g} with "
        f"{confidence:.0%} confidence (lower bound {lo:.2f}; {counts})",
        PASS: f"{what} drop {drop:.2f} points (interval {lo:.2f}..{hi:.2f}) is not shown to exceed the "
        f"allowed {max_drop_points:g} ({counts})",
        NOT_ENOUGH_DATA: f"not enough data to judge: {n} images < {min_images} ({what} drop {drop:.2f} points, "
        f"interval {lo:.2f}..{hi:.2f})",
    }[decision]
    return DropJudgement(n, losses, gains, m, round(drop, 6), (lo, hi), float(max_drop_points),
                         confidence, min_images, decision, reason)  # fmt: skip


def judge_changes(changed: int, n: int, max_drop_points: float, *, min_images: int = MIN_IMAGES,
                  confidence: float = CONFIDENCE) -> DropJudgement:  # fmt: skip
    """Without labels: the share of images whose top-1 class changed (an upper bound on the drop)."""
    if n < 1 or not 0 <= changed <= n:
        raise ValueError(f"need 0 <= changed <= n and n >= 1, got {changed}, {n}")
    alpha = 1.0 - confidence
    lo, hi = 100.0 * lower_bound(changed, n, alpha), 100.0 * upper_bound(changed, n, alpha)
    if max_drop_points < 0:  # asking for a gain: no share of changes can show one without labels
        lo = max(lo, max_drop_points + 1e-9)
    share = 100.0 * changed / n
    decision = _decide(lo, max_drop_points, n, min_images)
    reason = {
        FAIL: f"changes the top-1 class of {share:.2f}% of {n} unlabelled images, above the allowed "
        f"{max_drop_points:g} points with {confidence:.0%} confidence (lower bound {lo:.2f})",
        PASS: f"changes the top-1 class of {share:.2f}% of {n} unlabelled images (interval {lo:.2f}..{hi:.2f})",
        NOT_ENOUGH_DATA: f"not enough data to judge: {n} images < {min_images} ({share:.2f}% changed)",
    }[decision]
    return DropJudgement(n, None, None, changed, None, (lo, hi), float(max_drop_points), confidence,
                         min_images, decision, reason)  # fmt: skip


def paired_counts(reference_pred: Sequence[int], candidate_pred: Sequence[int],
                  labels: Sequence[int]) -> tuple[int, int]:  # fmt: skip
    """(losses, gains) of a candidate against a reference: images only the reference / only it gets right."""
    if not len(reference_pred) == len(candidate_pred) == len(labels):
        raise ValueError("predictions and labels differ in length")
    losses = gains = 0
    for r, c, y in zip(reference_pred, candidate_pred, labels):
        r_ok, c_ok = int(r) == int(y), int(c) == int(y)
        losses += r_ok and not c_ok
        gains += c_ok and not r_ok
    return losses, gains


# --- the bundle's labelled subset --------------------------------------------------------------------------


def stratified_indices(labels: Sequence[int], n: int) -> list[int]:
    """Up to n indices, round-robin over the classes (ascending class index, each class's images in their
    order): every class is represented before any class gets a second image. Sorted; deterministic."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < n:
                picked.append(q[depth])
        depth += 1
    return sorted(picked)


def normalize_uint8(images, mean: Sequence[float], std: Sequence[float]):
    """uint8 (N, C, H, W) pixels -> float32 model inputs: (x / 255 - mean) / std per channel, as wave-deploy's
    data pipeline normalises (mean and std on the 0..1 scale, recorded in plan.json)."""
    import numpy as np

    x = np.asarray(images)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((x.astype(np.float32) / np.float32(255.0) - m) / s).astype(np.float32)
