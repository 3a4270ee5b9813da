"""``build --dry-run`` writes nothing, failed or not, and refuses what the build refuses (its inputs are checked
by the same function)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from wave_deploy.cli.main import cli

JETSON = "jetson-orin-nano-8gb"


def _earlier_build(out: Path) -> dict[str, bytes]:
    """A profile directory as an earlier build left it: what a failing command would move or rewrite."""
    dev = out / JETSON
    dev.mkdir(parents=True)
    (dev / "model.safetensors").write_bytes(b"x\n")
    (dev / "report.json").write_text("{}\n")
    return _snapshot(out)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "bad",
    [
        ["--objective", "bogus"],  # click refuses it while making the context
        ["--bogus"],
        ["--scaler-epochs", "0"],
        ["--teacher-arch", "vit_tiny_patch16_224"],  # parse() refuses it in the command body
        ["--profile", "x86-cpu", "--all-profiles"],
    ],
)
def test_a_failing_dry_run_leaves_an_earlier_build_byte_identical(tmp_path, bad):
    out = tmp_path / "artifacts"
    before = _earlier_build(out)
    result = CliRunner().invoke(cli, ["build", "--profile", "jetson", "--out", str(out), "--dry-run", *bad])
    assert result.exit_code == 2, result.output
    assert _snapshot(out) == before


def test_the_same_failing_build_without_dry_run_fails_closed(tmp_path):
    out = tmp_path / "artifacts"
    before = _earlier_build(out)
    result = CliRunner().invoke(
        cli, ["build", "--profile", "jetson", "--out", str(out), "--objective", "bogus"]
    )
    assert result.exit_code == 2
    assert _snapshot(out) != before and not (out / JETSON / "model.safetensors").exists()


def test_a_group_option_refused_before_build_fails_the_builds_earlier_reports_closed(tmp_path):
    out = tmp_path / "artifacts"
    before = _earlier_build(out)
    args = ["build", "--profile", "jetson", "--out", str(out)]
    dry = CliRunner().invoke(cli, ["--bogus", *args, "--dry-run"])
    assert dry.exit_code == 2 and _snapshot(out) == before
    result = CliRunner().invoke(cli, ["-v", "--bogus", *args])
    assert result.exit_code == 2, result.output
    assert not (out / JETSON / "model.safetensors").exists()
    assert '"verdict": "fail"' in (out / JETSON / "report.json").read_text()
    other = CliRunner().invoke(cli, ["--bogus", "plan", "--profile", "jetson", "--out", str(out)])
    assert other.exit_code == 2  # another command: nothing of the build's is touched


class _Reached(Exception):
    """The real build got past every input check: it was about to decode the data."""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--init", "random", "--img-size", "32"], 0),  # a default geometry, not the bank's
        (["--calibration", "/nonexistent.json"], 3),
        (["--init", "weight-selection", "--teacher-checkpoint", "/nonexistent"], 3),
        (["--objective", "accuracy", "--init", "random"], 2),
        (["--img-size", "30"], 2),  # not a multiple of the bank's patch size
        (["--set", "budgets.latency_ms=-1"], 3),
    ],
)
def test_the_dry_run_refuses_exactly_what_the_build_refuses_before_training(
    tmp_path, monkeypatch, args, code
):
    from wave_deploy.pipeline import build as pipeline

    command = ["build", "--profile", "jetson", "--out", str(tmp_path / "out"), *args]
    dry = CliRunner().invoke(cli, [*command, "--dry-run"])
    assert dry.exit_code == code, dry.output

    def reached(*a, **k):
        raise _Reached

    monkeypatch.setattr(pipeline.datasets, "load_for_bank", reached)
    real = CliRunner().invoke(cli, command)
    assert (0 if isinstance(real.exception, _Reached) else real.exit_code) == code, real.output
    assert not (tmp_path / "out" / JETSON).exists()  # nothing built: no profile directory


def test_the_dry_run_says_where_the_geometry_comes_from(tmp_path):
    import json

    result = CliRunner().invoke(
        cli,
        [
            "build",
            "--profile",
            "jetson",
            "--out",
            str(tmp_path),
            "--dry-run",
            "--init",
            "random",
            "--img-size",
            "32",
        ],
    )
    resolved = json.loads(result.stdout)
    assert (
        resolved["geometry_source"] == "default" and resolved["bank"] is None and resolved["img_size"] == 32
    )
    bank = json.loads(CliRunner().invoke(cli, ["build", "--profile", "jetson", "--dry-run"]).stdout)
    assert bank["geometry_source"] == "bank" and bank["bank"]["patch_size"] >= 1


def test_images_of_another_size_than_the_bank_are_refused_by_the_dry_run_and_the_build_alike(
    tmp_path, monkeypatch
):
    """32 px images against the shipped 28 px bank: both refuse from the headers (exit 3, naming --img-size
    28), before any image is decoded."""
    from PIL import Image

    from wave_deploy import data as datasets

    for label in ("a", "b"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (32, 32), 40 * i).save(tmp_path / "photos" / label / f"{i}.png")

    def decoded(*a, **k):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(datasets, "read_images", decoded)
    command = [
        "build",
        "--profile",
        "jetson",
        "--out",
        str(tmp_path / "out"),
        "--data",
        str(tmp_path / "photos"),
    ]
    for run in (command + ["--dry-run"], command):
        result = CliRunner().invoke(cli, run)
        assert result.exit_code == 3, result.output
        assert "--img-size 28" in result.stderr
