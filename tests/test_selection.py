"""Selection: budgets reject with reasons, tighter budgets never pick larger models, exit 5 and the plan CLI."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import yaml
from _budget_sweep import monotone_choices
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError, NoFeasibleModelError, UsageError
from wave_deploy.planning.selection import (
    DEFAULT_SEARCH_SPACE,
    SearchSpace,
    choose,
    evaluate,
    pareto_frontier,
    select,
)
from wave_deploy.profiles import builtin_profiles_dir, list_profiles, load_profile
from wave_deploy.spec import flops

SMALL_SPACE = dataclasses.replace(DEFAULT_SEARCH_SPACE, max_depth=6, max_embed_dim=192)


def _with_budgets(profile, **budgets):
    return profile.model_copy(update={"budgets": profile.budgets.model_copy(update=budgets)})


def test_search_space_enumerates_depths_and_lcm_width_multiples():
    space = SearchSpace(
        img_size=28,
        patch_size=4,
        in_chans=1,
        num_classes=10,
        mlp_ratio=4.0,
        w=32,
        head_dim=48,
        max_depth=3,
        max_embed_dim=300,
    )
    assert space.widths() == [96, 192, 288]  # lcm(32, 48) = 96
    specs = space.specs()
    assert len(specs) == 9
    assert all(s.num_heads * 48 == s.embed_dim for s in specs)
    assert {s.depth for s in specs} == {1, 2, 3}
    assert len(DEFAULT_SEARCH_SPACE.specs()) == 12 * 12


def test_search_space_rejects_bad_geometry():
    with pytest.raises(InvalidInputError):
        SearchSpace(
            img_size=28,
            patch_size=4,
            in_chans=1,
            num_classes=10,
            mlp_ratio=4.0,
            w=32,
            head_dim=32,
            max_depth=0,
            max_embed_dim=64,
        )
    with pytest.raises(InvalidInputError, match="width step"):
        SearchSpace(
            img_size=28,
            patch_size=4,
            in_chans=1,
            num_classes=10,
            mlp_ratio=4.0,
            w=32,
            head_dim=48,
            max_depth=2,
            max_embed_dim=64,
        )


@pytest.mark.parametrize("name", ["x86-cpu", "jetson-orin-nano-8gb", "raspberry-pi-5"])
def test_tighter_latency_budget_never_selects_more_flops(name):
    profile = load_profile(name)
    base = select(profile, SMALL_SPACE)
    lat = sorted(c.latency_at_budget_ms for c in base.candidates)
    chosen = monotone_choices(lambda ms: select(_with_budgets(profile, latency_ms=ms), SMALL_SPACE), lat, 12)
    assert len(chosen) >= 2  # budgets from the fastest candidate up are feasible


def test_tighter_memory_budget_never_selects_more_flops():
    profile = load_profile("x86-cpu")
    mem = sorted(c.memory.total_mib for c in select(profile, SMALL_SPACE).candidates)
    previous = None
    for budget in sorted(set(mem), reverse=True):
        chosen = select(_with_budgets(profile, memory_mib=budget), SMALL_SPACE).chosen
        assert chosen.memory.total_mib <= budget
        if previous is not None:
            assert chosen.flops <= previous
        previous = chosen.flops


def test_chosen_is_the_feasible_candidate_with_most_flops():
    profile = _with_budgets(load_profile("x86-cpu"), latency_ms=1.0)
    sel = select(profile, SMALL_SPACE)
    feasible = [c for c in sel.candidates if c.feasible]
    assert 0 < len(feasible) < len(sel.candidates)
    assert sel.chosen.flops == max(c.flops for c in feasible)


def test_every_rejected_candidate_has_a_reason_naming_the_broken_budget():
    profile = _with_budgets(load_profile("jetson"), latency_ms=0.8, memory_mib=160.0, build_memory_mib=1300.0)
    sel = select(profile, SMALL_SPACE)
    for c in sel.candidates:
        broken_latency = c.latency_at_budget_ms > 0.8
        broken_memory = c.memory.total_mib > 160.0
        broken_build = c.memory.build_peak_mib > 1300.0
        assert c.feasible == (not (broken_latency or broken_memory or broken_build))
        assert (
            any(r.startswith("latency") and "> budget 0.8 ms (p99" in r for r in c.reasons) == broken_latency
        )
        assert any(r.startswith("memory") for r in c.reasons) == broken_memory
        assert any(r.startswith("build memory") for r in c.reasons) == broken_build


def test_selection_is_deterministic_and_independent_of_candidate_order():
    profile = _with_budgets(load_profile("x86-cpu"), latency_ms=2.0)
    first, second = select(profile, SMALL_SPACE), select(profile, SMALL_SPACE)
    assert first.to_dict() == second.to_dict()
    shuffled = list(first.candidates)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert choose(shuffled) is first.chosen
        assert pareto_frontier(shuffled) == first.frontier


def test_ties_break_towards_lower_latency_then_fewer_params_in_any_order():
    import dataclasses

    profile = load_profile("x86-cpu")
    a, b = (evaluate(SMALL_SPACE.spec(d, w), profile) for d, w in ((2, 64), (1, 96)))
    a, b = (dataclasses.replace(c, objective=1.0, flops=10) for c in (a, b))  # tie on objective and FLOPs
    faster = a if a.latency.latency_ms < b.latency.latency_ms else b
    assert choose([a, b]) is faster and choose([b, a]) is faster
    same_latency = dataclasses.replace(b, latency=a.latency)
    smaller = a if a.params < b.params else same_latency
    assert choose([a, same_latency]) is smaller and choose([same_latency, a]) is smaller


def test_frontier_is_pareto_optimal_in_flops_and_latency():
    sel = select(load_profile("x86-cpu"), SMALL_SPACE)
    front = sel.frontier
    lat = [c.latency.latency_ms for c in front]
    assert lat == sorted(lat) and [c.flops for c in front] == sorted(c.flops for c in front)
    for c in sel.candidates:  # nothing off the frontier beats a frontier point on both axes
        for f in front:
            assert not (c.flops > f.flops and c.latency.latency_ms < f.latency.latency_ms)
    for c in sel.candidates:  # every candidate is dominated by (or is) some frontier point
        assert any(f.flops >= c.flops and f.latency.latency_ms <= c.latency.latency_ms for f in front)


def test_accuracy_objective_prefers_estimated_accuracy_and_enforces_min_accuracy():
    profile = _with_budgets(load_profile("x86-cpu"), min_accuracy=0.9)
    table = {(2, 64): 0.95, (6, 192): 0.85, (3, 128): 0.93}
    sel = select(profile, SMALL_SPACE, objective="accuracy", accuracy=table)
    assert (sel.chosen.spec.depth, sel.chosen.spec.embed_dim) == (2, 64)
    rejected = next(c for c in sel.candidates if (c.spec.depth, c.spec.embed_dim) == (6, 192))
    assert rejected.reasons == ("accuracy 0.850 < minimum 0.9",)
    with pytest.raises(UsageError):
        select(profile, SMALL_SPACE, objective="accuracy")


def test_no_feasible_model_names_closest_candidates_and_their_broken_budgets():
    profile = _with_budgets(load_profile("x86-cpu"), latency_ms=0.001)
    with pytest.raises(NoFeasibleModelError) as info:
        select(profile, SMALL_SPACE)
    message = info.value.one_line()
    assert info.value.exit_code == 5
    assert "closest" in message and "vit_d32_l1_h1" in message and "latency" in message


def test_selection_notes_that_budgets_were_set_for_another_input_size():
    sel = select(load_profile("x86-cpu"), SMALL_SPACE)
    assert any("224 px" in n and "28 px" in n for n in sel.notes)


def _write_profile(tmp_path: Path, **budgets) -> Path:
    data = yaml.safe_load((builtin_profiles_dir() / "x86-cpu.yaml").read_text())
    data["budgets"].update(budgets)
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_cli_exits_5_with_closest_candidates_for_an_impossible_budget(tmp_path):
    path = _write_profile(tmp_path, latency_ms=0.0001)
    result = CliRunner().invoke(cli, ["plan", "--profile", str(path)])
    assert result.exit_code == 5
    assert "closest" in result.output and "latency" in result.output


def test_plan_cli_picks_a_spec_for_every_shipped_profile():
    for profile in list_profiles():
        result = CliRunner().invoke(cli, ["plan", "--profile", profile.name, "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["profile"] == profile.name and data["chosen"]["feasible"]
        assert data["chosen"]["latency"]["source"] == "analytic" and data["frontier"]


def test_plan_cli_writes_a_png_plot(tmp_path):
    out = tmp_path / "frontier.png"
    result = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_cli_predicts_one_given_spec():
    result = CliRunner().invoke(
        cli, ["plan", "--profile", "x86-cpu", "--spec", "depth=3,embed_dim=96,batch=2", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    from wave_deploy.wave.bank import TemplateBank, default_bank_path

    spec = SearchSpace.from_bank(TemplateBank.load(default_bank_path()).geometry).spec(3, 96)
    assert data["spec"] == spec.to_dict() and data["batch"] == 2
    assert data["flops_per_image"] == flops(spec)
    assert data["latency"]["source"] == "analytic" and data["latency"]["batch"] == 2
    assert data["memory"]["total_mib"] > data["memory"]["weights_mib"] > 0


def test_plan_cli_candidates_come_from_the_given_template_bank(tmp_path):
    from wave_deploy.wave.bank import TemplateBank
    from wave_deploy.wave.geometry import BankGeometry

    geom = BankGeometry.create(
        img_size=28,
        patch_size=14,
        in_chans=1,
        num_classes=10,
        w=16,
        head_dim=16,
        mlp_ratio=4.0,
        max_depth=2,
        max_embed_dim=48,
    )
    bank = TemplateBank.init_random(geom).save(tmp_path / "bank.safetensors")
    result = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--templates", str(bank), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["search_space"] == SearchSpace.from_bank(geom).to_dict()
    assert data["n_candidates"] == 2 * 3  # depths 1..2 x widths 16, 32, 48
    assert data["chosen"]["spec"]["patch_size"] == 14


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("depth=3", 2),  # embed_dim missing
        ("depth=3,embed_dim=x", 2),
        ("depth=3,embed_dim=64,width=2", 2),
        ("depth=3;embed_dim=64", 2),
        ("depth=0,embed_dim=64", 3),
        ("depth=3,embed_dim=64,num_heads=3", 3),  # 64 not divisible by 3
        ("depth=3,embed_dim=100", 3),  # not a multiple of head_dim
        ("depth=3,embed_dim=64,batch=0", 3),
    ],
)
def test_plan_cli_rejects_a_bad_spec_with_its_exit_code(spec, code):
    result = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--spec", spec])
    assert result.exit_code == code, result.output
    assert "error:" in result.output


def test_plan_with_set_budgets_picks_ever_smaller_models_as_the_latency_budget_tightens():
    """--set budgets.latency_ms makes the shipped bank's selection bind: the choice shrinks monotonically."""
    chosen = []
    for budget in (5.0, 2.5, 1.5, 1.0, 0.7, 0.5):
        args = ["plan", "--profile", "raspberry-pi-5", "--set", f"budgets.latency_ms={budget}", "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        c = json.loads(result.stdout)["chosen"]
        assert c["latency_at_budget_ms"] <= budget
        chosen.append(c["flops"])
    assert chosen == sorted(chosen, reverse=True) and len(set(chosen)) >= 4  # the budget really binds
    tight = ["plan", "--profile", "raspberry-pi-5", "--set", "budgets.latency_ms=0.05"]
    assert CliRunner().invoke(cli, tight).exit_code == 5  # below the smallest size: nothing fits
