"""Cutting a smaller model out of a larger WaveViT's scalers (DESIGN 3.2-3.3): the one slicing rule.

Width: the first D/w tiles of every embed-width axis, the first H/w of every mlp axis, and the first D/w
tiles of each of q, k and v (whole heads, since w = head_dim). Depth: layer i of L comes from source layer
floor(i * L_src / L), i.e. by relative depth. Which axis each scaler dimension runs along comes from the
kinds table (wave.geometry.KINDS). Stage 1 (learngene) trains on these slices; stage 2 (init) starts from
them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.geometry import HEAD_KINDS, KINDS, kind_layouts
from wave_deploy.wave.model import WaveViT, expanded_state_dict


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
