"""`calibrate --from-device SAMPLES`: a device's samples file is read strictly and fitted into the profile's
calibration; anything malformed, or measured for another profile, precision or geometry, is exit 3 with
one line and no file written."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from wave_deploy.calibration.file import read_calibration_file
from wave_deploy.cli.main import cli
from wave_deploy.fileio import sha256_file


def design_rows(profile="x86-cpu", *, quick=False, geometry=None, overrides=()) -> list[dict]:
    """A bundle design's points for ``profile`` (28 px, patch 7, heads of 32: the shipped bank's geometry; a
    model of depth 6, width 192) with the build's ``--set`` ``overrides``, latencies linear in work with a
    spread above the median."""
    from wave_deploy.calibration.design import bundle_points, bundle_space_at
    from wave_deploy.profiles import apply_overrides, load_profile

    geometry = geometry or GEOMETRY
    space = bundle_space_at(geometry, w=32, depth=6, embed_dim=192)
    rows = []
    for spec, batch in bundle_points(space, apply_overrides(load_profile(profile), overrides), quick=quick):
        depth, width = spec.depth, spec.embed_dim
        p50 = 0.05 + 0.002 * depth * batch * (width / 32) ** 2
        rows.append({"depth": depth, "embed_dim": width, "num_heads": width // 32, "batch": batch,
                     "p50_ms": p50, "p90_ms": 1.1 * p50, "p95_ms": 1.2 * p50, "p99_ms": 1.3 * p50,
                     "mean_ms": 1.05 * p50, "iterations": 30})  # fmt: skip
    return rows


GEOMETRY = {
    "img_size": 28,
    "patch_size": 7,
    "in_chans": 1,
    "num_classes": 10,
    "mlp_ratio": 4.0,
    "head_dim": 32,
}


def samples_dict(
    profile="x86-cpu", runtime="onnxruntime", precision="fp32", *, quick=False, variant=None, overrides=()
) -> dict:
    """A samples file as the kit writes it for a bundle of ``profile`` (its design's points, or the quick
    subset's; the build's ``--set`` ``overrides`` applied); ``runtime`` and ``precision`` as recorded (the
    profile's deployed variant unless given)."""
    from wave_deploy.profiles import load_profile
    from wave_deploy.target import Target

    target = Target.of(load_profile(profile))
    variant = variant or (target.engine_source if target.tensorrt else target.deployed).key
    timing = {"passes": 1, "warmup": 3, "iterations": 10, "min_duration_s": 0.05} if quick else {
        "passes": 3, "warmup": 10, "iterations": 30, "min_duration_s": 0.3}  # fmt: skip
    if runtime == "tensorrt":
        timing.update(warmup=0, min_duration_s=0.0)
    rows = design_rows(profile, quick=quick, overrides=overrides)
    return {
        "schema_version": 1,
        "kind": "calibration_samples",
        "profile": profile,
        "variant": variant,
        "design_sha256": "0" * 64,
        "runtime": {
            "name": runtime,
            "version": "1.0",
            "detail": f"{runtime} 1.0 [device]",
            "precision": precision,
            "threads": None if runtime == "tensorrt" else 4,
            "clock": "gpu" if runtime == "tensorrt" else "wall",
        },
        "machine": {
            "cpu": "Cortex-A76 (4 logical cores)",
            "logical_cores": 4,
            "platform": "Linux-aarch64",
            "python": "3.11.2",
            "date": "2026-01-01T00:00:00+00:00",
        },
        "geometry": dict(GEOMETRY),
        "settings": {"quick": quick, **timing},
        "samples": rows,
    }


def _fit(tmp_path, text: str, *extra: str, profile: str = "x86-cpu"):
    samples = tmp_path / "samples.json"
    samples.write_text(text)
    out = tmp_path / "cal.json"
    args = ["calibrate", "--profile", profile, "--from-device", str(samples), "--out", str(out), *extra]
    return CliRunner().invoke(cli, args), out


def _plan_with(calibration: Path):
    """``plan --json`` of an x86-cpu L2 D64 ViT predicted by ``calibration``."""
    args = [
        "plan",
        "--profile",
        "x86-cpu",
        "--calibration",
        str(calibration),
        "--spec",
        "depth=2,embed_dim=64",
    ]
    return CliRunner().invoke(cli, [*args, "--json"])


def test_device_samples_fit_into_a_calibration_that_records_the_device_and_plan_uses(tmp_path):
    result, out = _fit(tmp_path, json.dumps(samples_dict()))
    assert result.exit_code == 0, result.output
    cal = read_calibration_file(out)
    assert cal.source.kind == "device" and cal.source.samples_sha256 == sha256_file(tmp_path / "samples.json")
    assert cal.machine.cpu == "Cortex-A76 (4 logical cores)" and cal.runtime.threads == 4
    assert cal.runtime.detail == "onnxruntime 1.0 [device]" and cal.fit.n_samples == len(design_rows()) == 120
    assert cal.geometry.head_dim == 32 and cal.model.percentile_factors["p99"] == pytest.approx(1.3)
    assert "measurements on the device" in result.output
    shown = _plan_with(out)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["latency"]["source"] == f"calibrated:{out}" and data["latency_extrapolated"] is False
    # the fit reproduces the samples it was given (linear in the features)
    assert data["latency"]["latency_ms"] == pytest.approx(0.05 + 0.002 * 2 * 4, rel=0.05)


def test_tensorrt_samples_fit_a_tensorrt_profile(tmp_path):
    result, out = _fit(tmp_path, json.dumps(samples_dict("jetson-orin-nano-8gb", "tensorrt", "fp16")),
                       profile="jetson")  # fmt: skip
    assert result.exit_code == 0, result.output
    cal = read_calibration_file(out)
    assert (cal.runtime.name, cal.runtime.threads, cal.runtime.clock) == ("tensorrt", None, "gpu")
    assert cal.model.weight_precision == "fp16"


def _mutated(edit) -> str:
    data = samples_dict()
    edit(data)
    return json.dumps(data)


BAD = {
    "not-json": ("{", "invalid samples file"),
    "nan-token": (
        re.sub(r'"p50_ms": [0-9.e-]+', '"p50_ms": NaN', json.dumps(samples_dict()), count=1),
        "NaN",
    ),
    "infinity-token": (
        re.sub(r'"mean_ms": [0-9.e-]+', '"mean_ms": -Infinity', json.dumps(samples_dict()), count=1),
        "Infinity",
    ),
    "duplicate-key": (
        json.dumps(samples_dict())[:-1] + ', "profile": "x86-cpu"}',
        "duplicated key 'profile'",
    ),
    "bool-latency": (_mutated(lambda d: d["samples"][0].update(p99_ms=True)), "samples.0.p99_ms"),
    "bool-batch": (_mutated(lambda d: d["samples"][0].update(batch=True)), "samples.0.batch"),
    "negative": (_mutated(lambda d: d["samples"][1].update(p50_ms=-1.0)), "samples.1.p50_ms"),
    "zero": (_mutated(lambda d: d["samples"][1].update(mean_ms=0)), "samples.1.mean_ms"),
    "out-of-order": (_mutated(lambda d: d["samples"][2].update(p50_ms=5.0)), "percentiles out of order"),
    "heads": (_mutated(lambda d: d["samples"][2].update(num_heads=3)), "is not its width"),
    "twice": (_mutated(lambda d: d["samples"].append(copy.deepcopy(d["samples"][0]))), "appears twice"),
    "unknown-field": (_mutated(lambda d: d.update(extra=1)), "extra"),
    "missing-field": (_mutated(lambda d: d.pop("machine")), "machine"),
    "wrong-kind": (_mutated(lambda d: d.update(kind="device_report")), "kind"),
    "no-samples": (_mutated(lambda d: d.update(samples=[])), "samples"),
    "too-few": (
        _mutated(lambda d: d.update(samples=d["samples"][:4])),
        "not the points of a bundle's design",
    ),
    "top-level-list": ("[]", "(top level)"),
    # sizes past the calibration file's limits (SIZE_LIMITS): refused before any loop over them (issue 19)
    "huge-img-size": (_mutated(lambda d: d["geometry"].update(img_size=10**200)), "geometry.img_size"),
    "huge-mlp-ratio": (_mutated(lambda d: d["geometry"].update(mlp_ratio=1e300)), "geometry.mlp_ratio"),
    "huge-depth": (_mutated(lambda d: d["samples"][0].update(depth=10**300)), "samples.0.depth"),
    "huge-batch": (_mutated(lambda d: d["samples"][0].update(batch=10**300)), "samples.0.batch"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_samples_file_is_exit_3_with_one_line_and_no_calibration(tmp_path, case):
    text, words = BAD[case]
    result, out = _fit(tmp_path, text)
    assert result.exit_code == 3, result.output
    assert words in result.output and "Traceback" not in result.output and not out.exists()
    assert len(result.output.strip().splitlines()) <= 2  # the error and, at most, its hint


def _hostile_head_size(head_dim: int) -> str:
    """Consistent samples (one head per width, distinct depths) of a head size up to ``head_dim``."""
    data = samples_dict()
    data["geometry"]["head_dim"] = head_dim
    for i, s in enumerate(data["samples"]):
        s.update(num_heads=1, embed_dim=head_dim, depth=i + 1, batch=1)
    return json.dumps(data)


def test_a_samples_file_with_a_huge_head_size_is_exit_3_at_once_not_a_hang(tmp_path):
    """A head size of 10**18 used to make the design check loop over every number up to it (finding: the
    command never returned); in a subprocess with a generous timeout so that a hang fails instead of stalling."""
    import subprocess
    import sys

    samples, out = tmp_path / "samples.json", tmp_path / "cal.json"
    samples.write_text(_hostile_head_size(10**18))
    argv = ["calibrate", "--profile", "x86-cpu", "--from-device", str(samples), "--out", str(out)]
    code = "from wave_deploy.cli.main import main; main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("calibrate --from-device did not return within 120 s")
    assert proc.returncode == 3, proc.stderr
    assert "geometry.head_dim" in proc.stderr and "Traceback" not in proc.stderr and not out.exists()
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_design_check_finds_the_divisors_of_the_largest_head_size_in_square_root_steps():
    from wave_deploy.calibration.design import divisors
    from wave_deploy.calibration.file import SIZE_LIMITS

    assert [n for n in range(1, 400) if divisors(n) != [d for d in range(1, n + 1) if n % d == 0]] == []
    assert divisors(SIZE_LIMITS["head_dim"]) == [2**k for k in range(13)]
    assert divisors(10**12)[-1] == 10**12 and len(divisors(10**12)) == 13 * 13  # 1e6 steps, not 1e12


@pytest.mark.parametrize(
    "data, extra, profile, words",
    [
        (samples_dict("raspberry-pi-5"), [], "x86-cpu", "measured for profile 'raspberry-pi-5'"),
        (samples_dict(precision="int8"), [], "x86-cpu", "they time int8 models; 'x86-cpu' deploys fp32"),
        (samples_dict(runtime="tensorrt"), [], "x86-cpu", "measured with tensorrt"),
        (
            samples_dict(),
            ["--img-size", "224", "--patch-size", "16"],
            "x86-cpu",
            "img_size is 28, not the 224",
        ),
        (samples_dict(), ["--head-dim", "64"], "x86-cpu", "head_dim is 32, not the 64"),
        (samples_dict(), ["--mlp-ratio", "2"], "x86-cpu", "mlp_ratio is 4, not the 2"),
    ],
)
def test_samples_of_another_profile_precision_or_geometry_are_refused(tmp_path, data, extra, profile, words):
    result, out = _fit(tmp_path, json.dumps(data), *extra, profile=profile)
    assert result.exit_code == 3 and words in result.output and not out.exists(), result.output


def test_the_bank_given_with_samples_must_match_their_geometry(tmp_path):
    from wave_deploy.wave.bank_file import default_bank_path

    data = samples_dict()
    data["geometry"]["patch_size"] = 4
    result, out = _fit(tmp_path, json.dumps(data), "--templates", str(default_bank_path()))
    assert result.exit_code == 3 and "patch_size is 4, not the 7" in result.output and not out.exists()


@pytest.mark.parametrize(
    "option", [["--quick"], ["--threads", "1"], ["--runtime", "torch"], ["--max-depth", "2"]]
)
def test_measuring_options_do_not_go_with_from_device(tmp_path, option):
    result, out = _fit(tmp_path, json.dumps(samples_dict()), *option)
    assert result.exit_code == 2 and "do not apply" in result.output and not out.exists()


def _cut_to_eight_with_depth_64(d: dict) -> None:
    d["samples"] = d["samples"][:8]
    d["samples"][-1].update(depth=64)


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda d: d.update(variant="anything"),
            "they time the ONNX variant 'anything'; 'x86-cpu' deploys 'fp32'",
        ),
        (
            lambda d: d["settings"].update(passes=99),
            "not the full design's timing: passes 99 (the design's is 3)",
        ),
        (lambda d: d["settings"].update(quick=True), "not the quick design's timing"),
        (lambda d: d["settings"].update(min_duration_s=0.0), "min_duration_s 0.0 (the design's is 0.3)"),
        (_cut_to_eight_with_depth_64, "not the points of a bundle's design: 8 points"),
        (lambda d: d["samples"].pop(5), "not the points of a bundle's design: 119 points"),
        (lambda d: d["samples"][0].update(depth=3), "not in it: depth 3 width 32 batch 1"),
        (lambda d: d.update(design_sha256="anything"), "design_sha256"),
    ],
    ids=[
        "variant",
        "passes",
        "quick-flag",
        "min-duration",
        "cut-with-depth-64",
        "one-missing",
        "moved",
        "sha",
    ],
)
def test_samples_that_are_not_the_designs_are_refused(tmp_path, edit, words):
    result, out = _fit(tmp_path, _mutated(edit))
    assert result.exit_code == 3 and words in result.output and not out.exists(), result.output
    assert "Traceback" not in result.output


