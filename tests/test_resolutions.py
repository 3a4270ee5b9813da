"""Resolution as a search axis: depth x width x image size, monotone in the budget; plan --img-size and
plan --spec with an image size, patch size and channels of its own (no bank of that geometry needed)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from _budget_sweep import monotone_choices
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE, SearchSpace, choose, select
from wave_deploy.profiles import load_profile
from wave_deploy.spec import ViTSpec, flops, param_count
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank

MULTI = dataclasses.replace(DEFAULT_SEARCH_SPACE, max_depth=4, max_embed_dim=128, img_sizes=(28, 16, 40))


def _with_latency(profile, ms):
    return profile.model_copy(update={"budgets": profile.budgets.model_copy(update={"latency_ms": ms})})


def test_space_enumerates_depth_width_and_each_resolution():
    specs = MULTI.specs()
    assert MULTI.resolutions() == [16, 28, 40]
    assert len(specs) == 3 * 4 * 4 == len(set(specs))
    assert {(s.img_size, s.depth, s.embed_dim) for s in specs} == {
        (r, d, w) for r in (16, 28, 40) for d in range(1, 5) for w in (32, 64, 96, 128)
    }
    assert MULTI.to_dict()["img_sizes"] == [16, 28, 40]
    assert DEFAULT_SEARCH_SPACE.resolutions() == [28] and DEFAULT_SEARCH_SPACE.to_dict()["img_sizes"] == [28]


@pytest.mark.parametrize("sizes", [(30,), (28, 28), (0,), (28, -4)])
def test_space_refuses_sizes_that_are_not_distinct_multiples_of_the_patch(sizes):
    with pytest.raises(InvalidInputError):
        DEFAULT_SEARCH_SPACE.with_resolutions(sizes)


def test_multi_resolution_choice_is_monotone_in_the_latency_budget_and_uses_the_resolution_axis():
    profile = load_profile("raspberry-pi-5")
    base = select(profile, MULTI)
    lat = sorted(c.latency_at_budget_ms for c in base.candidates)
    chosen = monotone_choices(lambda ms: select(_with_latency(profile, ms), MULTI), lat, 16)
    sizes_chosen = {c.spec.img_size for c in chosen}
    assert base.chosen.spec == MULTI.spec(4, 128, img_size=40)  # loosest: deepest, widest, largest images
    assert len(sizes_chosen) >= 2  # the budget trades resolution as well as depth and width


def test_ties_across_resolutions_break_deterministically_towards_smaller_images():
    profile = load_profile("x86-cpu")
    sel = select(profile, MULTI)
    a = next(c for c in sel.candidates if c.spec == MULTI.spec(2, 64, img_size=16))
    b = next(c for c in sel.candidates if c.spec == MULTI.spec(2, 64, img_size=40))
    tied = [dataclasses.replace(c, objective=1.0, flops=10, params=5, latency=a.latency) for c in (a, b)]
    for seed in range(4):
        order = list(tied)
        random.Random(seed).shuffle(order)
        assert choose(order).spec.img_size == 16


def test_plan_cli_searches_the_given_image_sizes():
    args = ["plan", "--profile", "x86-cpu", "--img-size", "28", "--img-size", "14,56"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    bank = SearchSpace.from_bank(inspect_bank(default_bank_path()).geometry)
    assert data["search_space"]["img_sizes"] == [14, 28, 56]
    assert data["n_candidates"] == 3 * len(bank.specs())
    assert data["chosen"]["spec"]["img_size"] == 56  # nothing binds on the 28 px bank's sizes
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and " px " in text.output


def test_plan_spec_predicts_a_deit_tiny_shaped_model_without_a_224_px_bank():
    args = ["plan", "--profile", "x86-cpu", "--spec", "depth=12,embed_dim=192,img_size=224,patch_size=16"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    bank = inspect_bank(default_bank_path()).geometry
    spec = ViTSpec(
        depth=12,
        embed_dim=192,
        num_heads=192 // bank.head_dim,
        mlp_ratio=bank.mlp_ratio,
        patch_size=16,
        img_size=224,
        in_chans=bank.in_chans,
        num_classes=bank.num_classes,
    )
    assert data["spec"] == spec.to_dict()
    assert data["flops_per_image"] == flops(spec) and data["params"] == param_count(spec)
    assert (
        data["latency"]["latency_ms"] > 0 and data["memory"]["total_mib"] > data["memory"]["weights_mib"] > 0
    )
    rgb = CliRunner().invoke(cli, [*args[:-1], args[-1] + ",in_chans=3", "--json"])
    assert json.loads(rgb.output)["spec"]["in_chans"] == 3
    assert 1.25e9 < json.loads(rgb.output)["macs_per_image"] < 1.27e9  # DeiT-Tiny: 1.26 GMACs
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and "224 px, patch 16" in text.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--spec", "depth=2,embed_dim=64,img_size=100,patch_size=16"],
            2,
            "not a multiple of the patch size",
        ),
        (["--spec", "depth=2,embed_dim=64,img_size=big"], 2, "img_size must be an integer"),
        (["--spec", "depth=2,embed_dim=64,patch_size=0"], 3, "patch_size"),
        (["--spec", "depth=2,embed_dim=64", "--img-size", "28,56"], 2, "at most one --img-size"),
        (["--img-size", "30"], 2, "not a multiple of the patch size"),
        (["--img-size", "28,x"], 2, "expected integers"),
        (["--img-size", "28,28"], 2, "given twice"),
        (["--img-size", "0"], 2, "not in 1..4096"),
        (["--img-size", "4200"], 2, "not in 1..4096"),
    ],
)
def test_plan_rejects_bad_image_geometry_with_one_line_and_its_exit_code(args, code, message):
    result = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", *args])
    assert result.exit_code == code, result.output
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output
