"""The weak-teacher rule (exact one-sided binomial test AND 1.5 x chance, both sides of each) and the linear
probe that gives a pretrained teacher a head for the data's classes."""

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from wave_deploy._kit.kit_accuracy import binom_tail as binomial_sf

from wave_deploy.wave.stage1.teacher_check import ALPHA, chance_level, fit_head, judge


def _exact_sf(k: int, n: int, p: Fraction) -> float:
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


@pytest.mark.parametrize(
    "n, p", [(1, Fraction(1, 2)), (16, Fraction(1, 4)), (88, Fraction(1, 8)), (40, Fraction(1, 10))]
)
def test_binomial_tail_equals_the_exact_sum(n, p):
    for k in range(n + 2):
        assert binomial_sf(k, n, float(p)) == pytest.approx(_exact_sf(k, n, p), rel=1e-9, abs=1e-300)


def test_binomial_tail_handles_large_splits():
    # 50,000 ImageNet validation images, chance 0.1%: 60 right is not significant, 80 is (mean 50, sd ~7.1)
    assert binomial_sf(60, 50_000, 0.001) > ALPHA
    assert binomial_sf(80, 50_000, 0.001) < ALPHA
    assert 0 < binomial_sf(200, 50_000, 0.001) < 1e-40


def test_the_issues_untrained_teacher_is_weak():
    # 8 classes, 88 validation images: 18% (16 right) was the best an untrained teacher reached
    verdict = judge(16, 88, 1 / 8)
    assert verdict.weak and verdict.p_value > ALPHA and verdict.accuracy < verdict.threshold


def test_significant_but_below_one_and_a_half_chance_is_weak():
    # 1000 classes, 200,000 images: 0.14% is far beyond luck (p ~ 1e-7) and still useless
    verdict = judge(280, 200_000, 0.001)
    assert verdict.p_value < 1e-6 and verdict.weak
    assert not judge(300, 200_000, 0.001).weak  # exactly 1.5 x chance, significant: strong enough


def test_above_one_and_a_half_chance_but_not_significant_is_weak():
    # 4 validation images of 4 classes: 2 right is 50% (2 x chance) but p = 0.26
    verdict = judge(2, 4, 0.25)
    assert verdict.accuracy >= verdict.threshold and verdict.p_value > ALPHA and verdict.weak
    assert not judge(4, 4, 0.25).weak  # p = 1/256 < 0.01


@pytest.mark.parametrize("correct, weak", [(8, True), (9, False)])
def test_the_significance_boundary_on_16_images(correct, weak):
    # 4 classes: P(X >= 8) = 0.027, P(X >= 9) = 0.0075
    assert judge(correct, 16, 0.25).weak is weak


def test_chance_is_the_largest_class_share_and_the_threshold_stays_below_one():
    labels = torch.tensor([0] * 7 + [1] * 3)
    assert chance_level(labels, 2) == pytest.approx(0.7)
    verdict = judge(10, 10, 0.7)
    assert verdict.threshold == pytest.approx(0.85)  # 1.5 x 0.7 would be 105%: capped half-way to 100%
    assert judge(5, 10, 0.5).threshold == pytest.approx(0.75)  # balanced 2 classes: 1.5 x chance


class _Tiny(nn.Module):
    """A timm-like model: reset_classifier / get_classifier around frozen random features."""

    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(6, 16)
        self.head: nn.Module = nn.Linear(16, classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(16, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x):
        return self.head(torch.tanh(self.body(x.flatten(1))))


def _separable(n_per_class: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, 6) * 4
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), 6, generator=g)
    info = SimpleNamespace(num_classes=3)
    return SimpleNamespace(train_x=x.view(-1, 1, 2, 3), train_labels=y, info=info)


def test_the_probe_fits_the_data_classes_deterministically():
    data = _separable()
    heads = []
    for _ in range(2):
        model = _Tiny(classes=1000)
        info = fit_head(model, model, data, torch.device("cpu"))
        assert info["probed"] and info["replaced_classes"] == 1000 and info["classes"] == 3
        assert info["train_accuracy"] >= 0.95
        with torch.no_grad():
            acc = float((model(data.train_x).argmax(-1) == data.train_labels).float().mean())
        assert acc == pytest.approx(info["train_accuracy"], abs=1e-6)  # the folded head is the fitted one
        heads.append(model.get_classifier().weight.detach().clone())
    assert torch.equal(heads[0], heads[1])


def test_the_probe_gives_a_headless_timm_backbone_a_head():
    """A self-supervised backbone (timm, num_classes=0: an nn.Identity classifier, as DINO/DINOv2/MAE ship)
    gets the fitted head like a 1000-class model does."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=0).eval()
    assert isinstance(model.get_classifier(), nn.Identity)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(4)
    x = torch.randn(len(y), 3, 160, 160, generator=g) + y.view(-1, 1, 1, 1).float()
    data = SimpleNamespace(train_x=x, train_labels=y, info=SimpleNamespace(num_classes=3))
    info = fit_head(model, model, data, torch.device("cpu"))
    assert info["probed"] and info["replaced_classes"] == 0 and info["classes"] == 3
    assert isinstance(model.get_classifier(), nn.Linear) and model(x[:2]).shape == (2, 3)