def test_the_brief_edit_all_at_once_is_refused(tmp_path):
    def edit(d):
        _cut_to_eight_with_depth_64(d)
        d["variant"] = "anything"
        d["settings"].update(quick=True, passes=99)

    result, out = _fit(tmp_path, _mutated(edit))
    assert result.exit_code == 3 and "does not fit" in result.output and not out.exists(), result.output


def test_quick_samples_fit_a_quick_calibration_that_plan_does_not_count_as_calibrated(tmp_path):
    from wave_deploy.reports.evidence import latency_level

    result, out = _fit(tmp_path, json.dumps(samples_dict(quick=True)))
    assert result.exit_code == 0, result.output
    cal = read_calibration_file(out)
    assert cal.quick is True and cal.fit.n_samples == len(design_rows(quick=True)) < 120
    shown = _plan_with(out)
    assert shown.exit_code == 0, shown.output
    source = json.loads(shown.stdout)["latency"]["source"]
    assert source == f"quick-calibration:{out}" and latency_level(source, []) == "analytic"


def test_tensorrt_quick_samples_with_trtexecs_settings_fit(tmp_path):
    data = samples_dict("jetson-orin-nano-8gb", "tensorrt", "fp16", quick=True)
    result, out = _fit(tmp_path, json.dumps(data), profile="jetson")
    assert result.exit_code == 0, result.output
    assert read_calibration_file(out).quick is True


