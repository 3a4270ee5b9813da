"""One options model: the typed models of wave_deploy.options make the CLI flags and the API's keyword
arguments, so that both take the same options with the same defaults, bounds and errors."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import click
import pytest
from _tiny_mnist import SPEC, digit_folder, trained_state
from click.testing import CliRunner

import wave_deploy
from wave_deploy.cli.main import cli
from wave_deploy.cli.options import option_for
from wave_deploy.errors import EXIT_USAGE, ParityError, UsageError
from wave_deploy.options import BuildOptions, ExportOptions, InitOptions, PlanOptions, parse
from wave_deploy.training.folding import save_folded

COMMANDS = {"build": BuildOptions, "init": InitOptions, "export": ExportOptions, "plan": PlanOptions}
API = {
    "build": ("profiles",),
    "init": ("out",),
    "export": ("checkpoint", "profile", "out"),
    "plan": ("profile",),
}


def _command(name: str) -> click.Command:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    return command


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_a_job_model_is_a_flag_of_its_command_with_the_same_default_and_bounds(name):
    model, params = COMMANDS[name], {p.name: p for p in _command(name).params}
    for field_name, field in model.model_fields.items():
        param = params[field_name]  # named like the field: the command passes it to the model as is
        assert isinstance(param, click.Option)
        assert param.required == field.is_required(), field_name
        if not field.is_required():
            default = param.default if not param.multiple else tuple(param.default or ())
            assert default == field.default, field_name
        assert _click_bounds(param.type) == _field_bounds(field), field_name
        assert param.help == field.description, field_name


def _field_bounds(field) -> dict:
    """A field's ge/gt/le/lt as (min, min_open, max, max_open): what its click range must say."""
    out = {"min": None, "min_open": False, "max": None, "max_open": False}
    for m in field.metadata:
        for attr, (key, is_open) in {"ge": ("min", False), "gt": ("min", True), "le": ("max", False),
                                     "lt": ("max", True)}.items():  # fmt: skip
            if hasattr(m, attr):
                out[key], out[f"{key}_open"] = getattr(m, attr), is_open
    return out


def _click_bounds(param_type) -> dict:
    if not isinstance(param_type, (click.IntRange, click.FloatRange)):
        return {"min": None, "min_open": False, "max": None, "max_open": False}
    return {k: getattr(param_type, k) for k in ("min", "min_open", "max", "max_open")}


