"""Stage 1's geometry: read from the teacher (timm ViTs, a ResNet, a folded checkpoint), options win, the
auxiliary model's default rule (the teacher's depth and width capped at DeiT-Small), and the shipped bank's
recipe (scripts/build_default_bank.sh) still resolving to the shipped bank's geometry."""

import re
from pathlib import Path

import pytest
import timm

from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import save_folded
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank
from wave_deploy.wave.stage1.geometry import (
    Stage1Options,
    check_channels,
    default_patch_size,
    resolve,
    served_width,
    teacher_image_size,
)
from wave_deploy.wave.stage1.teacher import TeacherGeometry, load_teacher, teacher_geometry

ROOT = Path(__file__).resolve().parents[1]


def _values(g) -> dict:
    return {
        k: getattr(g, k) for k in ("img_size", "in_chans", "patch_size", "head_dim", "w", "mlp_ratio")
    } | {"aux": (g.aux_depth, g.aux_embed_dim)}


@pytest.mark.parametrize(
    "name, expected",
    [
        # vit_tiny: 224 px, patch 16, 3 heads of 64, MLP 768 / 192, 12 blocks of width 192
        ("vit_tiny_patch16_224", (True, 224, 3, 16, 64, 4.0, 12, 192, 1000)),
        # timm's test ViT: 160 px, patch 16, 2 heads of 32, MLP 192 / 64 = 3, 6 blocks of width 64
        ("test_vit", (True, 160, 3, 16, 32, 3.0, 6, 64, 1000)),
        # a ResNet: only its input size and channels
        ("test_resnet", (False, 160, 3, None, None, None, None, None, 1000)),
    ],
)
def test_teacher_geometry_is_read_from_the_timm_model(name, expected):
    g = teacher_geometry(timm.create_model(name))
    got = (g.vit, g.img_size, g.in_chans, g.patch_size, g.head_dim, g.mlp_ratio, g.depth, g.embed_dim)
    assert (*got, g.num_classes) == expected
    assert g.mean is None  # random weights: no input normalisation of their own


def test_trained_timm_weights_bring_their_normalisation():
    g = teacher_geometry(timm.create_model("test_vit"), trained_norm=True)
    cfg = timm.create_model("test_vit").pretrained_cfg
    assert g.mean == tuple(cfg["mean"]) and g.std == tuple(cfg["std"])


def test_vit_tiny_gives_the_issue_geometry_and_a_deit_tiny_auxiliary_model():
    g = resolve(
        teacher_geometry(timm.create_model("vit_tiny_patch16_224")), Stage1Options(), img_size=224, in_chans=3
    )
    assert _values(g) == {
        "img_size": 224,
        "in_chans": 3,
        "patch_size": 16,
        "head_dim": 64,
        "w": 64,
        "mlp_ratio": 4.0,
        "aux": (12, 192),
    }
    assert g.sources == {
        "img_size": "teacher",
        "in_chans": "data",
        "patch_size": "teacher",
        "head_dim": "teacher",
        "mlp_ratio": "teacher",
        "w": "head_dim",
        "aux_depth": "teacher",
        "aux_embed_dim": "teacher",
    }


@pytest.mark.parametrize(
    "depth, width, aux",
    [
        (12, 768, (12, 384)),  # ViT-B: capped at DeiT-Small
        (24, 1024, (12, 384)),  # ViT-L
        (6, 320, (6, 320)),  # below the cap: the teacher's own
        (12, 200, (12, 192)),  # a width the bank does not serve: rounded down to a multiple of 64
        (4, 40, (4, 64)),  # narrower than one head: the smallest width served
    ],
)
def test_auxiliary_default_is_the_teacher_capped_at_deit_small(depth, width, aux):
    teacher = TeacherGeometry(True, 224, 3, 16, 64, 4.0, depth, width, 1000)
    g = resolve(teacher, Stage1Options(), img_size=224, in_chans=3)
    assert (g.aux_depth, g.aux_embed_dim) == aux


def test_options_win_over_the_teacher():
    teacher = teacher_geometry(timm.create_model("vit_tiny_patch16_224"))
    opts = Stage1Options(
        img_size=112,
        in_chans=1,
        patch_size=8,
        head_dim=32,
        w=16,
        mlp_ratio=2.0,
        aux_depth=3,
        aux_embed_dim=96,
    )
    assert teacher_image_size(teacher, opts) == (112, "option")
    g = resolve(teacher, opts, img_size=112, in_chans=1)
    assert _values(g) == {
        "img_size": 112,
        "in_chans": 1,
        "patch_size": 8,
        "head_dim": 32,
        "w": 16,
        "mlp_ratio": 2.0,
        "aux": (3, 96),
    }
    assert set(g.sources.values()) == {"option"}


