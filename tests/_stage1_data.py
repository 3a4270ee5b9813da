"""Data and teachers for the stage-1 tests: a 224 px RGB ImageFolder of 4 colour classes, a timm ViT fine-tuned on
it (test_vit: 160 px, 0.4M parameters), and a Hugging Face hub cache holding "pretrained" weights for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
TRAIN_PER_CLASS, VAL_PER_CLASS = 8, 4


def stripe_folder(root: Path) -> Path:
    """``root/class<c>/<i>.png``: 8x8 grey images of 3 classes told apart by which third of the image is bright,
    12 each (the stage-1 tests' smallest learnable task)."""
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir()
        for i in range(12):
            img = rng.integers(0, 60, (8, 8)).astype(np.uint8)
            img[:, c * 3 : c * 3 + 2] = 220
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


def rgb_folder(root: Path, size: int = 224) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: 4 classes of noisy solid colours, 8 train and 4 val images each."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c, colour in enumerate(COLOURS):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.array(colour)[None, None] + rng.normal(0, 40, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def fine_tuned_test_vit(data_root: Path, steps: int = 30) -> dict[str, torch.Tensor]:
    """timm's test_vit (4-class head) trained on ``data_root``'s train split at its 160 px with timm's own
    input normalisation (pretrained_cfg mean/std), as a timm training script would: a fine-tuned state dict."""
    import timm

    from wave_deploy import data as datasets

    data = datasets.load(data_root, img_size=160)
    model = timm.create_model("test_vit", num_classes=len(COLOURS))
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x, y = (data.train_images.float() / 255 - mean) / std, data.train_labels
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(steps):
            idx = torch.randperm(len(x), generator=gen)[:16]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def imagenet_headed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a 1000-class head (its own 4 rows first, the rest zero): what a model pretrained on
    another task looks like to a user whose data has 4 classes."""
    out = dict(state)
    w, b = state["head.weight"], state["head.bias"]
    out["head.weight"] = torch.cat([w, torch.zeros(1000 - len(w), w.shape[1])])
    out["head.bias"] = torch.cat([b, torch.zeros(1000 - len(b))])
    return out


def hub_cache(hf_home: Path, model_name: str, state: dict[str, torch.Tensor]) -> Path:
    """Populate ``hf_home/hub`` as huggingface_hub lays it out, so ``timm.create_model(model_name,
    pretrained=True)`` finds ``state`` with HF_HOME=hf_home HF_HUB_OFFLINE=1 and no network: timm asks the
    hub for ``model.safetensors`` of its default tag's repo (pretrained_cfg["hf_hub_id"], e.g.
    timm/test_vit.r160_in1k) at revision main; the cache resolves main through refs/main to a snapshot."""
    import timm
    from safetensors.torch import save_file

    repo = timm.create_model(model_name).pretrained_cfg["hf_hub_id"]
    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    save_file(state, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"
