"""The calibration file model: what is written is what is read, and bad content never reaches a file."""

from __future__ import annotations

import json

import pytest
from test_latency import _calibration_dict

from wave_deploy.calibration.file import (
    CALIBRATION_SCHEMA_VERSION,
    CalibrationFile,
    read_calibration_file,
    write_calibration_file,
)
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning.latency import load_calibration


def test_written_file_reads_back_equal_and_the_predictor_uses_the_model(tmp_path):
    content = CalibrationFile.build(_calibration_dict())
    path = write_calibration_file(content, tmp_path / "c.json")
    assert read_calibration_file(path) == content
    assert json.loads(path.read_text()) == {**json.loads(json.dumps(_calibration_dict())), "quick": False}
    cal = load_calibration(path)
    assert cal.file == content and cal.profile == "x86-cpu"
    assert cal.data == content.model_dump(mode="json")
    assert content.schema_version == CALIBRATION_SCHEMA_VERSION


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(schema_version=1), "schema_version"),
        (lambda d: d["covered"]["embed_dim"].update(lo=64, hi=64), r"\(top level\)"),
        (lambda d: d["model"]["percentile_factors"].update(p99=150.0), "model"),
        (lambda d: d["runtime"].update(precision="fp8"), "runtime.precision"),
    ],
)
def test_invalid_content_is_invalid_input_naming_the_field_and_writes_nothing(tmp_path, mutate, field):
    data = _calibration_dict()
    mutate(data)
    with pytest.raises(InvalidInputError, match=f"field '{field}"):
        CalibrationFile.build(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=f"invalid calibration file {path}: field '{field}"):
        read_calibration_file(path)


def test_a_version_2_file_still_reads_and_flags_no_head_size_it_never_recorded(tmp_path):
    from wave_deploy.profiles import load_profile
    from wave_deploy.spec import ViTSpec

    data = _calibration_dict()
    data.update(schema_version=2)
    data.pop("source")
    data["geometry"].pop("head_dim")
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data))
    cal = load_calibration(path)
    assert cal.file.source is None and cal.file.geometry.head_dim is None
    spec = ViTSpec(depth=1, embed_dim=32, num_heads=2, patch_size=4)  # 16-wide heads
    assert cal.predict(spec, 1, profile=load_profile("x86-cpu")).notes == ()
    v3 = _calibration_dict()
    path.write_text(json.dumps(v3))
    notes = load_calibration(path).predict(spec, 1, profile=load_profile("x86-cpu")).notes
    assert notes == ("extrapolated: head_dim 16 (calibrated 32)",)


