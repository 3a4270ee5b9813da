"""The 224 px RGB path's test inputs: an ImageFolder, a bank and a teacher, tiny (imported by test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wave_deploy.spec import ViTSpec
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.model import WaveViT

COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))  # one per class: separable


def rgb_folder(root: Path, classes: int = 4, per_class: int = 6, size: int = 224) -> Path:
    """``classes`` class folders of ``per_class`` noisy ``size`` px RGB PNGs, each class its own colour."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 50, (size, size, 3), dtype=np.uint8) + np.array(COLOURS[c], np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    return root


def bank_224(path: Path, num_classes: int = 4) -> Path:
    """A 224 px RGB bank (patch 16, template size 32) whose auxiliary model is depth 2 x width 64."""
    geom = BankGeometry.create(img_size=224, patch_size=16, in_chans=3, num_classes=num_classes, w=32,
                               head_dim=32, mlp_ratio=2.0, max_depth=2, max_embed_dim=64)  # fmt: skip
    aux = WaveViT(TemplateBank.init_random(geom), geom.make_spec(2, 64), seed=1)
    return aux.export_bank({"test": "224 px"}).save(path)


TEACHER_SPEC = ViTSpec(depth=2, embed_dim=64, num_heads=2, mlp_ratio=2.0, patch_size=16, img_size=224,
                       in_chans=3, num_classes=4)  # fmt: skip


def teacher_224(path: Path, spec: ViTSpec = TEACHER_SPEC, seed: int = 5) -> Path:
    """A folded wave-deploy checkpoint of a timm ViT (random weights): a teacher for weight selection."""
    from wave_deploy.training.baselines import random_init
    from wave_deploy.training.folding import save_folded

    return save_folded(path, random_init(spec, seed).state_dict(), spec, {"test": "teacher"})
