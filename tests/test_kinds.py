"""The weight-kinds table: every kind's timm tensor is a reshape of its expanded form, tiled exactly by w."""

from __future__ import annotations

import math

import pytest

from wave_deploy.wave.geometry import (
    ALL_KINDS,
    KINDS,
    WIDTH_AXES,
    BankGeometry,
    axis_sizes,
    kind_layouts,
    tiling,
)


def test_the_table_covers_every_timm_parameter_of_a_vit():
    from timm.models.vision_transformer import VisionTransformer

    geom = BankGeometry.create(
        img_size=8, patch_size=4, in_chans=1, num_classes=3, w=8, head_dim=8, mlp_ratio=4.0, max_depth=2,
        max_embed_dim=16,
    )  # fmt: skip
    spec = geom.make_spec(2, 16)
    timm_shapes = {k: tuple(v.shape) for k, v in VisionTransformer(**spec.timm_kwargs()).state_dict().items()}
    layouts = kind_layouts(geom, spec)
    table_shapes = {}
    for name, lay in layouts.items():
        if lay.per_layer:
            table_shapes.update({f"blocks.{i}.{name}": lay.param_shape for i in range(spec.depth)})
        else:
            table_shapes[name] = lay.param_shape
    assert table_shapes == timm_shapes
    assert tuple(KINDS) == ALL_KINDS


@pytest.mark.parametrize("d, h", [(8, 32), (24, 48), (64, 256)])
@pytest.mark.parametrize("name", list(KINDS))
def test_param_tensor_is_a_reshape_of_the_expanded_form_and_templates_tile_it(name, d, h):
    kind = KINDS[name]
    sizes = axis_sizes(embed_dim=d, mlp_hidden=h, in_chans=3, patch_size=4, tokens=17, classes=5)
    assert math.prod(sizes[a] for a in kind.axes) == math.prod(sizes[a] for a in kind.param_axes)
    template, grid = tiling(kind, sizes, 8)
    assert tuple(t * g for t, g in zip(template, grid)) == tuple(sizes[a] for a in kind.axes)
    assert [a for a in kind.param_axes if a in WIDTH_AXES] == [a for a in kind.axes if a in WIDTH_AXES]