def _twelve_samples() -> dict:
    """A consistent calibration of 12 samples (depths 1, 2, 4 x widths 32, 64 x batches 1, 4), each predicted
    by its model within a few % (the fit block recomputed)."""
    from test_latency import refit

    data = _calibration_dict()
    one = data["samples"][0]
    data["samples"] = [
        {**one, "depth": d, "embed_dim": w, "num_heads": w // 32, "batch": b}
        for d in (1, 2, 4) for w in (32, 64) for b in (1, 4)
    ]  # fmt: skip
    data["covered"] = {
        "depth": {"lo": 1, "hi": 4},
        "embed_dim": {"lo": 32, "hi": 64},
        "batch": {"lo": 1, "hi": 4},
    }
    refit(data, error=0.03)
    for i, s in enumerate(data["samples"]):  # not all equally far: a fit with a spread
        s.update({k: v * (1 + 0.01 * (i % 5)) for k, v in s.items() if k.endswith("_ms")})
    return refit(data)


def _edited(edit):
    data = _twelve_samples()
    edit(data)
    return json.dumps(data)


def _scaled(data: dict, key: str, factor: int) -> None:
    """Every sample's ``key`` times ``factor``, and the covered range with it (the file otherwise consistent)."""
    for s in data["samples"]:
        s[key] *= factor
    data["covered"][key] = {k: v * factor for k, v in data["covered"][key].items()}


EDITS = {
    "cache_mb NaN": (
        lambda: json.dumps(_twelve_samples()).replace('"cache_mb": 8.0', '"cache_mb": NaN'),
        "not strict JSON: NaN",
    ),
    "cache_mb Infinity": (
        lambda: json.dumps(_twelve_samples()).replace('"cache_mb": 8.0', '"cache_mb": 1e999'),
        "not finite",
    ),
    "p50 as a string": (
        lambda: _edited(lambda d: d["samples"][0].update(p50_ms="1e-3")),
        "field 'samples.0.p50_ms': Input should be a valid number",
    ),
    "depth as a float": (
        lambda: _edited(lambda d: d["samples"][0].update(depth=1.0)),
        "field 'samples.0.depth'",
    ),
    "coefficients zero": (
        lambda: _edited(
            lambda d: d["model"]["coefficients_ms"].update(dict.fromkeys(d["model"]["features"], 0.0))
        ),
        "every coefficient is 0",
    ),
    "coefficients scaled": (
        lambda: _edited(
            lambda d: d["model"]["coefficients_ms"].update(
                {k: v * 1e-8 for k, v in d["model"]["coefficients_ms"].items()}
            )
        ),
        "fit.mape_pct .* is not what the model gives",
    ),
    "fit claims perfection": (
        lambda: _edited(
            lambda d: d.update(fit={"n_samples": 1, "mape_pct": 0, "max_abs_pct": 0, "within_10pct": 1})
        ),
        "fit.n_samples 1 is not the 12 samples recorded",
    ),
    "fit errors zeroed": (
        lambda: _edited(lambda d: d["fit"].update(mape_pct=0.0, max_abs_pct=0.0)),
        "fit.mape_pct 0 is not what the model gives",
    ),
    "worst error halved": (
        lambda: _edited(lambda d: d["fit"].update(max_abs_pct=d["fit"]["max_abs_pct"] / 2)),
        "fit.max_abs_pct",
    ),
    "within 10% edited": (
        lambda: _edited(lambda d: d["fit"].update(within_10pct=0.5)),
        "fit.within_10pct 0.5 is not",
    ),
    "cache_mb zero": (
        lambda: _edited(lambda d: d["model"].update(cache_mb=0.0)),
        "cache_mb 0.0 is neither",
    ),
    "a 5001-digit integer": (
        lambda: json.dumps(_twelve_samples()).replace('"n_samples": 12', '"n_samples": ' + "9" * 5001),
        "not valid JSON",
    ),
    # sizes past SIZE_LIMITS: the fit recomputed from them would overflow a float (OverflowError, issue 19)
    "an image size of 10**200": (
        lambda: _edited(lambda d: d["geometry"].update(img_size=10**200, patch_size=1)),
        "field 'geometry.img_size': Input should be less than or equal to 4096",
    ),
    "depths of 10**300": (lambda: _edited(lambda d: _scaled(d, "depth", 10**300)), "less than or equal to"),
    "batches of 10**300": (lambda: _edited(lambda d: _scaled(d, "batch", 10**300)), "less than or equal to"),
    "deep nesting": (lambda: '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
    "a duplicated key": (
        lambda: json.dumps(_twelve_samples()).replace('"cache_mb": 8.0', '"cache_mb": 8.0, "cache_mb": 8.0'),
        "duplicated key 'cache_mb'",
    ),
}


def test_the_consistent_twelve_sample_file_reads(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(_twelve_samples()))
    cal = read_calibration_file(path)
    assert cal.fit.n_samples == 12 and 0.5 < cal.fit.mape_pct < 4 and 0 < cal.fit.within_10pct <= 1


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edited_calibration_is_refused_with_one_line(tmp_path, name):
    text, words = EDITS[name]
    path = tmp_path / "cal.json"
    path.write_text(text())
    with pytest.raises(InvalidInputError, match=words) as info:
        read_calibration_file(path)
    assert str(path) in info.value.message and len(info.value.one_line().splitlines()) == 1


@pytest.mark.parametrize(
    "name",
    ["fit claims perfection", "coefficients scaled", "a 5001-digit integer", "an image size of 10**200"],
)
def test_plan_refuses_an_edited_calibration_exit_3_without_a_traceback(tmp_path, name):
    from click.testing import CliRunner

    from wave_deploy.cli.main import cli

    path = tmp_path / "cal.json"
    path.write_text(EDITS[name][0]())
    args = [
        "plan",
        "--profile",
        "x86-cpu",
        "--calibration",
        str(path),
        "--spec",
        "depth=2,embed_dim=64",
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and len(result.stderr.splitlines()) == 1


def test_an_arithmetic_error_in_the_recomputed_fit_is_invalid_input(tmp_path, monkeypatch):
    """Whatever the sizes, reading a calibration file raises InvalidInputError only: an OverflowError (or any
    ArithmeticError) while the fit is recomputed is a validation error, not a traceback."""
    import wave_deploy.calibration.file as calibration_file

    def overflow(*args, **kwargs):
        raise OverflowError("int too large to convert to float")

    path = tmp_path / "cal.json"
    path.write_text(json.dumps(_twelve_samples()))
    monkeypatch.setattr(calibration_file, "features", overflow)
    with pytest.raises(InvalidInputError, match="cannot be computed: int too large") as info:
        read_calibration_file(path)
    assert str(path) in info.value.message and len(info.value.one_line().splitlines()) == 1


def test_the_size_limits_take_the_largest_bank_geometry_and_target_a_calibration_can_hold():
    """A calibration measured at any bank's geometry (calibrate's default) or for any model a bank makes (a
    bundle's design) reads: the limits are those of the bank geometry, the targets and the profiles."""
    from wave_deploy.calibration.file import SIZE_LIMITS
    from wave_deploy.profiles import MAX_BATCH
    from wave_deploy.wave.geometry import GEOMETRY_LIMITS, TARGET_LIMITS

    for key in ("img_size", "patch_size", "in_chans", "num_classes", "head_dim"):
        assert SIZE_LIMITS[key] >= GEOMETRY_LIMITS[key]
    assert SIZE_LIMITS["depth"] >= max(GEOMETRY_LIMITS["max_depth"], TARGET_LIMITS["depth"])
    assert SIZE_LIMITS["embed_dim"] >= max(GEOMETRY_LIMITS["max_embed_dim"], TARGET_LIMITS["embed_dim"])
    assert SIZE_LIMITS["img_size"] >= TARGET_LIMITS["img_size"] and SIZE_LIMITS["batch"] == MAX_BATCH
