"""ViTSpec: one Vision Transformer size in timm's vocabulary, plus analytic costs.

The spec is the currency between stages: selection picks one, WAVE builds one, folding produces a timm
``VisionTransformer(**spec.timm_kwargs())`` for it, exporters and reports describe it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.target import DTYPE_BYTES

# The one image-size rule of every command (--img-size of plan, build, init and calibrate, --spec img_size=):
# 1..IMG_SIZE_MAX pixels and a multiple of the patch size; anything else is a usage error (exit 2).
IMG_SIZE_MAX = 4096


def check_img_size(img_size: int, patch_size: int, what: str = "--img-size") -> int:
    """``img_size`` if it is a positive multiple of ``patch_size`` up to IMG_SIZE_MAX; else UsageError."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or not 1 <= img_size <= IMG_SIZE_MAX:
        raise UsageError(f"{what}: image size {img_size!r} is not in 1..{IMG_SIZE_MAX}")
    if isinstance(patch_size, int) and patch_size >= 1 and img_size % patch_size:  # else: the spec says
        raise UsageError(f"{what}: image size {img_size} is not a multiple of the patch size {patch_size}")
    return img_size


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
    def from_dict(cls, data: dict) -> ViTSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown ViTSpec field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> ViTSpec:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------------------
# Analytic costs of a ViTSpec (timm VisionTransformer with class token, qkv bias, token pooling, no dropout).
#
# Conventions, stated once:
# - "MACs" are multiply-accumulates of the matrix products: every nn.Linear, the patch-embedding conv and,
#   with attention=True, the two attention products Q K^T and A V. ``macs(..., layernorm=True)`` adds
#   5 operations per LayerNorm element, the fvcore convention behind timm's published GMACs
#   (deit_tiny/small/base at 224 px: 1.26 / 4.61 / 17.58 GMACs).
# - "FLOPs" are 2 x matmul MACs (attention products included unless attention=False); elementwise work
#   (softmax, GELU, LayerNorm, residual adds) is not in FLOPs. Costs scale linearly with batch.
# ---------------------------------------------------------------------------------------------------------

LAYERNORM_OPS_PER_ELEMENT = 5  # fvcore: mean, variance, normalize, scale, shift


