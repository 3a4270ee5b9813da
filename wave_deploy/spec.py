"""ViTSpec: one Vision Transformer size in timm's vocabulary, plus analytic costs.

The spec is the currency between stages: selection picks one, WAVE builds one, folding produces a timm
``VisionTransformer(**spec.timm_kwargs())`` for it, exporters and reports describe it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wave_deploy.errors import InvalidInputError


@dataclass(frozen=True)
class ViTSpec:
    depth: int
    embed_dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    patch_size: int = 4
    img_size: int = 28
    in_chans: int = 1
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("depth", "embed_dim", "num_heads", "patch_size", "img_size", "in_chans", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"ViTSpec.{name} must be a positive integer, got {value!r}")
        if self.mlp_ratio <= 0:
            raise InvalidInputError(f"ViTSpec.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if self.embed_dim % self.num_heads:
            raise InvalidInputError(
                f"ViTSpec.embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )
        if self.img_size % self.patch_size:
            raise InvalidInputError(
                f"ViTSpec.img_size={self.img_size} is not divisible by patch_size={self.patch_size}"
            )
        hidden = self.embed_dim * self.mlp_ratio
        if hidden != int(hidden):
            raise InvalidInputError(f"embed_dim * mlp_ratio must be an integer, got {hidden}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def seq_len(self) -> int:
        """Tokens per image: patches plus the class token."""
        return self.num_patches + 1

    @property
    def name(self) -> str:
        return f"vit_d{self.embed_dim}_l{self.depth}_h{self.num_heads}_p{self.patch_size}_{self.img_size}"

    def timm_kwargs(self) -> dict:
        """Keyword arguments for ``timm.models.vision_transformer.VisionTransformer``."""
        return {
            "img_size": self.img_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": True,
            "class_token": True,
            "global_pool": "token",
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ViTSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown ViTSpec field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "ViTSpec":
        return dataclasses.replace(self, **changes)
