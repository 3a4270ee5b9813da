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
    assert json.loads(path.read_text()) == json.loads(json.dumps(_calibration_dict()))
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
