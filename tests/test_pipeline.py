"""`wave-deploy build`: caching, resumption after SIGKILL, determinism and the exit-code contract."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _banks import mnist_bank_file
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.fileio import sha256_file
from wave_deploy.profiles import load_profile

FAST = ["--scaler-steps", "2", "--dense-steps", "3", "--batch-size", "32", "--bench-iterations", "5"]


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> Path:
    """A small bank for MNIST geometry (28 px, patch 7) with random templates and auxiliary scalers."""
    return mnist_bank_file(tmp_path_factory.mktemp("bank"))


def _build(bank_path, out, *extra, profile="jetson"):
    args = [
        "build",
        "--profile",
        profile,
        "--templates",
        str(bank_path),
        "--out",
        str(out),
        "--json",
        *FAST,
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def _manifest(dev: Path) -> dict:
    return json.loads((dev / "manifest.json").read_text())


def _assert_hash_consistent(dev: Path) -> None:
    for stage in _manifest(dev)["stages"]:
        for rel, digest in stage["outputs"].items():
            assert sha256_file(dev / rel) == digest, rel


def test_build_writes_every_artifact_and_a_rerun_reuses_every_stage(bank_path, tmp_path):
    first = _build(bank_path, tmp_path)
    assert first.exit_code == 0, first.output
    dev = tmp_path / "jetson-orin-nano-8gb"
    for rel in (
        "model.safetensors",
        "model.onnx",
        "model.fp16.onnx",
        "bundle/run_on_device.py",
        "report.json",
        "report.md",
        "plots/frontier.png",
        "plots/latency.png",
        "manifest.json",
    ):
        assert (dev / rel).is_file(), rel
    summary = json.loads(first.stdout)["devices"][0]
    assert summary["verdict"] == "pass" and summary["spec"].startswith("vit_d32_l2")
    assert not any(s["reused"] for s in summary["stages"])
    _assert_hash_consistent(dev)
    manifest = _manifest(dev)
    assert manifest["versions"]["torch"] and manifest["config"]["options"]["seed"] == 0

    again = _build(bank_path, tmp_path)
    assert again.exit_code == 0, again.output
    assert all(s["reused"] for s in json.loads(again.stdout)["devices"][0]["stages"])

    changed = _build(bank_path, tmp_path, "--dense-steps", "4")
    reused = {s["name"]: s["reused"] for s in json.loads(changed.stdout)["devices"][0]["stages"]}
    assert reused == {"plan": True, "train": False, "export": False, "bench": False, "report": False}


def test_the_same_command_gives_a_byte_identical_model_onnx(bank_path, tmp_path):
    for out in ("a", "b"):
        result = _build(bank_path, tmp_path / out)
        assert result.exit_code == 0, result.output
    a, b = (tmp_path / x / "jetson-orin-nano-8gb" / "model.onnx" for x in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()


def test_a_build_killed_midway_completes_on_rerun_with_consistent_outputs(bank_path, tmp_path):
    args = [
        sys.executable,
        "-m",
        "wave_deploy.cli.main",
        "-q",
        "build",
        "--profile",
        "x86-cpu",
        "--templates",
        str(bank_path),
        "--out",
        str(tmp_path),
        "--scaler-steps",
        "40",
        "--dense-steps",
        "60",
        "--batch-size",
        "32",
        "--bench-iterations",
        "5",
    ]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    dev = tmp_path / "x86-cpu"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once planning is done and training has started checkpointing
        if list(tmp_path.glob(".cache/train-*/*/checkpoint.pt")):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (dev / "report.json").exists()
    assert not list(tmp_path.rglob("*.part"))  # no half-written file at a final path... nor left beside one
    rerun = subprocess.run(
        args, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=False
    )
    assert rerun.returncode == 0, rerun.stderr
    _assert_hash_consistent(dev)
    assert json.loads((dev / "report.json").read_text())["verdict"] == "pass"


def _profile_copy(tmp_path, **budget_changes) -> Path:
    data = yaml.safe_load(Path(load_profile("x86-cpu").source_file).read_text())
    data["budgets"].update(budget_changes)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_model_below_the_accuracy_budget_exits_8_after_writing_the_report(bank_path, tmp_path):
    profile = _profile_copy(tmp_path, min_accuracy=0.99)
    result = _build(bank_path, tmp_path / "out", profile=str(profile))
    assert result.exit_code == 8, result.output
    report = json.loads((tmp_path / "out" / "x86-cpu" / "report.json").read_text())
    assert report["verdict"] == "fail" and report["failed_budgets"] == ["accuracy"]
    ok = _build(bank_path, tmp_path / "out", "--no-fail-on-budget", profile=str(profile))
    assert ok.exit_code == 0


def test_set_changes_a_budget_for_one_build_and_the_report_records_it(bank_path, tmp_path):
    out = tmp_path / "out"
    strict = _build(bank_path, out, "--set", "budgets.min_accuracy=0.99", profile="x86-cpu")
    assert strict.exit_code == 8, strict.output
    report = json.loads((out / "x86-cpu" / "report.json").read_text())
    assert report["profile"]["overrides"] == ["budgets.min_accuracy=0.99"]
    assert report["budgets"]["accuracy"]["min"] == 0.99 and report["failed_budgets"] == ["accuracy"]
    assert "`budgets.min_accuracy=0.99`" in (out / "x86-cpu" / "report.md").read_text()

    plain = _build(bank_path, out, profile="x86-cpu")  # the profile's own budgets again
    assert plain.exit_code == 0, plain.output
    reused = {s["name"]: s["reused"] for s in json.loads(plain.stdout)["devices"][0]["stages"]}
    assert reused["train"] and not reused["report"]  # a budget does not change the trained model
    report = json.loads((out / "x86-cpu" / "report.json").read_text())
    assert report["profile"]["overrides"] == [] and report["budgets"]["accuracy"] is None
    assert "set for this build" not in (out / "x86-cpu" / "report.md").read_text()
    _assert_hash_consistent(out / "x86-cpu")

    same = load_profile("x86-cpu").budgets.latency_ms  # a setting that changes no value is still recorded
    noop = _build(bank_path, out, "--set", f"budgets.latency_ms={same}", profile="x86-cpu")
    reused = {s["name"]: s["reused"] for s in json.loads(noop.stdout)["devices"][0]["stages"]}
    assert reused == {"plan": True, "train": True, "export": True, "bench": True, "report": False}
    report = json.loads((out / "x86-cpu" / "report.json").read_text())
    assert report["profile"]["overrides"] == [f"budgets.latency_ms={same}"]


def test_an_impossible_budget_exits_5_naming_the_closest_candidates(bank_path, tmp_path):
    profile = _profile_copy(tmp_path, memory_mib=1)
    result = _build(bank_path, tmp_path / "out", profile=str(profile))
    assert result.exit_code == 5
    assert "closest" in result.output and "memory" in result.output


@pytest.mark.parametrize(
    "args, code",
    [
        (["build"], 2),
        (["build", "--profile", "jetson", "--all-profiles"], 2),
        (["build", "--profile", "no-such-device"], 3),
        (["build", "--profile", "jetson", "--data", "/no/such/dir"], 3),
        (["build", "--profile", "jetson", "--templates", "/no/such/bank.safetensors"], 3),
        (["build", "--profile", "jetson", "--set", "budgets.latency_msx=1"], 3),
        (["build", "--profile", "jetson", "--set", "budgets.latency_ms"], 2),
    ],
)
def test_bad_build_input_exits_with_its_code_and_writes_nothing(args, code, tmp_path):
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == code, result.output
    assert not (tmp_path / "out").exists()


def test_two_profiles_that_pick_the_same_spec_share_one_trained_model(bank_path, tmp_path):
    args = [
        "build",
        "--profile",
        "jetson",
        "--profile",
        "x86-cpu",
        "--templates",
        str(bank_path),
        "--out",
        str(tmp_path),
        "--json",
        *FAST,
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    devices = json.loads(result.stdout)["devices"]
    assert [d["profile"] for d in devices] == ["jetson-orin-nano-8gb", "x86-cpu"]
    assert devices[0]["spec"] == devices[1]["spec"]
    assert len(list((tmp_path / ".models").iterdir())) == 1
    a, b = (tmp_path / d["profile"] / "model.safetensors" for d in devices)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "x86-cpu" / "bundle" / "run_on_device.py").is_file()  # the ONNX Runtime kit
