"""The CLI skeleton: version, help, exit codes of DESIGN section 7, torch-free startup, and doctor."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from wave_deploy import __version__
from wave_deploy.cli.main import COMMANDS, cli, main
from wave_deploy.errors import (
    ALL_ERRORS,
    BudgetBrokenError,
    InsufficientEvidenceError,
    InvalidInputError,
    MissingDependencyError,
    NoFeasibleModelError,
    ParityError,
    StageFailedError,
    UsageError,
)

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript", "tensorrt")

# The numbers are DESIGN section 7's, written out here so that a changed code fails this test.
DOCUMENTED_EXIT_CODES = {
    UsageError: 2,
    InvalidInputError: 3,
    MissingDependencyError: 4,
    NoFeasibleModelError: 5,
    StageFailedError: 6,
    ParityError: 7,
    BudgetBrokenError: 8,
    InsufficientEvidenceError: 9,
}


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def run_python(code: str, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


@pytest.fixture
def attach():
    """Attach test-only commands to the real ``cli`` group, and detach them afterwards."""
    added: list[str] = []

    def _attach(command: click.Command) -> None:
        cli.add_command(command)
        added.append(command.name)

    yield _attach
    for name in added:
        cli.commands.pop(name, None)


# --- version and help --------------------------------------------------------------------------------------


def test_version_prints_the_installed_package_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"wave-deploy, version {__version__}"
    assert __version__ == importlib.metadata.version("wave-deploy")


def test_console_script_runs_and_prints_the_version():
    script = Path(sys.executable).parent / "wave-deploy"
    result = subprocess.run(
        [str(script), "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


def test_help_lists_commands_and_documents_every_exit_code():
    result = run("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout
    for code in range(10):
        assert f" {code} " in result.stdout.split("Exit codes:")[1]


@pytest.mark.parametrize(
    "argv",
    [["doctor"], ["profiles"], ["profiles", "list"], ["profiles", "show"], ["profiles", "validate"]],
    ids=" ".join,
)
def test_every_command_has_help(argv):
    result = run(*argv, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Usage:" in result.stdout and "--help" in result.stdout


# --- exit codes (DESIGN section 7) through the real group -------------------------------------------------


def test_every_error_class_has_a_documented_exit_code():
    assert set(ALL_ERRORS) == set(DOCUMENTED_EXIT_CODES)


@pytest.mark.parametrize("error", list(DOCUMENTED_EXIT_CODES), ids=lambda e: e.__name__)
def test_user_error_exits_with_its_code_and_one_line(attach, error):
    @click.command("raise-it")
    def raise_it():
        raise error("the thing is wrong\n  in two lines", hint="do this instead")

    attach(raise_it)
    result = run("raise-it")
    assert result.exit_code == DOCUMENTED_EXIT_CODES[error]
    assert result.stderr == "error: the thing is wrong in two lines (do this instead)\n"
    assert "Traceback" not in result.stdout


def test_command_that_succeeds_exits_0(attach):
    @click.command("succeed")
    def succeed():
        click.echo("done")

    attach(succeed)
    result = run("succeed")
    assert (result.exit_code, result.stdout) == (0, "done\n")


def test_unexpected_exception_exits_1_with_a_traceback(attach, monkeypatch, capsys):
    @click.command("crash")
    def crash():
        raise RuntimeError("a bug in wave-deploy")

    attach(crash)
    monkeypatch.setattr(sys, "argv", ["wave-deploy", "crash"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: a bug in wave-deploy" in err


@pytest.mark.parametrize(
    "argv", [["profiles", "show"], ["--no-such-option"], ["no-such-command"]], ids=" ".join
)
def test_click_usage_error_exits_2(argv):
    result = run(*argv)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()  # one line, like every other error, pointing at --help
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(" --help')")


def test_debug_flag_shows_the_traceback_of_a_user_error():
    code = (
        "import sys, click\n"
        "from wave_deploy.cli.main import cli, main\n"
        "from wave_deploy.errors import InvalidInputError\n"
        "@cli.command('bad-input')\n"
        "def bad_input():\n"
        "    raise InvalidInputError('bad file x.yaml')\n"
        "sys.argv = ['wave-deploy'] + sys.argv[1:]\n"
        "main()\n"
    )
    plain = run_python(code, "bad-input")
    debug = run_python(code, "--debug", "bad-input")
    assert plain.returncode == debug.returncode == 3
    assert plain.stderr == "error: bad file x.yaml\n"
    assert "Traceback" in debug.stderr and debug.stderr.rstrip().endswith("error: bad file x.yaml")


# --- torch-free startup ------------------------------------------------------------------------------------

_RUN_CLI_AND_REPORT_HEAVY = (
    "import sys\n"
    "from wave_deploy.cli.main import cli\n"
    "try:\n"
    "    code = cli.main(args=sys.argv[1:], prog_name='wave-deploy', standalone_mode=False)\n"
    "finally:\n"
    f"    heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
    "    print('HEAVY=' + ','.join(heavy))\n"
)


@pytest.mark.parametrize("module", ["wave_deploy.cli", "wave_deploy.cli.main"])
def test_importing_the_cli_does_not_import_torch(module):
    result = run_python(
        f"import sys, {module}; print('HEAVY=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HEAVY="


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["profiles", "list"],
        ["profiles", "list", "--json"],
        ["profiles", "show", "jetson"],
        ["profiles", "validate", "profiles/x86-cpu.yaml"],
    ],
    ids=" ".join,
)
def test_torch_free_commands_do_not_import_heavy_packages(argv):
    result = run_python(_RUN_CLI_AND_REPORT_HEAVY, *argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="


# --- doctor ------------------------------------------------------------------------------------------------


def test_doctor_json_describes_this_environment():
    import onnxruntime
    import torch

    result = run("doctor", "--json")
    assert result.exit_code == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["python"]["version"] == platform.python_version()
    assert env["wave_deploy"]["version"] == __version__
    assert env["torch"]["version"] == torch.__version__
    assert env["torch"]["cuda_available"] == torch.cuda.is_available()
    assert len(env["torch"]["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert env["onnxruntime"]["providers"] == onnxruntime.get_available_providers()
    for name in ("torchvision", "timm", "onnx", "onnxscript"):
        assert env[name]["version"] == importlib.import_module(name).__version__
    assert env["cpu"]["logical_cores"] == os.cpu_count()
    assert set(env["tensorrt"]) >= {"installed", "version"}


def test_doctor_table_lists_each_component():
    result = run("doctor")
    assert result.exit_code == 0, result.stderr
    for component in ("python", "cpu", "torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript"):
        assert f" {component} " in result.stdout
    assert "CPUExecutionProvider" in result.stdout
    assert "tensorrt" in result.stdout


def test_doctor_does_not_load_tensorrt_without_a_cuda_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: doctor may load TensorRT here")
    # TensorRT cannot be installed on these machines; stand in an installed distribution whose import would
    # end the process, as the real runtime can do without a GPU. Doctor must read its version, not import it.
    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text("raise SystemExit('tensorrt was imported without a GPU')\n")
    dist_info = tmp_path / "tensorrt-10.3.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt\nVersion: 10.3.0\n")
    result = run_python(_RUN_CLI_AND_REPORT_HEAVY, "doctor", "--json", pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    heavy = result.stdout.strip().splitlines()[-1].removeprefix("HEAVY=").split(",")
    assert "torch" in heavy and "tensorrt" not in heavy
    report = json.loads(result.stdout.rsplit("HEAVY=", 1)[0])
    assert report["tensorrt"]["installed"] is True
    assert report["tensorrt"]["version"] == "10.3.0"
    assert report["tensorrt"]["loaded"] is False


def test_doctor_reports_a_broken_package_instead_of_crashing(monkeypatch):
    # A module whose import raises (e.g. torchvision built for another torch) is reported with its error.
    real_import = __import__("importlib").import_module

    def broken_timm(name, *args, **kwargs):
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("wave_deploy.probe.importlib.import_module", broken_timm)
    result = run("doctor", "--json")
    assert result.exit_code == 0
    timm_report = json.loads(result.stdout)["timm"]
    assert timm_report["installed"] is True and "torchvision::nms" in timm_report["error"]
