"""The Python API (wave_deploy.plan / init / export / build): the same results as the commands, real runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from _banks import mnist_bank_file
from click.testing import CliRunner

import wave_deploy
from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError, NoFeasibleModelError, UsageError
from wave_deploy.training.folding import load_folded_file
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.init import init_wave_model


def test_import_wave_deploy_loads_no_heavy_package():
    code = (
        "import sys, wave_deploy\n"
        "heavy = [m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert {"plan", "init", "build", "export"} <= set(wave_deploy.__all__)
    for name in ("plan", "init", "build", "export"):
        assert getattr(wave_deploy, name).__doc__


@pytest.mark.parametrize("profile", ["jetson", "x86-cpu"])
def test_plan_chooses_what_the_plan_command_chooses(profile):
    selection = wave_deploy.plan(profile)
    result = CliRunner().invoke(cli, ["plan", "--profile", profile, "--json"])
    assert result.exit_code == 0, result.output
    command = json.loads(result.stdout)
    assert selection.chosen.spec.to_dict() == command["chosen"]["spec"]
    fitting = [c.to_dict() for c in selection.candidates if c.feasible]
    # the command also lists every size that fits
    assert json.loads(json.dumps(fitting)) == command["fitting"]
    # ... and the task it planned for (the API's Selection has the sizes, whose specs carry it)
    assert command["task"] == {"in_chans": 1, "num_classes": 10, "source": "the bank's own task"}
    # ... and where its sizes came from (build --dry-run's names)
    assert (command["init"], command["geometry_source"], command["teacher"]) == ("wave", "bank", None)
    plan_only = ("search_space", "plot", "fitting", "task", "init", "geometry_source", "bank", "teacher")
    command = {k: v for k, v in command.items() if k not in plan_only}
    assert json.loads(json.dumps(selection.to_dict())) == command


def test_plan_raises_the_library_errors():
    with pytest.raises(NoFeasibleModelError):
        wave_deploy.plan("x86-cpu", profile_overrides=["budgets.latency_ms=0.000001"])
    with pytest.raises(InvalidInputError):
        wave_deploy.plan("no-such-profile")


@pytest.fixture(scope="module")
def initialized(tmp_path_factory):
    out = tmp_path_factory.mktemp("init")
    record = wave_deploy.init(out, depth=1, embed_dim=32, scaler_steps=0, seed=3)
    return out, record


def test_init_writes_the_sliced_model_of_the_shipped_bank(initialized):
    out, record = initialized
    assert record["spec"]["depth"] == 1 and record["spec"]["embed_dim"] == 32
    assert json.loads((out / "init.json").read_text()) == json.loads(json.dumps(record))
    model, spec, _ = load_folded_file(out / "model.safetensors")  # strict load into timm
    wave = init_wave_model(TemplateBank.load(default_bank_path()), spec, "aux").eval()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x), wave(x), rtol=0, atol=1e-5)


def test_init_rejects_a_size_the_bank_cannot_make_and_writes_nothing(tmp_path):
    with pytest.raises(InvalidInputError, match="not a multiple"):
        wave_deploy.init(tmp_path / "o", depth=1, embed_dim=40)
    assert not (tmp_path / "o").exists()


def test_export_writes_a_parity_checked_onnx_and_returns_export_json(initialized, tmp_path):
    out, _ = initialized
    summary = wave_deploy.export(out / "model.safetensors", "x86-cpu", tmp_path / "exp")
    assert (tmp_path / "exp" / "model.onnx").is_file()
    parity = summary["onnx"]["parity"]
    assert parity["max_abs_err"] <= parity["limit"] <= 1e-4
    assert json.loads((tmp_path / "exp" / "export.json").read_text()) == json.loads(json.dumps(summary))
    with pytest.raises(InvalidInputError, match="does not exist"):
        wave_deploy.export(tmp_path / "missing.safetensors", "x86-cpu", tmp_path / "exp2")


def test_build_runs_the_pipeline_and_returns_the_written_report(tmp_path):
    bank = mnist_bank_file(tmp_path / "bank")
    fast = {"scaler_steps": 2, "dense_steps": 3, "batch_size": 32, "bench_iterations": 5}
    results = wave_deploy.build("x86-cpu", templates=str(bank), out=str(tmp_path / "art"), **fast)
    assert [r.profile for r in results] == ["x86-cpu"]
    report_file = tmp_path / "art" / "x86-cpu" / "report.json"
    assert results[0].report == json.loads(report_file.read_text())
    assert results[0].verdict in ("pass", "fail")
    with pytest.raises(UsageError, match="unknown option"):
        wave_deploy.build("x86-cpu", steps=3)


@pytest.mark.parametrize("profiles", [[], ()])
def test_build_without_a_profile_is_the_command_lines_usage_error(profiles, tmp_path):
    with pytest.raises(UsageError, match="at least one profile") as error:
        wave_deploy.build(profiles, out=str(tmp_path / "out"))
    assert error.value.exit_code == 2
    assert not (tmp_path / "out").exists()
    assert CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "out")]).exit_code == 2
