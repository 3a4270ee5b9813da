"""Headroom you can see and use (issue 18, point 5): a bank far below a profile's binding budget is named with
the size the budgets would admit, and --beyond-bank searches past the bank's sizes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

import wave_deploy
from wave_deploy.cli.main import cli
from wave_deploy.errors import UsageError
from wave_deploy.planning.headroom import FACTORS, HEADROOM_SHARE, beyond_bank, binding, headroom
from wave_deploy.planning.selection import SearchSpace, evaluate
from wave_deploy.profiles import apply_overrides, load_profile
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_bank(inspect_bank(default_bank_path()).geometry)  # depth 6 x width 128 at most


def _share(spec, profile) -> float:
    return binding(evaluate(spec, profile), profile)[1]


def test_headroom_names_the_largest_admitted_size_of_the_banks_shape(space):
    pi5 = load_profile("raspberry-pi-5")
    room = headroom(space, pi5)
    largest = space.spec(6, 128)
    assert room is not None and room["largest_in_bank"] == largest.name
    assert room["share"] == pytest.approx(_share(largest, pi5), abs=1e-4) and room["share"] < HEADROOM_SHARE
    admitted = room["admits"]
    spec = dataclasses.replace(largest, depth=admitted["depth"], embed_dim=admitted["embed_dim"],
                               num_heads=admitted["embed_dim"] // space.head_dim)  # fmt: skip
    assert evaluate(spec, pi5).feasible  # the admitted size fits every budget ...
    bigger = FACTORS[FACTORS.index(admitted["factor"]) + 1]  # ... and the next factor's does not
    depth, width = int(6 * bigger), int(128 * bigger) // 32 * 32
    assert not evaluate(
        dataclasses.replace(spec, depth=depth, embed_dim=width, num_heads=width // 32), pi5
    ).feasible
    assert admitted["name"] in room["note"] and f"--beyond-bank {admitted['factor']:g}" in room["note"]


def test_no_headroom_when_the_largest_size_uses_a_quarter_of_the_binding_budget(space):
    pi5 = load_profile("raspberry-pi-5")
    assert _share(space.spec(6, 128), pi5) < HEADROOM_SHARE  # as shipped: headroom
    # memory binds on the Pi 5: a budget the largest size uses 30% of leaves no note; 20% does
    mib = evaluate(space.spec(6, 128), pi5).memory.total_mib
    tight = apply_overrides(pi5, (f"budgets.memory_mib={mib / 0.30}",))
    loose = apply_overrides(pi5, (f"budgets.memory_mib={mib / 0.20}",))
    assert headroom(space, tight) is None
    assert headroom(space, loose)["share"] == pytest.approx(0.20, abs=1e-3)


def test_plan_says_so_in_its_notes_table_and_json():
    result = CliRunner().invoke(cli, ["plan", "--profile", "raspberry-pi-5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["headroom"]["binding_budget"] == "memory" and out["headroom"]["note"] in out["notes"]
    table = CliRunner().invoke(cli, ["plan", "--profile", "raspberry-pi-5"])
    assert "headroom: the largest size the bank serves" in " ".join(table.output.split())
    tight = CliRunner().invoke(cli, ["plan", "--profile", "raspberry-pi-5", "--set", "budgets.memory_mib=60",
                                     "--json"])  # fmt: skip
    assert tight.exit_code == 0 and json.loads(tight.stdout)["headroom"] is None


def test_beyond_bank_searches_past_the_bank_and_a_larger_factor_never_chooses_less(space):
    chosen = []
    for factor in (1.0, 1.5, 2.0):
        selection = wave_deploy.plan("raspberry-pi-5", beyond_bank=factor)
        spec = selection.chosen.spec
        assert spec.depth <= int(6 * factor) and spec.embed_dim <= 128 * factor
        chosen.append(selection.chosen.flops)
    assert chosen == sorted(chosen) and chosen[-1] > chosen[0]  # the Pi 5's budgets admit more than the bank
    assert beyond_bank(space, 2.0).max_depth == 12 and beyond_bank(space, 2.0).max_embed_dim == 256
    assert beyond_bank(space, 1.0) is space


def test_bad_beyond_bank_factors_are_usage_errors(space):
    assert CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--beyond-bank", "0.5"]).exit_code == 2
    assert CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--beyond-bank", "nan"]).exit_code == 2
    huge = dataclasses.replace(space, max_depth=200, max_embed_dim=2048)
    with pytest.raises(UsageError, match="sizes to search"):
        beyond_bank(huge, 8.0)
