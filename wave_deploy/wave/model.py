"""WaveViT: a timm VisionTransformer whose every parameter is expanded from shared weight templates.

The bank's templates are frozen buffers (trainable parameters in stage 1, ``train_templates=True``); the
size-specific weight scalers are the trainable parameters. ``expanded_state_dict()`` produces the dense,
timm-named state dict (one batched expansion per kind, all layers at once) and ``forward`` runs timm's own
VisionTransformer on it via ``torch.func.functional_call``, so the ViT math exists once, in timm.

Scaler shapes (L = depth, D = embed_dim, H = mlp hidden, w = template size, N = templates of the kind):
    attn.qkv.weight (L, N, 3D/w, D/w)   attn.proj.weight (L, N, D/w, D/w)
    mlp.fc1.weight  (L, N, H/w, D/w)    mlp.fc2.weight   (L, N, D/w, H/w)
    block vectors   (L, N, m/w)          norm.*, patch_embed.proj.bias (N, D/w)
    patch_embed.proj.weight (N, D/w, 1)  pos_embed, cls_token, head.weight (N, 1, D/w)   head.bias (N, 1)
A task with num_classes other than the bank's gets a plain dense head (timm init) instead of head scalers.
A spec whose image size differs from the bank's gets the pos_embed templates resampled to its patch grid with
timm's own ``resample_abs_pos_embed`` (bicubic, antialiased; the class-token row kept): interpolation is
linear and acts on each channel alone, so resampling the templates resamples every expanded pos_embed alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import KindLayout, kind_layouts
from wave_deploy.wave.kron import expand, expand_vec, project_vec

LAYERNORM_WEIGHT_KINDS = ("norm1.weight", "norm2.weight", "norm.weight")


def _key(kind: str) -> str:
    """Module attribute names cannot contain dots: attn.qkv.weight -> attn__qkv__weight."""
    return kind.replace(".", "__")


def init_std(kind: str, spec: ViTSpec) -> float:
    """Std of timm's default init for a matrix-like kind (what random scalers aim the expansion at)."""
    if kind == "cls_token":
        return 1e-6  # timm: normal_(cls_token, std=1e-6)
    if kind == "patch_embed.proj.weight":  # nn.Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        return 1.0 / math.sqrt(3 * spec.in_chans * spec.patch_size**2)
    return 0.02  # trunc_normal_(std=.02) for every nn.Linear weight and pos_embed


def resample_pos_templates(templates: Tensor, tokens: int) -> Tensor:
    """pos_embed templates (N, T_bank, w) resampled to (N, tokens, w) as timm resamples a position embedding."""
    from timm.layers import resample_abs_pos_embed

    n, t_bank, w = templates.shape
    if t_bank == tokens:
        return templates
    side = math.isqrt(tokens - 1)
    joined = templates.permute(1, 0, 2).reshape(1, t_bank, n * w)  # channels of all templates side by side
    out = resample_abs_pos_embed(joined, [side, side], num_prefix_tokens=1)
    return out.reshape(tokens, n, w).permute(1, 0, 2).contiguous()


def expand_kind(lay: KindLayout, S: Tensor, T: Tensor, depth: int) -> Tensor:
    """Dense weights of one kind from its scalers S and templates T: (depth, *param_shape) or param_shape."""
    W = expand_vec(S, T) if lay.vector else expand(S, T)
    return W.reshape(((depth,) if lay.per_layer else ()) + lay.param_shape)