@pytest.mark.parametrize(
    "overrides, batches",
    [(("runtime.batch_max=4",), [1, 2, 4]), (("budgets.latency_batch=3",), [1, 2, 3, 4, 8])],
)
def test_samples_of_a_bundle_built_with_set_fit_with_the_builds_set_options(tmp_path, overrides, batches):
    """A bundle built with --set ships the design of the profile with those settings (its batches follow
    runtime.batch_max and budgets.latency_batch; the quick subset's batches 1 and 4 stay): without them the
    samples are refused (exit 3) with a hint naming --set; with the build's --set they fit, and the
    calibration covers the design's batches."""
    assert (
        sorted({r["batch"] for r in design_rows(overrides=overrides)}) == batches
    )  # not the shipped [1, 2, 4, 8]
    text = json.dumps(samples_dict(overrides=overrides))
    refused, out = _fit(tmp_path, text)
    assert refused.exit_code == 3 and not out.exists(), refused.output
    assert (
        "not the points of a bundle's design" in refused.output and "pass the build's --set" in refused.output
    )
    assert len(refused.output.strip().splitlines()) <= 2
    result, out = _fit(tmp_path, text, *(a for s in overrides for a in ("--set", s)))
    assert result.exit_code == 0, result.output
    cal = read_calibration_file(out)
    assert sorted({s.batch for s in cal.samples}) == batches and cal.covered.batch.hi == max(batches)
    assert f"--set {overrides[0]}" in result.output  # the plan command it suggests
    other, _ = _fit(tmp_path, text, "--set", "runtime.batch_max=2")  # another --set: still refused
    assert other.exit_code == 3 and "with --set runtime.batch_max=2" in other.output, other.output
