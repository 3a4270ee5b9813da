"""Small template banks for tests (imported by test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.model import WaveViT

# 8 px grey images, patch 4 (5 tokens), template size 8: fast to expand, fold and run.
TINY = {
    "img_size": 8,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "w": 8,
    "head_dim": 8,
    "mlp_ratio": 4.0,
    "max_depth": 12,
    "max_embed_dim": 48,
    "n_matrix": 3,
    "n_vector": 2,
}
# The built-in MNIST-5k geometry (28 px, patch 7), template size 16.
MNIST = {
    "img_size": 28,
    "patch_size": 7,
    "in_chans": 1,
    "num_classes": 10,
    "w": 16,
    "head_dim": 16,
    "mlp_ratio": 4.0,
    "max_depth": 2,
    "max_embed_dim": 32,
    "n_matrix": 2,
    "n_vector": 2,
}
MNIST_CLASSES = [str(i) for i in range(10)]


def geometry(base: dict = TINY, **overrides) -> BankGeometry:
    return BankGeometry.create(**{**base, **overrides})


def random_bank(base: dict = TINY, seed: int = 0, **overrides) -> TemplateBank:
    """Random templates, no auxiliary scalers."""
    return TemplateBank.init_random(geometry(base, **overrides), seed=seed)


def mnist_bank_file(directory: Path, **overrides) -> Path:
    """A bank for the built-in data: random templates plus random auxiliary scalers of its largest size."""
    geom = geometry(MNIST, **overrides)
    aux = WaveViT(
        TemplateBank.init_random(geom, seed=0), geom.make_spec(geom.max_depth, geom.max_embed_dim), seed=1
    )
    bank = aux.export_bank({"data": {"class_names": MNIST_CLASSES}})
    return bank.save(Path(directory) / "bank.safetensors")