def expanded_state_dict(
    layouts: dict[str, KindLayout],
    scalers: dict[str, Tensor],
    templates: dict[str, Tensor],
    depth: int,
    head: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """timm-named dense state dict from per-kind scalers and templates (+ a dense head's weight and bias)."""
    out: dict[str, Tensor] = {}
    for kind, lay in layouts.items():
        W = expand_kind(lay, scalers[kind], templates[kind], depth)
        if lay.per_layer:
            # unbind, not W[i]: indexing makes autograd add a full (L, ...) zero tensor per layer
            out.update({f"blocks.{i}.{kind}": Wi for i, Wi in enumerate(W.unbind(0))})
        else:
            out[kind] = W
    if head is not None:
        out["head.weight"], out["head.bias"] = head
    return out


class _Buffers(nn.Module):
    """Holds frozen templates as buffers (moved by .to(), saved in state_dict, never trained)."""


class WaveViT(nn.Module):
    _vit: nn.Module  # timm's skeleton on the meta device, outside the module tree (see __init__)
    templates: nn.Module

    def __init__(
        self,
        bank: TemplateBank,
        spec: ViTSpec,
        *,
        train_templates: bool = False,
        templated_head: bool | None = None,
        seed: int = 0,
    ):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        geom = bank.geometry
        if templated_head is None:
            templated_head = spec.num_classes == geom.num_classes
        self.spec, self.geometry, self.templated_head = spec, geom, templated_head
        self.layouts = kind_layouts(geom, spec, templated_head)  # kind -> KindLayout; checks the spec

        templates = nn.ParameterDict() if train_templates else _Buffers()
        self.templates = templates
        self.scalers = nn.ParameterDict()
        for kind, lay in self.layouts.items():
            t = bank.templates[kind].detach().clone().float()  # (N, *template_shape)
            if kind == "pos_embed":  # a target image size other than the bank's
                t = resample_pos_templates(t, lay.template_shape[0])
            if isinstance(templates, nn.ParameterDict):
                templates[_key(kind)] = nn.Parameter(t)
            else:
                templates.register_buffer(_key(kind), t)
            self.scalers[_key(kind)] = nn.Parameter(torch.zeros(lay.scaler_shape(t.shape[0], spec.depth)))
        if not templated_head:  # a fresh, plain classifier for a new task: timm's init
            self.head = nn.Linear(spec.embed_dim, spec.num_classes)
        # The timm skeleton lives on the meta device and outside the module tree: it holds no parameters of
        # its own; functional_call substitutes every one of them with the expanded tensors.
        with torch.device("meta"):
            vit = VisionTransformer(**spec.timm_kwargs())
        object.__setattr__(self, "_vit", vit)
        self.init_scalers_random(torch.Generator().manual_seed(seed))

    def template(self, kind: str) -> Tensor:
        return getattr(self.templates, _key(kind))

    def scaler(self, kind: str) -> nn.Parameter:
        return self.scalers[_key(kind)]

    def timm_keys(self) -> list[str]:
        """timm's parameter and buffer names of this model's VisionTransformer, in timm's state-dict order."""
        return list(self._vit.state_dict().keys())

    def scaler_count(self) -> int:
        """Number of scalar weight scalers (the dense head of a new task is not counted)."""
        return sum(p.numel() for p in self.scalers.values())

    def expand_kind(self, kind: str) -> Tensor:
        """Dense weights of one kind: (L, *param_shape) for block kinds, param_shape for global kinds."""
        return expand_kind(self.layouts[kind], self.scaler(kind), self.template(kind), self.spec.depth)

    def expanded_state_dict(self) -> dict[str, Tensor]:
        """The dense timm-named state dict (keeps the autograd graph back to scalers and templates)."""
        scalers: dict[str, Tensor] = {kind: self.scaler(kind) for kind in self.layouts}
        templates = {kind: self.template(kind) for kind in self.layouts}
        head = (self.head.weight, self.head.bias) if not self.templated_head else None
        return expanded_state_dict(self.layouts, scalers, templates, self.spec.depth, head)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, img, img) -> logits (B, num_classes)
        self._vit.train(self.training)
        return functional_call(self._vit, self.expanded_state_dict(), (x,), strict=True)

    @torch.no_grad()
    def init_scalers_random(self, generator: torch.Generator) -> None:
        """Random scalers whose expansion matches timm's init scale, layer by layer.

        Matrix kinds: Gaussian scalers rescaled so each layer's expanded weight has timm's std (init_std).
        LayerNorm weights: least-squares projection of ones onto the template span. Biases: zero.
        A dense head gets timm's init (trunc_normal std .02, zero bias), drawn from the same generator.
        """
        for kind, lay in self.layouts.items():
            S, T = self.scaler(kind), self.template(kind).float()
            if kind in LAYERNORM_WEIGHT_KINDS:
                ones = torch.ones(S.shape[:-2] + (S.shape[-1] * T.shape[-1],), device=T.device)
                S.copy_(project_vec(ones, T))
            elif lay.vector:
                S.zero_()
            else:
                draw = torch.randn(S.shape, generator=generator).to(S)
                W = expand(draw, T)
                std = W.flatten(start_dim=1 if lay.per_layer else 0).std(dim=-1)  # (L,) or ()
                scale = init_std(kind, self.spec) / std.clamp_min(1e-12)
                S.copy_(draw * scale.reshape(scale.shape + (1,) * (draw.dim() - scale.dim())))
        if not self.templated_head:
            # timm truncates at +-2 absolute, i.e. +-100 std: a plain normal draw is the same distribution
            self.head.weight.copy_(
                torch.randn(self.head.weight.shape, generator=generator).to(self.head.weight) * 0.02
            )
            self.head.bias.zero_()

    @torch.no_grad()
    def load_scalers(self, scalers: dict[str, Tensor]) -> None:
        """Set every scaler from ``scalers`` (kind -> tensor of exactly this model's scaler shape)."""
        if set(scalers) != set(self.layouts):
            raise InvalidInputError(
                f"scalers for kinds {sorted(scalers)} given; this model needs {sorted(self.layouts)}"
            )
        for kind, value in scalers.items():
            if tuple(value.shape) != tuple(self.scaler(kind).shape):
                raise InvalidInputError(
                    f"scalers[{kind!r}] has shape {tuple(value.shape)}, "
                    f"expected {tuple(self.scaler(kind).shape)}"
                )
            self.scaler(kind).copy_(value)

    def scalers_dict(self) -> dict[str, Tensor]:
        """kind -> detached copy of its scalers."""
        return {kind: self.scaler(kind).detach().clone() for kind in self.layouts}

    def export_bank(self, provenance: dict | None = None) -> TemplateBank:
        """This model's templates as a bank, with its scalers as the bank's auxiliary scalers (stage 1)."""
        if not self.templated_head:
            raise InvalidInputError(
                "only a model with a templated head can be exported as a bank's auxiliary model"
            )
        return TemplateBank(
            geometry=self.geometry,
            templates={kind: self.template(kind).detach().cpu().clone() for kind in self.layouts},
            aux_scalers={k: v.cpu() for k, v in self.scalers_dict().items()},
            aux_spec=self.spec,
            provenance=dict(provenance or {}),
        )
