"""Accuracy gates with a stated confidence (export/kit_accuracy.py, the one rule of the fp16/int8 gate and the
kit's device gate), checked against naive exact references; the bundle's stratified uint8 subset."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from _tiny_mnist import builtin_data
from wave_deploy._kit import kit_accuracy as ka

from wave_deploy.exporters import quantize as qz


def naive_tail(k: int, n: int, p: Fraction) -> Fraction:
    """P(X >= k), X ~ Binomial(n, p), in exact rational arithmetic."""
    return sum((comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)), Fraction(0))


@pytest.mark.parametrize(("k", "n", "p"), [(0, 5, "1/3"), (3, 5, "1/3"), (5, 5, "1/2"), (7, 40, "1/10"),
                                           (30, 60, "3/5"), (1, 1, "1/20"), (120, 300, "2/5")])  # fmt: skip
def test_binomial_tail_equals_the_exact_sum(k, n, p):
    assert ka.binom_tail(k, n, float(Fraction(p))) == pytest.approx(
        float(naive_tail(k, n, Fraction(p))), rel=1e-9
    )


@pytest.mark.parametrize(("k", "n"), [(1, 1), (0, 7), (3, 10), (10, 10), (17, 250), (60, 80)])
def test_clopper_pearson_bounds_solve_their_defining_equations(k, n):
    alpha = 0.05
    lo, hi = ka.lower_bound(k, n, alpha), ka.upper_bound(k, n, alpha)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    if k > 0:
        assert float(naive_tail(k, n, Fraction(lo))) == pytest.approx(alpha, abs=1e-9)
    if k < n:
        assert 1 - float(naive_tail(k + 1, n, Fraction(hi))) == pytest.approx(alpha, abs=1e-9)


def _naive_decision(losses: int, gains: int, n: int, allowed: float) -> bool:
    """FAIL by the exact conditional test of "drop <= allowed" on the discordant pairs, from first principles:
    given m = losses + gains, the drop is (m/n)(2p - 1) > allowed iff p > p0; reject p <= p0 at 5%."""
    m = losses + gains
    if m == 0:
        return allowed < 0
    p0 = Fraction(1, 2) * (1 + Fraction(allowed).limit_denominator(10**6) / 100 * n / m)
    if p0 >= 1:
        return False
    if p0 <= 0:
        return True
    return naive_tail(losses, m, p0) < Fraction(5, 100)


def test_the_gate_fails_exactly_when_the_exact_conditional_test_rejects():
    for losses, gains, n, allowed in itertools.product(
        range(0, 13, 2), (0, 1, 4), (50, 120, 500), (0.0, 1.0, 2.5)
    ):
        gate = ka.judge_drop(losses, gains, n, allowed)
        assert (gate.decision == ka.FAIL) == _naive_decision(losses, gains, n, allowed), (
            losses,
            gains,
            n,
            allowed,
        )
        lo, hi = gate.interval_points
        assert lo - 1e-6 <= gate.drop_points <= hi + 1e-6  # the interval holds the observed drop (rounded)


@pytest.mark.parametrize("n", [1, 10, 89, 100, 500, 10_000])
def test_one_changed_prediction_never_fails_a_gate(n):
    assert ka.judge_drop(1, 0, n, 0.0).decision != ka.FAIL
    if n >= ka.MIN_IMAGES:  # without labels every change counts as a loss (conservative): still not one image
        assert ka.judge_changes(1, n, 1.0).decision != ka.FAIL


def test_below_the_minimum_a_gate_reports_not_enough_data_instead_of_passing():
    few = ka.judge_drop(2, 0, 89, 1.0)  # issue 21: one image was 1.12 points of an 89-image split
    assert few.decision == ka.NOT_ENOUGH_DATA and few.passed and "not enough data to judge" in few.reason
    assert ka.judge_drop(2, 0, ka.MIN_IMAGES, 1.0).decision == ka.PASS
    # an overwhelming drop fails even on few images: the minimum stops passing, not failing
    assert ka.judge_drop(30, 0, 60, 1.0).decision == ka.FAIL


def test_a_real_drop_fails_and_a_drop_within_noise_passes_on_500_images():
    assert ka.judge_drop(20, 5, 500, 1.0).decision == ka.FAIL  # 3 points, 95% sure it is above 1
    within = ka.judge_drop(7, 1, 500, 1.0)  # 1.2 points: one image over the allowance, not shown above it
    assert within.decision == ka.PASS and within.drop_points == pytest.approx(1.2)


def _logits(pred: list[int], classes: int = 10) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[np.asarray(pred)]


def test_judge_variant_records_n_the_drop_its_interval_and_the_decision():
    labels = np.arange(500) % 10
    variant = labels.copy()
    variant[:15] = (labels[:15] + 1) % 10  # 15 images lost: a 3-point drop
    record = qz.judge_variant("x", _logits(variant.tolist()), _logits(labels.tolist()), labels,
                              precision="int8", method="static-qdq", max_drop_points=1.0)  # fmt: skip
    gate = record["gate"]
    assert not record["passed"] and gate["decision"] == "fail" and (gate["losses"], gate["gains"]) == (15, 0)
    assert record["top1_drop_points"] == pytest.approx(3.0) and gate["n_images"] == 500
    assert gate["interval_points"][0] > 1.0 and "95% confidence" in record["failure"]
    small = labels[:89]
    one_off = small.copy()
    one_off[0] = (small[0] + 1) % 10  # one changed prediction of 89: 1.12 points
    kept = qz.judge_variant("x", _logits(one_off.tolist()), _logits(small.tolist()), small,
                            precision="int8", method="static-qdq", max_drop_points=1.0)  # fmt: skip
    assert kept["passed"] and kept["failure"] is None and kept["gate"]["decision"] == "not enough data"


def test_stratified_subset_takes_every_class_before_any_class_twice():
    labels = [2, 2, 2, 0, 0, 1, 2, 0, 1, 1, 2]
    assert ka.stratified_indices(labels, 3) == [0, 3, 5]  # the first image of each class
    assert ka.stratified_indices(labels, 5) == [0, 3, 4, 5, 8]  # then the second of classes 0 and 1
    assert ka.stratified_indices(labels, 100) == list(range(len(labels)))
    # the built-in split: 500 images, the first 40 of a stratified draw hold 4 of each of the 10 classes
    data = builtin_data()
    picked = ka.stratified_indices(data.val_labels.tolist(), 40)
    assert sorted(np.bincount(data.val_labels[picked].numpy(), minlength=10).tolist()) == [4] * 10


def test_uint8_pixels_normalise_to_exactly_the_builds_inputs():
    data = builtin_data()
    got = ka.normalize_uint8(data.val_images[:64].numpy(), data.info.mean, data.info.std)
    assert got.dtype == np.float32 and np.array_equal(got, data.val_x[:64].numpy())