def test_the_bounds_comparison_sees_an_open_bound_and_a_missing_one():
    field = BuildOptions.model_fields["scaler_epochs"]  # gt=0, le=MAX_EPOCHS
    assert _field_bounds(field) == {"min": 0, "min_open": True, "max": 1000.0, "max_open": False}
    assert _click_bounds(click.FloatRange(0, 1000.0)) != _field_bounds(field)  # min_open lost
    assert _click_bounds(click.FloatRange(0, min_open=True)) != _field_bounds(field)  # max lost
    assert _click_bounds(click.STRING) != _field_bounds(field)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_api_takes_exactly_the_models_options_as_keyword_arguments(name):
    signature = inspect.signature(getattr(wave_deploy, name))
    leading = [p.name for p in signature.parameters.values() if p.kind is not p.KEYWORD_ONLY]
    keywords = {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
    model = COMMANDS[name]
    assert tuple(leading) == API[name]
    assert list(keywords) == list(model.model_fields)
    for field_name, field in model.model_fields.items():
        expected = inspect.Parameter.empty if field.is_required() else field.default
        assert keywords[field_name] == expected
        assert field_name in getattr(wave_deploy, name).__doc__  # help() lists every option


def test_a_bad_or_unknown_api_option_is_a_usage_error_naming_it():
    with pytest.raises(UsageError, match=r"build: option scaler_epochs: .*greater than 0") as bad:
        parse(BuildOptions, {"scaler_epochs": 0}, "build")
    assert bad.value.exit_code == EXIT_USAGE
    with pytest.raises(UsageError, match="unknown option.*steps"):
        wave_deploy.build("x86-cpu", steps=3)
    with pytest.raises(UsageError, match=r"plan: option img_size: .*given twice"):
        wave_deploy.plan("x86-cpu", img_size=[28, 28])
    with pytest.raises(UsageError, match="expected integers"):
        parse(PlanOptions, {"img_size": ("28,x",)}, "plan")
    # the command line gives the same value the same way: a comma list, repeatable
    assert parse(PlanOptions, {"img_size": ("28,56", "84")}, "plan").img_size == (28, 56, 84)
    assert parse(PlanOptions, {"img_size": 56}, "plan").img_size == (56,)


def test_the_api_plans_at_the_image_sizes_it_is_given():
    one = wave_deploy.plan("x86-cpu", img_size=56)
    several = wave_deploy.plan("x86-cpu", img_size=[28, 56])
    assert one.chosen.spec.img_size == 56
    assert {c.spec.img_size for c in several.candidates} == {28, 56}
    with pytest.raises(UsageError, match="not a multiple of the patch size"):
        wave_deploy.plan("x86-cpu", img_size=30)
    cli_result = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--img-size", "30"])
    assert cli_result.exit_code == EXIT_USAGE and "not a multiple of the patch size" in cli_result.output


def test_build_dry_run_prints_the_resolved_options_and_trains_nothing(tmp_path):
    out = tmp_path / "art"
    result = CliRunner().invoke(
        cli, ["build", "--profile", "jetson", "--out", str(out), "--set", "budgets.latency_ms=3", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.stdout)
    assert resolved["dry_run"] is True and [p["name"] for p in resolved["profiles"]] == [
        "jetson-orin-nano-8gb"
    ]
    assert resolved["profiles"][0]["overrides"] == ["budgets.latency_ms=3"]
    assert (
        resolved["options"]
        == BuildOptions(out=str(out), profile_overrides=("budgets.latency_ms=3",)).resolved()
    )
    assert not out.exists()  # nothing written, nothing trained
    bad = CliRunner().invoke(
        cli, ["build", "--profile", "jetson", "--set", "budgets.latency_ms=-1", "--dry-run"]
    )
    assert bad.exit_code == 3  # the same checks as a build


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """An ImageFolder of real MNIST validation digits 0-3 (the classes the tiny model's head knows)."""
    return digit_folder(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_folded(path, trained_state(), SPEC, {})
    return path


def test_the_export_api_takes_data_and_applies_the_commands_precision_gate(
    tmp_path, checkpoint, digits, impossible_accuracy_gate
):
    summary = wave_deploy.export(checkpoint, "x86-cpu", tmp_path / "a", data=str(digits), exporter="legacy")
    assert summary["onnx"]["validation_source"] == "given validation data"
    assert summary["onnx"]["calibration_source"].endswith("given training images")
    text = (Path(__file__).resolve().parents[1] / "profiles" / "x86-cpu.yaml").read_text()
    text = text.replace("precision: fp32", "precision: int8")
    strict = tmp_path / "strict.yaml"
    strict.write_text(text.replace("name: x86-cpu", "name: strict-cpu"))
    impossible_accuracy_gate()  # a profile cannot ask for a gain (max_accuracy_drop_points >= 0)
    with pytest.raises(ParityError, match="failed its accuracy gate") as gate:
        wave_deploy.export(checkpoint, strict, tmp_path / "b", data=str(digits), exporter="legacy")
    assert gate.value.exit_code == 7
    assert json.loads((tmp_path / "b" / "export.json").read_text())["onnx"]["chosen_passed"] is False


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("plan", ["--calibration"], {"calibration": None}),
        ("build", ["--init", "weight-selection", "--teacher-checkpoint"], {"init": "weight-selection", "teacher_checkpoint": None}),
    ],
)  # fmt: skip
def test_a_directory_for_a_file_option_is_the_same_usage_error_from_the_cli_and_the_api(
    tmp_path, name, args, kwargs
):
    field = next(k for k, v in kwargs.items() if v is None)
    dry_run = ["--dry-run"] if name == "build" else []  # (a refused build touches no directory then)
    cli_result = CliRunner().invoke(cli, [name, "--profile", "jetson", *args, str(tmp_path), *dry_run])
    with pytest.raises(UsageError) as api_error:
        getattr(wave_deploy, name)("jetson", **{**kwargs, field: str(tmp_path)})
    assert cli_result.exit_code == api_error.value.exit_code == EXIT_USAGE, cli_result.output
    assert f"error: {api_error.value.one_line()}" in cli_result.stderr
    assert "is a directory" in api_error.value.one_line()


@pytest.mark.parametrize(
    ("path", "flag", "model", "field"),
    [
        (["calibrate"], "--exporter", BuildOptions, "exporter"),
        (["calibrate"], "--templates", BuildOptions, "templates"),
        (["calibrate"], "--img-size", BuildOptions, "img_size"),
        (["calibrate"], "--in-chans", PlanOptions, "in_chans"),
        (["profiles", "show"], "--set", PlanOptions, "profile_overrides"),
    ],
)
def test_options_of_commands_without_a_job_model_are_the_models_own(path, flag, model, field):
    command = _command(path[0])
    for name in path[1:]:
        command = command.get_command(click.Context(command), name)
    param = next(p for p in command.params if flag in p.opts)
    generated = option_for(model, field)(lambda: None).__click_params__[0]
    assert type(param.type) is type(generated.type) and param.multiple == generated.multiple
    assert _click_bounds(param.type) == _field_bounds(model.model_fields[field])
    assert getattr(param.type, "choices", None) == getattr(generated.type, "choices", None)
    assert param.default == generated.default and param.metavar == generated.metavar


def test_templates_build_bounds_sizes_by_the_one_image_size_limit():
    from wave_deploy.spec import IMG_SIZE_MAX

    build = _command("templates").get_command(click.Context(cli), "build")
    sizes = {p.name: p.type for p in build.params if p.name in ("img_size", "patch_size", "head_dim", "w")}
    assert len(sizes) == 4 and all(t.max == IMG_SIZE_MAX for t in sizes.values())