def _bytes_per_element(precision: str) -> int:
    if precision not in DTYPE_BYTES:
        raise InvalidInputError(f"unknown precision {precision!r}; expected one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[precision]


def _check_batch(batch: int) -> None:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidInputError(f"batch must be a positive integer, got {batch!r}")


def param_count(spec: ViTSpec) -> int:
    """Exactly the number of parameters of ``VisionTransformer(**spec.timm_kwargs())``."""
    d, h = spec.embed_dim, spec.mlp_hidden
    patch_embed = d * spec.in_chans * spec.patch_size**2 + d  # conv weight (D, C, p, p) + bias
    tokens = d + spec.seq_len * d  # cls_token (1, 1, D) + pos_embed (1, N + 1, D)
    block = (
        2 * d  # norm1
        + 3 * d * d
        + 3 * d  # attn.qkv
        + d * d
        + d  # attn.proj
        + 2 * d  # norm2
        + d * h
        + h  # mlp.fc1
        + h * d
        + d  # mlp.fc2
    )
    head = 2 * d + d * spec.num_classes + spec.num_classes  # final norm + classifier
    return patch_embed + tokens + spec.depth * block + head


def matmul_macs(spec: ViTSpec, batch: int = 1, *, attention: bool = True) -> int:
    """Multiply-accumulates of every matrix product of one forward pass at ``batch``."""
    _check_batch(batch)
    d, h, n = spec.embed_dim, spec.mlp_hidden, spec.seq_len
    patch = spec.num_patches * d * spec.in_chans * spec.patch_size**2
    linear = n * (3 * d * d + d * d + d * h + h * d)  # qkv, proj, fc1, fc2 per block
    attn = 2 * n * n * d if attention else 0  # Q K^T and A V, summed over heads
    head = d * spec.num_classes  # on the class token only
    return batch * (patch + spec.depth * (linear + attn) + head)


def macs(spec: ViTSpec, batch: int = 1, *, attention: bool = True, layernorm: bool = True) -> int:
    """MACs in timm's published convention (matmul MACs + 5 ops per LayerNorm element when layernorm=True)."""
    total = matmul_macs(spec, batch, attention=attention)
    if layernorm:
        norms = 2 * spec.depth + 1
        total += batch * norms * spec.seq_len * spec.embed_dim * LAYERNORM_OPS_PER_ELEMENT
    return total


def flops(spec: ViTSpec, batch: int = 1, *, attention: bool = True) -> int:
    """2 x matmul MACs: the FLOPs of the matrix products (elementwise work excluded, see the module note)."""
    return 2 * matmul_macs(spec, batch, attention=attention)


def weight_bytes(spec: ViTSpec, precision: str = "fp32") -> int:
    """Bytes of all parameters stored at ``precision`` (int8 counts every parameter at one byte; real
    quantizers keep biases and norms wider, which adds well under 1% for these shapes)."""
    return param_count(spec) * _bytes_per_element(precision)


def activation_bytes(spec: ViTSpec, batch: int = 1, precision: str = "fp32") -> int:
    """Estimated peak of live activations during one inference at ``batch`` (an estimate, not a measurement).

    A runtime that frees each tensor after its last use holds at most, inside one block: the residual stream
    x (B, N, D) plus either the attention stage (qkv (B, N, 3D) + scores and probabilities (B, heads, N, N)
    + the attention output (B, N, D)) or the MLP stage (fc1 output and GELU output, 2 x (B, N, H)).
    Before the blocks, the input image and the patch tokens are live. ``precision`` is the activation type.
    """
    _check_batch(batch)
    n, d, h = spec.seq_len, spec.embed_dim, spec.mlp_hidden
    attention_stage = 3 * n * d + 2 * spec.num_heads * n * n + n * d
    mlp_stage = 2 * n * h
    block_peak = n * d + max(attention_stage, mlp_stage)
    embed_peak = spec.in_chans * spec.img_size**2 + 2 * n * d
    return batch * max(block_peak, embed_peak) * _bytes_per_element(precision)


@dataclass(frozen=True)
class SpecCosts:
    """All analytic costs of one spec at one batch and precision (a report-friendly record)."""

    params: int
    macs: int  # timm convention (attention + LayerNorm included), at ``batch``
    flops: int  # 2 x matmul MACs incl. attention, at ``batch``
    flops_no_attention: int
    weight_bytes: int
    activation_bytes: int  # estimated peak, at ``batch``
    batch: int
    precision: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def costs(spec: ViTSpec, batch: int = 1, precision: str = "fp32") -> SpecCosts:
    return SpecCosts(
        params=param_count(spec),
        macs=macs(spec, batch),
        flops=flops(spec, batch),
        flops_no_attention=flops(spec, batch, attention=False),
        weight_bytes=weight_bytes(spec, precision),
        activation_bytes=activation_bytes(spec, batch, precision),
        batch=batch,
        precision=precision,
    )


# --- kernel-level ops: what the latency models sum over ----------------------------------------------------

SOFTMAX_OPS_PER_ELEMENT = 5  # max, subtract, exp, sum, divide
GELU_OPS_PER_ELEMENT = 8  # erf polynomial + scale


@dataclass(frozen=True)
class OpCost:
    """One kernel-level op of an inference, ``count`` times (depth for block ops)."""

    name: str
    kind: str  # "gemm" | "attention" | "softmax" | "elementwise"
    flops: float  # per occurrence
    bytes: float  # activations read + written and weights read, per occurrence
    count: int = 1


def model_ops(spec: ViTSpec, batch: int, weight_prec: str = "fp32", act_prec: str = "fp32") -> list[OpCost]:
    """The kernel-level ops of one forward pass of ``spec`` at ``batch``, with their FLOPs and bytes."""
    _check_batch(batch)
    a, w = _bytes_per_element(act_prec), _bytes_per_element(weight_prec)
    b, n, d, h = batch, spec.seq_len, spec.embed_dim, spec.mlp_hidden
    heads, L = spec.num_heads, spec.depth
    tok, hid, scores = (
        b * n * d,
        b * n * h,
        b * heads * n * n,
    )  # element counts of (B,N,D), (B,N,H), (B,h,N,N)
    cpp = spec.in_chans * spec.patch_size**2

    def norm(name: str, count: int) -> OpCost:
        return OpCost(name, "elementwise", LAYERNORM_OPS_PER_ELEMENT * tok, 2 * tok * a + 2 * d * w, count)

    def linear(name: str, rows: int, d_in: int, d_out: int, count: int) -> OpCost:
        return OpCost(
            name, "gemm", 2 * rows * d_in * d_out, rows * (d_in + d_out) * a + (d_in + 1) * d_out * w, count
        )

    def add(name: str) -> OpCost:
        return OpCost(name, "elementwise", tok, 3 * tok * a, L)

    return [
        linear("patch_embed", b * spec.num_patches, cpp, d, 1),  # conv as GEMM over patches
        OpCost("pos_embed", "elementwise", tok, 2 * tok * a + n * d * w, 1),  # cls concat + position add
        norm("norm1", L),
        linear("attn.qkv", b * n, d, 3 * d, L),
        OpCost(
            "attn.qk", "attention", 2 * b * n * n * d, 2 * tok * a + scores * a, L
        ),  # (B,h,N,hd)x(B,h,hd,N)
        OpCost("attn.softmax", "softmax", SOFTMAX_OPS_PER_ELEMENT * scores, 2 * scores * a, L),
        OpCost(
            "attn.av", "attention", 2 * b * n * n * d, scores * a + 2 * tok * a, L
        ),  # (B,h,N,N)x(B,h,N,hd)
        linear("attn.proj", b * n, d, d, L),
        add("residual1"),
        norm("norm2", L),
        linear("mlp.fc1", b * n, d, h, L),
        OpCost("mlp.gelu", "elementwise", GELU_OPS_PER_ELEMENT * hid, 2 * hid * a, L),
        linear("mlp.fc2", b * n, h, d, L),
        add("residual2"),
        norm("norm", 1),
        linear("head", b, d, spec.num_classes, 1),  # class token only
    ]
