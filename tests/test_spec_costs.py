"""Analytic costs of ViTSpec against timm's own models and torch's FLOP counter."""

from __future__ import annotations

import itertools
import random

import pytest

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import (
    ViTSpec,
    activation_bytes,
    costs,
    flops,
    macs,
    matmul_macs,
    model_ops,
    param_count,
    weight_bytes,
)

DEIT = {  # timm name -> (embed_dim, heads, published params in M, published GMACs incl. attention)
    "deit_tiny_patch16_224": (192, 3, 5.72, 1.26),
    "deit_small_patch16_224": (384, 6, 22.05, 4.61),
    "deit_base_patch16_224": (768, 12, 86.57, 17.58),
}


def _deit_spec(embed_dim: int, heads: int) -> ViTSpec:
    return ViTSpec(
        depth=12,
        embed_dim=embed_dim,
        num_heads=heads,
        patch_size=16,
        img_size=224,
        in_chans=3,
        num_classes=1000,
    )


def _random_specs(n: int, seed: int) -> list[ViTSpec]:
    rng = random.Random(seed)
    specs = []
    for _ in range(n):
        heads = rng.choice([1, 2, 3, 4])
        patch = rng.choice([2, 4, 7])
        specs.append(
            ViTSpec(
                depth=rng.randint(1, 4),
                embed_dim=heads * rng.choice([8, 16, 24]),
                num_heads=heads,
                mlp_ratio=rng.choice([1.0, 2.0, 4.0]),
                patch_size=patch,
                img_size=patch * rng.randint(2, 5),
                in_chans=rng.choice([1, 3]),
                num_classes=rng.randint(2, 12),
            )
        )
    return specs


@pytest.mark.parametrize("name", sorted(DEIT))
def test_params_and_gmacs_equal_timm_published_deit_figures(name):
    import timm

    embed_dim, heads, published_m, published_gmacs = DEIT[name]
    spec = _deit_spec(embed_dim, heads)
    model = timm.create_model(name, pretrained=False)
    assert param_count(spec) == sum(p.numel() for p in model.parameters())
    assert round(param_count(spec) / 1e6, 2) == published_m
    assert round(macs(spec) / 1e9, 2) == published_gmacs


def test_param_count_equals_instantiated_timm_model_for_random_specs():
    from timm.models.vision_transformer import VisionTransformer

    for spec in _random_specs(12, seed=0):
        model = VisionTransformer(**spec.timm_kwargs())
        assert param_count(spec) == sum(p.numel() for p in model.parameters()), spec


def _counted_flops(spec: ViTSpec, batch: int) -> dict:
    """torch's FlopCounterMode over a real forward; explicit attention so Q K^T and A V appear as bmm."""
    import torch
    from timm.models.vision_transformer import VisionTransformer
    from torch.utils.flop_counter import FlopCounterMode

    model = VisionTransformer(**spec.timm_kwargs()).eval()
    for block in model.blocks:
        block.attn.fused_attn = False
    x = torch.randn(batch, spec.in_chans, spec.img_size, spec.img_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}


def test_flops_equal_torch_flop_counter_with_and_without_attention_products():
    for i, spec in enumerate(_random_specs(6, seed=1)):
        batch = 1 + i % 3
        counted = _counted_flops(spec, batch)
        attention_products = counted.get("aten.bmm", 0)
        other = sum(v for k, v in counted.items() if k != "aten.bmm")
        assert flops(spec, batch, attention=False) == other, spec
        assert flops(spec, batch) == other + attention_products, spec
        assert flops(spec, batch) == 2 * matmul_macs(spec, batch)


def test_costs_scale_linearly_with_batch_and_weights_with_precision():
    spec = ViTSpec(depth=3, embed_dim=64, num_heads=2)
    assert flops(spec, 5) == 5 * flops(spec, 1)
    assert macs(spec, 3) == 3 * macs(spec, 1)
    assert activation_bytes(spec, 4) == 4 * activation_bytes(spec, 1)
    assert weight_bytes(spec, "fp32") == 2 * weight_bytes(spec, "fp16") == 4 * weight_bytes(spec, "int8")
    c = costs(spec, batch=2, precision="fp16")
    assert c.params == param_count(spec) and c.weight_bytes == 2 * c.params
    assert c.flops > c.flops_no_attention and c.to_dict()["batch"] == 2


def test_activation_estimate_lies_between_largest_tensor_and_sum_of_all_tensors():
    import torch
    from timm.models.vision_transformer import VisionTransformer

    for spec in _random_specs(4, seed=2):
        model = VisionTransformer(**spec.timm_kwargs()).eval()
        for block in model.blocks:
            block.attn.fused_attn = False  # so the attention probabilities pass through attn_drop
        sizes: list[int] = []

        def hook(_module, inputs, output, sizes=sizes):
            for t in (*inputs, output):
                if isinstance(t, torch.Tensor):
                    sizes.append(t.numel() * t.element_size())

        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        with torch.no_grad():
            model(torch.randn(2, spec.in_chans, spec.img_size, spec.img_size))
        for h in handles:
            h.remove()
        estimate = activation_bytes(spec, batch=2, precision="fp32")
        assert max(sizes) <= estimate <= sum(sizes), spec


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_batch_is_rejected_with_invalid_input(bad):
    with pytest.raises(InvalidInputError):
        flops(ViTSpec(depth=1, embed_dim=32, num_heads=1), bad)


def test_unknown_precision_is_rejected_with_invalid_input():
    with pytest.raises(InvalidInputError, match="precision"):
        weight_bytes(ViTSpec(depth=1, embed_dim=32, num_heads=1), "fp8")


def test_model_ops_matmul_flops_equal_spec_flops():
    for spec, batch in itertools.product(
        [
            ViTSpec(depth=3, embed_dim=64, num_heads=2),
            ViTSpec(
                depth=12,
                embed_dim=192,
                num_heads=3,
                patch_size=16,
                img_size=224,
                in_chans=3,
                num_classes=1000,
            ),
        ],
        [1, 3],
    ):
        ops = model_ops(spec, batch)
        assert sum(o.flops * o.count for o in ops if o.kind in ("gemm", "attention")) == flops(spec, batch)
        assert sum(o.flops * o.count for o in ops if o.kind == "gemm") == flops(spec, batch, attention=False)
        assert (
            sum(o.count for o in ops) == 12 * spec.depth + 4
        )  # 12 kernels per block + embed, pos, norm, head
