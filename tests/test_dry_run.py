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
