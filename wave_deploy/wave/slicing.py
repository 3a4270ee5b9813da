"""Cutting a smaller model out of a larger WaveViT's scalers (DESIGN 3.2-3.3): the one slicing rule.

Width: the first D/w tiles of every embed-width axis, the first H/w of every mlp axis, and the first D/w
tiles of each of q, k and v (whole heads, since w = head_dim). Depth: layer i of L comes from source layer
floor(i * L_src / L), i.e. by relative depth. Which axis each scaler dimension runs along comes from the
kinds table (wave.geometry.KINDS). Stage 1 (learngene) trains on these slices; stage 2 (init) starts from
them.

Growing beyond the auxiliary model (stage 2 only, ``grow_scalers``) keeps its function where it can:
- Depth: target layer i still comes from source layer floor(i * L_src / L). A target layer whose source is
  the same as the previous target layer's is a copy whose residual-branch outputs (attn.proj and mlp.fc2,
  weights and biases) are zero, so it starts as the identity and the deeper model computes the source's
  function exactly.
- Width: the source's tiles fill the leading D_src/w (H_src/w) tiles; the new tiles start from the target's
  random init (timm's scale) where they only add new heads or mlp hidden units computed from old channels
  (new rows of qkv and fc1; all vector kinds: LayerNorm weights projected ones, biases zero) and are zero
  everywhere else (any tile that writes a new residual channel: patch_embed, pos_embed, cls_token, proj and
  fc2 rows; or reads a new channel, head or hidden unit: qkv, fc1 and head columns, proj and fc2 columns).
  The new residual channels therefore stay exactly zero and the new heads and hidden units are not read:
  the wider model differs from the narrow one only in its LayerNorm statistics, which run over all D
  channels. With r = D_src/D the zeros scale a token's mean by r and its variance to r*var + r(1-r)mean^2,
  so the LayerNorm weights of the old channels are multiplied by sqrt(r): exact for tokens of zero mean.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.geometry import HEAD_KINDS, KINDS, kind_layouts
from wave_deploy.wave.model import LAYERNORM_WEIGHT_KINDS, WaveViT, expanded_state_dict


def layer_indices(src_depth: int, depth: int) -> list[int]:
    """Source layer of each target layer, by relative depth: floor(i * src_depth / depth)."""
    return [i * src_depth // depth for i in range(depth)]


def slice_scalers(
    scalers: dict[str, Tensor], src: ViTSpec, dst: ViTSpec, w: int, *, with_head: bool = True
) -> dict[str, Tensor]:
    """Scalers of ``dst`` cut out of those of the larger (or equal) ``src`` model; differentiable.

    Shapes follow WaveViT: per-layer kinds (L, N, *grid), global kinds (N, *grid).
    """
    if dst.embed_dim > src.embed_dim or dst.mlp_hidden > src.mlp_hidden:
        raise InvalidInputError(
            f"cannot slice width {dst.embed_dim} out of the auxiliary model's width {src.embed_dim}"
        )
    keep = {"embed": dst.embed_dim // w, "attn": dst.embed_dim // w, "mlp": dst.mlp_hidden // w}
    layers = torch.tensor(layer_indices(src.depth, dst.depth))
    out = {}
    for kind, S in scalers.items():
        if kind in HEAD_KINDS and not with_head:
            continue
        axes = KINDS[kind].axes
        if S.dim() == len(axes) + 2:  # per-layer kind: (L, N, *grid)
            S = S.index_select(0, layers.to(S.device))
        for k, axis in enumerate(axes):
            dim = S.dim() - len(axes) + k
            if axis == "qkv":  # (..., 3 * Dsrc/w, ...) -> first D/w tiles of each of q, k, v
                S = (
                    S.unflatten(dim, (3, S.shape[dim] // 3))
                    .narrow(dim + 1, 0, keep["attn"])
                    .flatten(dim, dim + 1)
                )
            elif axis in keep:  # a fixed axis keeps its single tile
                S = S.narrow(dim, 0, keep[axis])
        out[kind] = S
    return out


RESIDUAL_OUTPUT_KINDS = ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias")
GROWN_ROW_AXES = ("qkv", "mlp")  # a new tile along these, as the rows of a matrix, keeps its random init


def grow_scalers(
    scalers: dict[str, Tensor],
    src: ViTSpec,
    dst: ViTSpec,
    w: int,
    base: dict[str, Tensor],
    *,
    with_head: bool = True,
) -> dict[str, Tensor]:
    """Scalers of ``dst`` from those of ``src`` where ``dst`` may be deeper or wider (module docstring).

    ``base``: ``dst``'s own (random) scalers, which supply the new tiles that are not zero. Where ``dst``
    fits inside ``src`` this is exactly ``slice_scalers``.
    """
    narrow_d = min(dst.embed_dim, src.embed_dim)
    inner = dataclasses.replace(dst, embed_dim=narrow_d, num_heads=narrow_d // dst.head_dim)
    sliced = slice_scalers(scalers, src, inner, w, with_head=with_head)
    keep = {"embed": narrow_d // w, "attn": narrow_d // w, "qkv": narrow_d // w, "mlp": inner.mlp_hidden // w}
    out = {}
    for kind, S in sliced.items():
        grown = base[kind].detach().clone()
        axes = KINDS[kind].axes
        lead = grown.dim() - len(axes)  # (L, N) or (N,)
        view, Sv = grown, S
        for k, axis in enumerate(axes):
            if axis == "qkv":  # q, k and v blocks each grow by their own new heads
                view = view.unflatten(lead + k, (3, -1))
                Sv = Sv.unflatten(lead + k, (3, -1))
                break  # qkv appears at most once per kind; the offsets below account for it
        split = [lead + k + (1 if "qkv" in axes[:k] else 0) + (1 if axis == "qkv" else 0) for k, axis in
                 enumerate(axes)]  # fmt: skip
        region = [slice(None)] * view.dim()
        for k, axis in enumerate(axes):
            if axis in keep:
                region[split[k]] = slice(0, keep[axis])
        if not KINDS[kind].vector:  # every new tile is zero except new rows of qkv / fc1
            for k, axis in enumerate(axes):
                if axis in keep and not (k == 0 and axis in GROWN_ROW_AXES):
                    new = [slice(None)] * view.dim()
                    new[split[k]] = slice(keep[axis], None)
                    view[tuple(new)] = 0.0
        view[tuple(region)] = Sv
        out[kind] = grown
    if dst.embed_dim > src.embed_dim:  # LayerNorm over D channels of which D - D_src are zero
        gain = math.sqrt(src.embed_dim / dst.embed_dim)
        for kind in LAYERNORM_WEIGHT_KINDS:
            out[kind][..., : keep["embed"]] *= gain
    if dst.depth > src.depth:  # repeated source layers start as the identity
        layers = layer_indices(src.depth, dst.depth)
        repeats = [i for i in range(1, dst.depth) if layers[i] == layers[i - 1]]
        for kind in RESIDUAL_OUTPUT_KINDS:
            out[kind][repeats] = 0.0
    return out


def subnet_state_dict(aux: WaveViT, spec: ViTSpec) -> dict[str, Tensor]:
    """Dense timm state dict of the sub-network ``spec`` of an auxiliary WaveViT (keeps the autograd graph)."""
    layouts = kind_layouts(aux.geometry, spec)  # an auxiliary model always has the bank's templated head
    scalers = slice_scalers({k: aux.scaler(k) for k in aux.layouts}, aux.spec, spec, aux.geometry.w)
    templates = {k: aux.template(k) for k in layouts}
    return expanded_state_dict(layouts, scalers, templates, spec.depth)


class Subnet:
    """Runs a sub-network of an auxiliary WaveViT through a parameter-free timm skeleton (meta device)."""

    def __init__(self, spec: ViTSpec):
        from timm.models.vision_transformer import VisionTransformer

        self.spec = spec
        with torch.device("meta"):
            self.vit = VisionTransformer(**spec.timm_kwargs())

    def __call__(self, aux: WaveViT, x: Tensor) -> Tensor:
        self.vit.train(aux.training)
        return functional_call(self.vit, subnet_state_dict(aux, self.spec), (x,), strict=True)


class SlicedModel(nn.Module):
    """A sub-network of an auxiliary WaveViT as a module (for evaluation): forward(x) -> logits."""

    def __init__(self, aux: WaveViT, spec: ViTSpec):
        super().__init__()
        self.aux, self.subnet = aux, Subnet(spec)

    def forward(self, x: Tensor) -> Tensor:
        return self.subnet(self.aux, x)
