"""A tiny timm ViT trained briefly on the built-in MNIST-5k, shared by the export and kit tests.

Quantization is judged by accuracy, which needs a model with real accuracy: an untrained ViT's logits are
nearly tied, so any rounding flips its top-1 class. Trained once per test process (a few seconds on a CPU).
"""

from __future__ import annotations

import functools

import torch
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.spec import ViTSpec

SPEC = ViTSpec(depth=2, embed_dim=32, num_heads=2, patch_size=7, img_size=28, in_chans=1)


@functools.lru_cache(maxsize=1)
def builtin_data():
    from wave_deploy import data as datasets

    return datasets.load(None, seed=0)


def digit_folder(root, classes: int = 4, per_class: int = 10):
    """``root`` as an ImageFolder of built-in MNIST validation digits ``0..classes-1`` at 28 px (``per_class``
    each, PNG): another task than the bank's, of classes a model trained on MNIST knows."""
    import numpy as np
    from PIL import Image

    data = builtin_data()
    for label in range(classes):
        (root / str(label)).mkdir()
        for i in np.flatnonzero(data.val_labels.numpy() == label)[:per_class]:
            Image.fromarray(data.val_images[i, 0].numpy()).save(root / str(label) / f"{i}.png")
    return root


@functools.lru_cache(maxsize=1)
def trained_state(steps: int = 150, batch: int = 64) -> dict:
    """State dict of SPEC's ViT after ``steps`` AdamW steps on MNIST-5k's training split (seeded)."""
    data = builtin_data()
    torch.manual_seed(0)
    model = VisionTransformer(**SPEC.timm_kwargs())
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data.train_x), (batch,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(data.train_x[idx]), data.train_labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}


def trained_model() -> VisionTransformer:
    model = VisionTransformer(**SPEC.timm_kwargs())
    model.load_state_dict(trained_state())
    return model.eval()
