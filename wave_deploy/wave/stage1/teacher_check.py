"""A teacher worth learning from: its head fitted to the data's classes, its accuracy measured and judged.

- ``fit_head``: a teacher with trained weights whose classifier does not predict the data's classes (an
  ImageNet model's 1000-class head, or no head: a self-supervised backbone) gets a linear probe: multinomial logistic regression on its frozen
  pooled features of the training split (features standardised, L2 penalty ``PROBE_L2``, zero start,
  full-batch L-BFGS for at most ``PROBE_ITERS`` iterations: no sampling, so it is deterministic and the seed
  is not needed), folded back into a plain ``nn.Linear`` head.
- ``judge``: the teacher's top-1 on the validation split against chance. **Near chance** (a weak teacher)
  unless BOTH: the accuracy is significantly above chance by a one-sided exact binomial test (p < ``ALPHA``)
  AND it is at least ``min(1.5 x chance, chance + (1 - chance) / 2)``. Chance is the largest class share of
  the validation split (what always answering that class scores; 1/K when balanced). The test guards small
  validation splits against luck; the ratio guards large ones against an accuracy that is significant but
  useless (0.15% on 1000 classes); 1.5 x chance is the project's accuracy floor for built models too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from wave_deploy._kit.kit_accuracy import binom_tail  # the one exact binomial tail
from wave_deploy.errors import InvalidInputError

log = logging.getLogger(__name__)

ALPHA = 0.01  # one-sided significance level of "better than chance"
RATIO = 1.5  # ... and at least this multiple of chance (capped half-way between chance and 1)
PROBE_L2 = 1e-3  # L2 penalty of the linear probe on standardised features (mean cross-entropy + L2 * |W|^2)
PROBE_ITERS = 200
BATCH = 64  # images per teacher forward (features, accuracy)


@dataclass(frozen=True)
class TeacherVerdict:
    correct: int
    total: int
    accuracy: float
    chance: float
    threshold: float  # the accuracy a teacher must reach (with p < ALPHA)
    p_value: float  # P(X >= correct) for X ~ Binomial(total, chance)
    weak: bool
    seconds: float = 0.0  # time to measure it

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            rule=f"weak unless p < {ALPHA} (one-sided exact binomial vs chance) and accuracy >= threshold"
        )
        return out

    def describe(self) -> str:
        return (
            f"{self.accuracy:.1%} ({self.correct}/{self.total}) on the validation split; chance "
            f"{self.chance:.1%}, one-sided binomial p = {self.p_value:.2g}"
        )


def chance_level(labels: Tensor, num_classes: int) -> float:
    """The accuracy of always answering the most frequent class of ``labels`` (1/K when balanced)."""
    counts = torch.bincount(labels, minlength=num_classes)
    return float(counts.max()) / max(1, len(labels))


def judge(correct: int, total: int, chance: float, seconds: float = 0.0) -> TeacherVerdict:
    """The verdict on ``correct`` of ``total`` validation images right against ``chance`` (module doc)."""
    if total < 1:
        raise InvalidInputError("the teacher cannot be judged on an empty validation split")
    threshold = min(RATIO * chance, chance + (1.0 - chance) / 2)
    p_value = binom_tail(correct, total, chance)
    accuracy = correct / total
    weak = not (p_value < ALPHA and accuracy >= threshold)
    return TeacherVerdict(correct, total, round(accuracy, 4), chance, threshold, p_value, weak, seconds)


@torch.no_grad()
def predict_correct(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> int:
    """How many of ``x`` the model classifies as ``y`` (fp32, batches of ``BATCH``)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), BATCH):
        logits = model(x[i : i + BATCH].to(device))
        correct += int((logits.argmax(-1).cpu() == y[i : i + BATCH]).sum())
    model.train(was)
    return correct


def measure(model: nn.Module, data, device: torch.device) -> TeacherVerdict:
    """Top-1 of ``model`` (fed through its input adapter) on ``data``'s validation split, judged."""
    start = time.perf_counter()
    correct = predict_correct(model, data.val_x, data.val_labels, device)
    chance = chance_level(data.val_labels, data.info.num_classes)
    return judge(correct, len(data.val_labels), chance, round(time.perf_counter() - start, 2))


def _replaceable(teacher: Any) -> bool:
    """A timm-style classifier ``fit_head`` can replace: a linear head, or none (``nn.Identity``,
    ``num_classes == 0``: a self-supervised backbone such as vit_small_patch16_224.dino, DINOv2 or MAE)."""
    if not hasattr(teacher, "reset_classifier") or not hasattr(teacher, "get_classifier"):
        return False
    head = teacher.get_classifier()
    return isinstance(head, (nn.Linear, nn.Identity)) or getattr(teacher, "num_classes", None) == 0


@torch.no_grad()
def _features(backbone: nn.Module, x: Tensor, device: torch.device) -> Tensor:
    out = [backbone(x[i : i + BATCH].to(device)).float().cpu() for i in range(0, len(x), BATCH)]
    return torch.cat(out)


def fit_head(teacher: Any, fed: nn.Module, data, device: torch.device) -> dict[str, Any]:
    """Replace ``teacher``'s classifier by a linear probe for ``data``'s classes (module doc).

    ``fed`` is the module that feeds ``teacher`` its input (``teacher_input``'s result: the teacher itself or a
    TeacherInput around it); with the classifier removed, it returns the pooled features. Returns what the
    provenance records about the probe.
    """
    if not _replaceable(teacher):
        raise InvalidInputError(
            f"the teacher's classifier does not predict the data's {data.info.num_classes} classes and cannot "
            "be replaced by a fitted head",
            hint="give a --teacher-checkpoint fine-tuned on these classes",
        )
    start = time.perf_counter()
    k = data.info.num_classes
    old_head = teacher.get_classifier()
    before = (
        old_head.out_features if isinstance(old_head, nn.Linear) else 0
    )  # 0: headless (a DINO/MAE backbone)
    teacher.reset_classifier(0)  # timm: the head becomes the identity, forward returns pooled features
    teacher.to(device)
    feats = _features(fed, data.train_x, device).double()  # (N, F)
    mean, std = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-6)
    z = (feats - mean) / std
    weight = torch.zeros(k, z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    labels = data.train_labels
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=PROBE_ITERS, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, labels) + PROBE_L2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        w_raw = (
            weight / std
        )  # the head on raw features: z @ W.T + b == feats @ (W / std).T + (b - W @ (mean / std))
        b_raw = bias - (weight * (mean / std)).sum(1)
        train_acc = float(((z @ weight.T + bias).argmax(-1) == labels).double().mean())
    teacher.reset_classifier(k)
    head = teacher.get_classifier()
    with torch.no_grad():
        head.weight.copy_(w_raw.to(head.weight.dtype))
        head.bias.copy_(b_raw.to(head.bias.dtype))
    teacher.to(device).eval()
    seconds = time.perf_counter() - start
    log.info("linear probe: %d -> %d classes, train accuracy %.3f, %.1f s", before, k, train_acc, seconds)
    return {
        "probed": True,
        "replaced_classes": before,
        "classes": k,
        "features": int(z.shape[1]),
        "train_images": len(labels),
        "train_accuracy": round(train_acc, 4),
        "method": f"multinomial logistic regression on standardised frozen features, L2 {PROBE_L2}, "
        f"zero start, full-batch L-BFGS <= {PROBE_ITERS} iterations (deterministic)",
        "seconds": round(seconds, 2),
    }
