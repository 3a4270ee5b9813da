"""Issue 18, point 7, on the CPU at a size that fits CI (a smoke test: no speed claim). The GPU run distils a
DeiT-Small-geometry bank (224 px RGB, patch 16, head 64, depth 12, width 384) from a timm teacher and builds every
profile at 224 px; here the same path runs with the geometry read from timm's vit_small_patch16_224, a 2 x 64
auxiliary model, one training step and 32 images, then `build --all-profiles --img-size 224` on the bank."""

import json

import pytest
from _stage1_data import rgb_folder
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.wave.bank import TemplateBank


@pytest.fixture(scope="module")
def rgb224(tmp_path_factory):
    return rgb_folder(tmp_path_factory.mktemp("rgb224"))


def test_a_deit_small_geometry_bank_from_a_timm_teacher_then_every_profile_at_224(rgb224, tmp_path):
    bank = tmp_path / "bank.safetensors"
    stage1 = CliRunner().invoke(
        cli,
        ["templates", "build", "--teacher", "vit_small_patch16_224", "--data", str(rgb224),
         "--aux-depth", "2", "--aux-embed-dim", "64", "--steps", "1", "--batch-size", "8",
         "--estimate-steps", "1", "--allow-weak-teacher", "--out", str(bank), "--json"],
    )  # fmt: skip
    assert stage1.exit_code == 0, stage1.output
    summary = json.loads(stage1.stdout)
    assert summary["estimate"]["steps"] == 1
    geom = TemplateBank.load(bank).geometry
    # DeiT-Small's geometry, read from the teacher (6 heads of 64, MLP 1536 / 384)
    read = (geom.img_size, geom.in_chans, geom.patch_size, geom.head_dim, geom.w, geom.mlp_ratio)
    assert read == (224, 3, 16, 64, 64, 4.0)

    out = tmp_path / "out"
    built = CliRunner().invoke(
        cli,
        ["build", "--all-profiles", "--templates", str(bank), "--data", str(rgb224), "--img-size", "224",
         "--scaler-steps", "1", "--dense-steps", "0", "--batch-size", "8", "--bench-iterations", "1",
         "--no-fail-on-budget", "--out", str(out), "--json"],
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    reports = sorted(out.glob("*/report.json"))
    assert len(reports) >= 6  # every shipped profile
    for path in reports:
        spec = json.loads(path.read_text())["spec"]
        shape = (spec["img_size"], spec["in_chans"], spec["patch_size"], spec["num_classes"])
        assert shape == (224, 3, 16, 4)
