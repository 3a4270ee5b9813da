"""Plans that match builds (issue 18, point 4) for every initialization: ``plan --init`` searches exactly the
sizes ``build --init`` would (the bank's, the teacher's or the default geometry, by the one rule of
pipeline.geometry_source), says where they came from, and stays torch-free without a teacher."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from _rgb224 import TEACHER_SPEC, bank_224, rgb_folder, teacher_224
from click.testing import CliRunner

import wave_deploy
from wave_deploy import data as datasets
from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.options import BuildOptions, PlanOptions
from wave_deploy.pipeline.build import _plan
from wave_deploy.pipeline.resolve import check_inputs
from wave_deploy.planning.plan import plan_inputs

PROFILE = "raspberry-pi-5"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("planinit")
    data = rgb_folder(root / "data", classes=4, per_class=3)
    return data, bank_224(root / "bank.safetensors"), teacher_224(root / "teacher.safetensors")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _build_plan(options: BuildOptions, tmp_path) -> dict:
    """What the build's plan stage chooses with ``options``: its input checks and its plan stage, as build()
    runs them (the data loaded as build loads it)."""
    checked = check_inputs([PROFILE], options)
    data = datasets.load_for_bank(options.data, in_chans=checked.sources.geometry.in_chans,
                                  img_size=checked.img_size, seed=options.seed, resize=bool(options.img_size))  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = _plan(tmp_path, checked.profiles[0], checked.sources, data, options)
    return {**out.result, "geometry_source": checked.sources.geometry_source}


CASES = {
    "random": lambda bank, teacher: {"init": "random"},
    "random-160px": lambda bank, teacher: {"init": "random", "img_size": 160},
    "random-bank": lambda bank, teacher: {"init": "random", "templates": str(bank)},
    "random-teacher": lambda bank, teacher: {"init": "random", "teacher_checkpoint": str(teacher)},
    "weight-selection": lambda bank, teacher: {
        "init": "weight-selection",
        "teacher_checkpoint": str(teacher),
    },
    "wave-bank": lambda bank, teacher: {"templates": str(bank)},
}
SOURCES = {"random": "default", "random-160px": "default", "random-bank": "bank", "random-teacher": "teacher",
           "weight-selection": "teacher", "wave-bank": "bank"}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_chooses_what_the_build_with_the_same_init_chooses(case, files, tmp_path):
    data, bank, teacher = files
    given = CASES[case](bank, teacher)
    built = _build_plan(BuildOptions(data=str(data), out=str(tmp_path), **given), tmp_path / "out")
    planned = {**given, "img_size": given.get("img_size", ())}
    selection = wave_deploy.plan(PROFILE, data=str(data), **planned)
    inputs = plan_inputs(PROFILE, PlanOptions(data=str(data), **planned))
    assert inputs.geometry_source == built["geometry_source"] == SOURCES[case]
    assert selection.chosen.spec.to_dict() == built["selection"]["chosen"]["spec"]
    frontier = [c["spec"] for c in built["selection"]["frontier"]]
    assert [c.spec.to_dict() for c in selection.frontier] == frontier
    space, build_space = inputs.space.to_dict(), built["search_space"]
    if "img_size" in given:  # plan searches a list of sizes, the build one: the same size either way
        assert (
            space.pop("img_sizes") == [given["img_size"]] and build_space.pop("img_size") == given["img_size"]
        )
        space.pop("img_size"), build_space.pop("img_sizes")
    assert space == build_space
    spec = selection.chosen.spec
    assert (spec.in_chans, spec.num_classes) == (3, 4)


def test_a_random_plan_without_bank_searches_the_default_geometry_the_dry_run_resolves(files, tmp_path):
    data, _, _ = files
    dry = run(
        "build", "--profile", PROFILE, "--init", "random", "--data", data, "--out", tmp_path, "--dry-run"
    )
    assert dry.exit_code == 0, dry.output
    resolved = json.loads(dry.stdout)
    result = run("plan", "--profile", PROFILE, "--init", "random", "--data", data, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["geometry_source"] == resolved["geometry_source"] == "default"
    assert out["bank"] is None is resolved["bank"] and out["teacher"] is None and out["init"] == "random"
    # the default geometry at 224 px (docs/decisions.md): patch 16, head size 64, up to depth 12 x width 384
    space = out["search_space"]
    assert (space["img_size"], space["patch_size"], space["head_dim"]) == (resolved["img_size"], 16, 64)
    assert (space["max_depth"], space["max_embed_dim"], space["in_chans"]) == (12, 384, 3)
    assert out["chosen"]["spec"]["patch_size"] == 16 and out["headroom"] is None
    table = run("plan", "--profile", PROFILE, "--init", "random", "--data", data)
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "geometry: default (--init random, no bank or teacher): patch 16, head size 64" in text


def test_a_weight_selection_plan_uses_the_teachers_patch_and_head_size(files, tmp_path):
    data, _, _ = files
    spec = dataclasses.replace(
        TEACHER_SPEC, depth=3, embed_dim=96, num_heads=4, patch_size=32
    )  # head size 24
    teacher = teacher_224(tmp_path / "p32.safetensors", spec)
    result = run("plan", "--profile", PROFILE, "--init", "weight-selection", "--teacher-checkpoint", teacher,
                 "--data", data, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["geometry_source"] == "teacher" and out["teacher"] == str(teacher) and out["bank"] is None
    space = out["search_space"]
    assert (space["patch_size"], space["head_dim"], space["max_depth"], space["max_embed_dim"]) == (
        32,
        24,
        3,
        96,
    )
    chosen = out["chosen"]["spec"]
    assert chosen["patch_size"] == 32 and chosen["embed_dim"] == 24 * chosen["num_heads"]
    assert {(c["spec"]["patch_size"], c["spec"]["in_chans"]) for c in out["frontier"]} == {(32, 3)}
    table = run("plan", "--profile", PROFILE, "--init", "weight-selection", "--teacher-checkpoint", teacher,
                "--data", data)  # fmt: skip
    assert f"geometry: teacher ({teacher}): patch 32, head size 24" in " ".join(table.output.split())


def test_a_teacher_of_other_channels_is_refused_by_plan_as_by_build(files, tmp_path):
    data, _, _ = files
    grey = teacher_224(tmp_path / "grey.safetensors", dataclasses.replace(TEACHER_SPEC, in_chans=1))
    args = ["--profile", PROFILE, "--init", "weight-selection", "--teacher-checkpoint", grey, "--data", data]
    plan = run("plan", *args)
    build = run("build", *args, "--out", tmp_path / "out", "--dry-run")
    assert plan.exit_code == build.exit_code == 3, (plan.output, build.output)
    assert "the teacher grey.safetensors takes grayscale" in plan.output
    assert next(line for line in plan.output.splitlines() if line.startswith("error:")) in build.output


@pytest.mark.parametrize(
    "args, says",
    [
        (["--init", "weight-selection"], "needs --teacher-checkpoint"),
        (["--teacher-arch", "vit_tiny_patch16_224"], "give both"),
        (
            ["--init", "weight-selection", "--teacher-checkpoint", "t.safetensors", "--templates", "b"],
            "no bank",
        ),
        (["--init", "random", "--objective", "accuracy"], "scores sizes sliced from a bank"),
        (["--init", "random", "--img-size", "160,224"], "give one --img-size"),
        (["--init", "random", "--in-chans", "3"], "give --img-size"),
    ],
)
def test_bad_init_options_are_usage_errors_of_plan_too(args, says):
    result = run("plan", "--profile", PROFILE, *args)
    assert result.exit_code == 2 and says in result.output, result.output


def test_the_api_refuses_them_alike():
    with pytest.raises(UsageError, match="needs --teacher-checkpoint"):
        wave_deploy.plan(PROFILE, init="weight-selection")
    with pytest.raises(UsageError, match="sliced from a bank"):
        wave_deploy.plan(PROFILE, init="random", objective="accuracy")


def test_the_refusal_of_a_bank_of_other_channels_names_what_plan_can_now_do(files):
    data, _, _ = files
    refused = run("plan", "--profile", PROFILE, "--data", data)  # the shipped bank takes grayscale
    assert refused.exit_code == 3
    assert "plan and build without a bank: --init random" in " ".join(refused.output.split())
    followed = run("plan", "--profile", PROFILE, "--data", data, "--init", "random", "--json")
    assert followed.exit_code == 0 and json.loads(followed.stdout)["task"]["in_chans"] == 3
    with pytest.raises(InvalidInputError, match="images are RGB"):
        wave_deploy.plan(PROFILE, data=str(data))
    assert wave_deploy.plan(PROFILE, data=str(data), init="random").chosen.spec.in_chans == 3


def test_plan_help_lists_the_initializations():
    text = " ".join(run("plan", "--help").output.split())
    assert "--init [wave|weight-selection|random]" in text
    assert "--teacher-checkpoint" in text and "--teacher-arch" in text
    assert "Reading it loads torch (plan too)" in text and "wave and random plan without it" in text


@pytest.mark.parametrize(
    "args",
    [["--init", "random", "--img-size", "224"], ["--init", "random", "--in-chans", "3", "--num-classes", "4",
                                                 "--img-size", "64"], ["--init", "wave"]],
    ids=" ".join,
)  # fmt: skip
def test_plan_without_a_teacher_does_not_import_torch(args):
    code = (
        "import sys\n"
        "from wave_deploy.cli.main import cli\n"
        "try:\n"
        f"    cli.main({['plan', '--profile', 'jetson', '--json', *args]!r}, standalone_mode=False)\n"
        "finally:\n"
        "    print('HEAVY=' + ','.join(m for m in ('torch', 'timm') if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["geometry_source"] == ("bank" if "wave" in args else "default")
    assert result.stderr.strip().splitlines()[-1] == "HEAVY="
