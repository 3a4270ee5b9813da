"""Initialization as a measured choice (issue 18, point 6): build --init wave|weight-selection|random, where
each one's search space comes from, that the non-WAVE inits start exactly where their baselines do, and the
options' rules. The end-to-end --compare-init build is in tests/test_recipe_224.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _rgb224 import TEACHER_SPEC, bank_224, rgb_folder, teacher_224
from click.testing import CliRunner

import wave_deploy
from wave_deploy import data as datasets
from wave_deploy.cli.main import cli
from wave_deploy.data_shape import probe_data
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.compare_init import budget_flops
from wave_deploy.pipeline.geometry_source import default_geometry
from wave_deploy.pipeline.inits import (
    applicable,
    load_selection_teacher,
    resolve_sources,
    run_init,
    selected_model,
)
from wave_deploy.training.baselines import random_init, weight_selection
from wave_deploy.training.compute import dense_step_flops


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inits")
    data = rgb_folder(root / "data", classes=4, per_class=3)
    return data, bank_224(root / "bank.safetensors"), teacher_224(root / "teacher.safetensors")


def test_build_help_lists_the_initializations_and_compare_init():
    result = CliRunner().invoke(cli, ["build", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--init [wave|weight-selection|random]" in text and "--compare-init" in text
    assert "--teacher-checkpoint" in text and "--teacher-arch" in text and "--compare-seeds" in text
    assert "WAVE only (--init wave)" in text and "a model without templates is --init random" in text


@pytest.mark.parametrize(
    "args, says",
    [
        (["--init", "weight-selection"], "needs --teacher-checkpoint"),
        (["--compare-init", "--init", "random"], "leave --init out"),
        (["--teacher-arch", "vit_tiny_patch16_224"], "give both"),
        (
            ["--init", "weight-selection", "--teacher-checkpoint", "t.safetensors", "--templates", "b"],
            "no bank",
        ),
        (["--init", "best"], "best"),
        (["--compare-init", "--compare-seeds", "0"], "1<=x<=10"),
    ],
)
def test_bad_init_options_are_usage_errors(args, says, tmp_path):
    result = CliRunner().invoke(cli, ["build", "--profile", "x86-cpu", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and says in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_the_api_refuses_them_alike():
    with pytest.raises(UsageError, match="needs --teacher-checkpoint"):
        wave_deploy.build("x86-cpu", init="weight-selection")


def test_the_train_key_includes_the_init_choice():
    keys = [BuildOptions(init=i).training_fields(4500) for i in ("wave", "random")]
    keys.append(BuildOptions(compare_init=True).training_fields(4500))
    keys.append(BuildOptions(compare_init=True, compare_seeds=3).training_fields(4500))
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == 4


@pytest.mark.parametrize(
    "px, patch, head", [(224, 16, 64), (28, 7, 32), (32, 8, 32), (40, 8, 32), (6, 1, 32)]
)
def test_default_geometry_without_bank_or_teacher(px, patch, head):
    g = default_geometry(px, 3, 5)
    assert (g.img_size, g.patch_size, g.head_dim, g.in_chans, g.num_classes) == (px, patch, head, 3, 5)
    assert (g.max_depth, g.max_embed_dim, g.mlp_ratio) == (12, 384, 4.0)


def test_where_the_search_space_comes_from(files):
    data, bank, teacher = files
    shape = probe_data(data)
    random_alone = resolve_sources(BuildOptions(init="random", data=str(data)), shape)
    assert random_alone.geometry_source == "default" and random_alone.bank is None
    assert (random_alone.geometry.img_size, random_alone.geometry.in_chans) == (224, 3)
    with_bank = resolve_sources(BuildOptions(init="random", templates=str(bank), data=str(data)), shape)
    assert with_bank.geometry_source == "bank" and with_bank.geometry.max_embed_dim == 64
    ws = resolve_sources(BuildOptions(init="weight-selection", teacher_checkpoint=str(teacher)), shape)
    assert ws.geometry_source == "teacher" and (ws.geometry.max_depth, ws.geometry.max_embed_dim) == (2, 64)
    # the shipped bank takes grayscale: --init wave refuses RGB data (exit 3); a comparison skips WAVE
    with pytest.raises(InvalidInputError, match="images are RGB"):
        resolve_sources(BuildOptions(data=str(data)), shape)
    compare = resolve_sources(BuildOptions(compare_init=True, teacher_checkpoint=str(teacher)), shape)
    assert compare.bank is None and "takes grayscale" in compare.bank_problem
    assert applicable("wave", compare, TEACHER_SPEC) == compare.bank_problem


def test_a_teacher_of_other_channels_is_refused_before_decoding(files, tmp_path):
    data, _, _ = files
    grey = teacher_224(tmp_path / "grey.safetensors", dataclasses.replace(TEACHER_SPEC, in_chans=1))
    result = CliRunner().invoke(cli, ["build", "--profile", "x86-cpu", "--init", "weight-selection",
                                      "--teacher-checkpoint", str(grey), "--data", str(data),
                                      "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 3 and "the teacher grey.safetensors takes grayscale" in result.output


def test_a_timm_state_dict_teacher_keeps_its_own_head(tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    teacher = load_selection_teacher(path, "vit_tiny_patch16_224", num_classes=7)  # the data has 7 classes
    assert dataclasses.astuple(teacher.spec) == (12, 192, 3, 4.0, 16, 224, 3, 4)
    assert teacher.info["arch"] == "vit_tiny_patch16_224"


def _equal_states(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("img_size", [224, 160])
def test_weight_selection_and_random_start_where_their_baselines_do(files, img_size):
    data_dir, _, teacher_file = files
    options = BuildOptions(init="weight-selection", teacher_checkpoint=str(teacher_file), scaler_steps=0,
                           dense_steps=0, batch_size=4, img_size=img_size)  # fmt: skip
    sources = resolve_sources(options, probe_data(data_dir))
    data = datasets.load_for_bank(data_dir, in_chans=3, img_size=img_size, resize=True)
    spec = sources.geometry.make_spec(1, 32, num_classes=4, img_size=img_size)
    model, record = run_init("weight-selection", sources, spec, data, options, seed=3)
    reference = weight_selection(sources.teacher.model, sources.teacher.spec,
                                 dataclasses.replace(spec, img_size=224), seed=3)  # fmt: skip
    if img_size == 224:
        _equal_states(model, reference)
    else:  # the selected position embedding, resampled as timm resamples it
        from timm.layers import resample_abs_pos_embed

        want = resample_abs_pos_embed(reference.pos_embed.detach(), [10, 10], num_prefix_tokens=1)
        torch.testing.assert_close(model.pos_embed.detach(), want, rtol=0, atol=0)
        torch.testing.assert_close(model.blocks[0].mlp.fc1.weight, reference.blocks[0].mlp.fc1.weight)
    assert record["init"] == "weight-selection" and record["training_flops"] == 0
    model, record = run_init("random", sources, spec, data, options, seed=3)
    _equal_states(model, random_init(spec, 3))
    assert record["dense_phase"] is None and record["val_acc"] == record["val_acc_at_init"]


def test_a_size_beyond_the_teacher_is_refused_for_weight_selection(files):
    data_dir, _, teacher_file = files
    options = BuildOptions(init="weight-selection", teacher_checkpoint=str(teacher_file))
    sources = resolve_sources(options, probe_data(data_dir))
    deeper = dataclasses.replace(TEACHER_SPEC, depth=3)
    assert "depth 3 > the teacher's 2" in applicable("weight-selection", sources, deeper)
    with pytest.raises(InvalidInputError, match="cannot make"):
        run_init("weight-selection", sources, deeper, None, options, seed=0)


def test_the_budget_is_the_schedule_as_dense_steps():
    options = BuildOptions(scaler_steps=3, dense_steps=5, batch_size=8)
    assert budget_flops(TEACHER_SPEC, options, 100) == 8 * dense_step_flops(TEACHER_SPEC, 8)


def test_a_headless_backbone_teacher_selects_its_blocks_and_starts_a_fresh_head(tmp_path):
    """A self-supervised backbone's state dict (no head.*): weight selection takes its blocks and gives the
    student timm's fresh head, exactly as for a new task (it exited 3 on 'num_classes ... got 0')."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    teacher = load_selection_teacher(path, "vit_tiny_patch16_224", num_classes=7)  # the data has 7 classes
    assert teacher.info["headless"] and teacher.spec.num_classes == 7
    spec = dataclasses.replace(TEACHER_SPEC, depth=2, embed_dim=128, num_heads=2, num_classes=7)
    student = selected_model(teacher, spec, seed=5)
    fresh = weight_selection(teacher.model, teacher.spec, spec, seed=5, new_task=True)
    _equal_states(student, fresh)
    torch.testing.assert_close(
        student.state_dict()["head.weight"], random_init(spec, 5).state_dict()["head.weight"]
    )


@pytest.mark.parametrize(
    "command",
    [
        ["build", "--profile", "x86-cpu", "--init", "weight-selection", "--dry-run"],
        ["build", "--profile", "x86-cpu", "--init", "weight-selection"],
        ["templates", "build", "--teacher-arch", "vit_tiny_patch16_224"],
    ],
)
def test_an_empty_teacher_checkpoint_is_one_line_exit_3(tmp_path, command):
    """torch.load raises EOFError('') on an empty file: the error quotes its type, not an empty first line
    (it was an IndexError traceback, exit 1)."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    result = CliRunner().invoke(
        cli, [*command, "--teacher-checkpoint", str(empty), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "EOFError" in lines[0], lines
