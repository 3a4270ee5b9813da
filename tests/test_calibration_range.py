"""Calibration geometry and range: what `calibrate` measured is recorded, and predictions outside it are
flagged in plan's table and JSON, in report.md and in the HTML index."""

from __future__ import annotations

import json

import pytest
from _report_data import make_report
from click.testing import CliRunner
from test_latency import _calibration_dict, _write, refit

from wave_deploy.calibration.calibrate import calibration_space, default_batches, design_samples
from wave_deploy.calibration.file import read_calibration_file
from wave_deploy.cli.main import cli
from wave_deploy.errors import UsageError
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE, SearchSpace
from wave_deploy.reports import render_markdown
from wave_deploy.reports.html import _index_device, index_html
from wave_deploy.wave.bank_file import default_bank_path, inspect_bank


def _bank_space() -> SearchSpace:
    return SearchSpace.from_bank(inspect_bank(default_bank_path()).geometry)


def test_calibrate_cli_measures_the_given_geometry_and_records_it_and_its_range(tmp_path):
    """A real quick calibration at 8 px / patch 4 (8 tiny timm models in ONNX Runtime); no timing asserted."""
    out = tmp_path / "cal.json"
    args = ["calibrate", "--profile", "x86-cpu", "--img-size", "8", "--patch-size", "4", "--in-chans", "1"]
    args += [
        "--max-depth",
        "2",
        "--max-embed-dim",
        "64",
        "--quick",
        "--threads",
        "1",
        "--clock",
        "thread",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert "estimated" in result.stderr and "calibrate: measure 8/8" not in result.stdout
    cal = read_calibration_file(out)
    assert (cal.geometry.img_size, cal.geometry.patch_size, cal.geometry.in_chans) == (8, 4, 1)
    assert cal.geometry.mlp_ratio == _bank_space().mlp_ratio
    assert (cal.covered.depth.lo, cal.covered.depth.hi) == (1, 2)
    assert (cal.covered.embed_dim.lo, cal.covered.embed_dim.hi) == (32, 64)
    assert (cal.covered.batch.lo, cal.covered.batch.hi) == (1, 4)
    assert {(s.depth, s.embed_dim, s.batch) for s in cal.samples} == {
        (d, w, b) for d in (1, 2) for w in (32, 64) for b in (1, 4)
    }
    assert summary["geometry"]["img_size"] == 8 and summary["covered"] == cal.model_dump()["covered"]

    # inside the range: no flag; outside (depth, width, image size): flagged in JSON and in text
    plan = ["plan", "--profile", "x86-cpu", "--calibration", str(out), "--spec"]
    inside = CliRunner().invoke(cli, [*plan, "depth=2,embed_dim=64,img_size=8,patch_size=4", "--json"])
    assert inside.exit_code == 0, inside.output
    data = json.loads(inside.output)
    assert data["latency"]["notes"] == [] and data["latency_extrapolated"] is False
    outside = CliRunner().invoke(cli, [*plan, "depth=3,embed_dim=96,img_size=16,patch_size=4", "--json"])
    data = json.loads(outside.output)
    assert data["latency_extrapolated"] is True
    notes = " | ".join(data["latency"]["notes"])
    assert "depth=3 outside the calibrated 1..2" in notes and "embed_dim=96 outside" in notes
    assert "img_size 16 (calibrated 8)" in notes
    text = CliRunner().invoke(cli, [*plan, "depth=3,embed_dim=64,img_size=8,patch_size=4"])
    assert (
        text.exit_code == 0
        and "note: latency extrapolated: depth=3 outside the calibrated 1..2" in text.output
    )


def test_plan_search_flags_extrapolated_candidates_in_table_and_json(tmp_path):
    data = _calibration_dict()  # covers depth 1, width 32, batch 1; at the shipped bank's geometry:
    space = _bank_space()
    data["geometry"].update(img_size=space.img_size, patch_size=space.patch_size, in_chans=space.in_chans)
    path = _write(tmp_path, refit(data, error=0.02))
    base = ["plan", "--profile", "x86-cpu", "--calibration", str(path)]
    result = CliRunner().invoke(cli, [*base, "--json"])
    assert result.exit_code == 0, result.output
    sel = json.loads(result.output)
    by_size = {(c["spec"]["depth"], c["spec"]["embed_dim"]): c["latency_notes"] for c in sel["frontier"]}
    assert by_size.pop((1, 32)) == []  # the one size measured
    assert by_size and all("outside the calibrated" in " ".join(n) for n in by_size.values())
    chosen = sel["chosen"]
    assert chosen["spec"]["depth"] > 1  # beyond the calibrated depth 1
    assert any(n.startswith("latency of the chosen size extrapolated: depth=") for n in sel["notes"])
    assert any("candidates' latencies are extrapolated" in n for n in sel["notes"])
    text = CliRunner().invoke(cli, base)
    assert text.exit_code == 0, text.output
    assert "* latency extrapolated outside the calibrated range" in text.output
    assert "note: latency of the chosen size extrapolated" in text.output


def test_report_md_and_html_index_show_an_extrapolated_latency(tmp_path):
    path = _write(tmp_path, _calibration_dict())
    report = make_report("x86-cpu", latency_budget_ms=15.0, out=tmp_path / "build", calibration=path)
    note = next(n for n in report["selection"]["notes"] if "chosen size extrapolated" in n)
    assert f"- note: {note}" in render_markdown(report)
    html = index_html([_index_device(tmp_path / "build", report, None)])
    assert "note: latency of the chosen size extrapolated" in html


def test_calibration_space_takes_geometry_and_range_and_refuses_a_bad_patch():
    space = calibration_space(_bank_space(), img_size=224, patch_size=16, in_chans=3, max_depth=12)
    assert (space.img_size, space.patch_size, space.in_chans, space.max_depth) == (224, 16, 3, 12)
    assert space.max_embed_dim == _bank_space().max_embed_dim
    with pytest.raises(UsageError, match="not a multiple of the patch size 16"):  # the one image-size rule
        calibration_space(_bank_space(), img_size=100, patch_size=16)
    bad = CliRunner().invoke(
        cli, ["calibrate", "--profile", "x86-cpu", "--img-size", "30", "--patch-size", "4"]
    )
    assert bad.exit_code == 2 and "not a multiple of the patch size 4" in bad.output


def test_design_at_many_tokens_times_small_batches_and_covers_the_range():
    space = calibration_space(DEFAULT_SEARCH_SPACE, img_size=224, patch_size=16, in_chans=3)
    batches = default_batches(space, 16, latency_batch=1)
    assert batches == [1, 2]
    assert default_batches(space, 16, latency_batch=8) == [1, 2, 8]
    assert default_batches(DEFAULT_SEARCH_SPACE, 16) == [1, 2, 4, 8]
    grid = design_samples(space, 16, batches=batches)
    assert {s.img_size for s, _ in grid} == {224} and {s.in_chans for s, _ in grid} == {3}
    assert min(s.embed_dim for s, _ in grid) == 32 and max(s.embed_dim for s, _ in grid) == 384
    assert {s.depth for s, _ in grid} == {1, 2, 4, 8, 12}