def test_a_resnet_teacher_gets_the_stated_defaults():
    teacher = teacher_geometry(timm.create_model("test_resnet"))
    assert teacher_image_size(teacher, Stage1Options()) == (160, "teacher")
    g = resolve(teacher, Stage1Options(), img_size=224, in_chans=3)
    assert _values(g) == {
        "img_size": 224,
        "in_chans": 3,
        "patch_size": 16,
        "head_dim": 32,
        "w": 32,
        "mlp_ratio": 4.0,
        "aux": (6, 128),
    }
    assert g.sources["patch_size"] == g.sources["head_dim"] == g.sources["aux_depth"] == "default"


@pytest.mark.parametrize(
    "img, patch", [(224, 16), (28, 4), (32, 4), (96, 6), (160, 10), (384, 24), (30, 5), (31, 31)]
)
def test_default_patch_cuts_about_a_14_by_14_grid_never_below_4(img, patch):
    assert default_patch_size(img) == patch and img % patch == 0


def test_served_width_rounds_down_to_a_width_the_bank_serves():
    assert served_width(192, w=64, head_dim=64, mlp_ratio=4.0) == 192
    assert served_width(200, w=32, head_dim=64, mlp_ratio=4.0) == 192
    assert served_width(64, w=32, head_dim=32, mlp_ratio=3.0) == 64  # test_vit: 192 hidden units, 6 tiles
    assert served_width(48, w=32, head_dim=32, mlp_ratio=1.5) == 64  # 32 * 1.5 = 48: not whole tiles


def test_channels_follow_the_data_and_rgb_data_needs_a_grey_opt_in_for_a_grey_teacher():
    rgb, grey = TeacherGeometry(True, 224, 3), TeacherGeometry(True, 28, 1)
    check_channels(rgb, 3, Stage1Options())
    check_channels(rgb, 1, Stage1Options())  # grey images are repeated to the teacher's 3 channels
    check_channels(grey, 1, Stage1Options(in_chans=1))
    with pytest.raises(InvalidInputError, match="takes 1-channel images but the data gives 3") as refused:
        check_channels(grey, 3, Stage1Options())
    assert "--in-chans 1" in refused.value.one_line()
    assert resolve(rgb, Stage1Options(), img_size=224, in_chans=1).in_chans == 1


def test_an_image_size_the_patch_does_not_divide_is_a_usage_error():
    with pytest.raises(UsageError, match="not a multiple of the patch size 16"):
        resolve(
            TeacherGeometry(True, 224, 3, 16, 64, 4.0, 12, 192),
            Stage1Options(img_size=100),
            img_size=100,
            in_chans=3,
        )


def _script_flags() -> dict[str, str]:
    text = (ROOT / "scripts" / "build_default_bank.sh").read_text()
    command = text[text.index("cli.main templates build") : text.index("cli.main templates info")]
    return dict(re.findall(r"--([a-z-]+) (\d+)", command))


def test_the_shipped_bank_recipe_resolves_to_the_shipped_geometry(tmp_path):
    """scripts/build_default_bank.sh names every geometry option; with its ancestry (depth 6, width 128, 4
    heads, patch 7 at 28 px grey, scripts/train_ancestry.py) it resolves to the shipped bank's geometry."""
    flags = _script_flags()
    spec = ViTSpec(depth=6, embed_dim=128, num_heads=4, patch_size=7, img_size=28, in_chans=1, num_classes=10)
    path = tmp_path / "ancestry.safetensors"
    save_folded(path, random_init(spec, seed=0).state_dict(), spec, {})
    teacher, _ = load_teacher(checkpoint=path)
    opts = Stage1Options(
        patch_size=int(flags["patch-size"]),
        head_dim=int(flags["head-dim"]),
        w=int(flags["template-size"]),
        aux_depth=int(flags["aux-depth"]),
        aux_embed_dim=int(flags["aux-embed-dim"]),
    )
    tgeom = teacher_geometry(teacher)
    assert teacher_image_size(tgeom, opts) == (28, "teacher")
    g = resolve(tgeom, opts, img_size=28, in_chans=1)
    shipped = inspect_bank(default_bank_path())
    geom = shipped.geometry
    assert (g.img_size, g.in_chans, g.patch_size, g.head_dim, g.w, g.mlp_ratio) == (
        geom.img_size,
        geom.in_chans,
        geom.patch_size,
        geom.head_dim,
        geom.w,
        geom.mlp_ratio,
    )
    assert (g.aux_depth, g.aux_embed_dim) == (shipped.aux_spec.depth, shipped.aux_spec.embed_dim)
    # and without the flags the same ancestry gives the same bank: its own geometry is the shipped one
    plain = resolve(tgeom, Stage1Options(), img_size=28, in_chans=1)
    assert _values(plain) == _values(g)
