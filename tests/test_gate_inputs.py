"""What the release gate reads is validated like everything else: device_report.json strictly (no duplicate keys,
no NaN/Infinity, booleans are not numbers; latencies finite, positive and ordered; memory and accuracy in range),
report.json and manifest.json through the same strict JSON reader. Invalid is exit 3 with one line naming the
file and the field; nothing is merged and report.json is left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _report_data import make_device_report, run, write_build, write_device

from wave_deploy import strict_json
from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError
from wave_deploy.reports.merge import kept_device_report


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> tuple[Path, dict]:
    """One passing jetson report directory (report.json, bundle, manifest.json); tests copy it."""
    return write_build(tmp_path_factory.mktemp("gate-inputs"), "jetson")


@pytest.fixture
def dev(build_dir, tmp_path) -> Path:
    return Path(shutil.copytree(build_dir[0], tmp_path / "jetson"))


def _latency(edit):
    return lambda d: edit(d["latency"])


# (what is wrong, how the parsed device report is changed, the one-line error must contain)
DICT_CASES = [
    ("p99-negative", _latency(lambda lat: lat.update(p99_ms=-1.0)), "latency: p99_ms must be positive, got -1.0"),
    ("p50-negative", _latency(lambda lat: lat.update(p50_ms=-5.0)), "latency: p50_ms must be positive, got -5.0"),
    ("all-zero", _latency(lambda lat: lat.update({k: 0.0 for k in lat if k.endswith("_ms")})),
     "latency: min_ms must be positive, got 0.0"),
    ("out-of-order", _latency(lambda lat: lat.update(p50_ms=100.0, p99_ms=0.1)),
     "latency: percentiles out of order: p50_ms 100 > p90_ms"),
    ("p99-above-max", _latency(lambda lat: lat.update(p99_ms=lat["max_ms"] * 2)), "p99_ms"),
    ("min-above-p50", _latency(lambda lat: lat.update(min_ms=lat["p50_ms"] * 1.5)), "min_ms"),
    ("mean-above-max", _latency(lambda lat: lat.update(mean_ms=lat["max_ms"] * 3)), "mean_ms"),
    ("bool-latency", _latency(lambda lat: lat.update(p99_ms=True)), "latency: p99_ms: Input should be a valid number"),
    ("string-latency", _latency(lambda lat: lat.update(p99_ms="1.0")), "p99_ms: Input should be a valid number"),
    ("no-iterations", _latency(lambda lat: lat.update(iterations=0)), "iterations must be an integer >= 1"),
    ("batch-zero", _latency(lambda lat: lat.update(batch=0)), "batch must be an integer >= 1"),
    ("top-batch-zero", lambda d: d.update(batch=0), "batch: Input should be greater than or equal to 1"),
    ("bool-batch", lambda d: d.update(batch=True), "batch: Input should be a valid integer"),
    ("memory-negative", lambda d: d.update(memory={"peak_rss_mib": -1.0}), "memory.peak_rss_mib"),
    ("memory-other-mib", lambda d: d.update(memory={"trt_device_mib": "12"}), "trt_device_mib must be a finite"),
    ("top1-above-one", lambda d: d.update(accuracy={"top1": 1.5, "n_images": 10}), "accuracy.top1"),
    ("no-images", lambda d: d.update(accuracy={"top1": 0.5, "n_images": 0}), "accuracy.n_images"),
    ("parity-negative", lambda d: d.update(parity={"max_abs_err": -1.0, "passed": True}), "parity.max_abs_err"),
]  # fmt: skip

# (what is wrong, how the JSON text is changed, the error must contain): what json.loads would accept
TEXT_CASES = [
    ("duplicate-key", lambda t: t.replace('"p99_ms":', '"p99_ms": 0.001, "p99_ms":', 1), "duplicated key 'p99_ms'"),
    ("nan", lambda t: t.replace('"max_abs_err": 0.0031', '"max_abs_err": NaN'), "NaN is not a JSON number"),
    ("infinity", lambda t: _set_p99(t, "Infinity"), "Infinity is not a JSON number"),
    ("minus-infinity", lambda t: _set_p99(t, "-Infinity"), "-Infinity is not a JSON number"),
    ("overflow", lambda t: _set_p99(t, "1e999"), "1e999 is out of range"),
]  # fmt: skip


def _set_p99(text: str, token: str) -> str:
    data = json.loads(text)
    data["latency"]["p99_ms"] = "@P99@"
    return json.dumps(data).replace('"@P99@"', token)


def _device_text(build_dir) -> str:
    report = build_dir[1]
    return json.dumps(make_device_report(report, 0.5 * report["budgets"]["latency"]["budget_ms"]))


def _refused(dev: Path, device_file: Path, expected: str) -> None:
    before = (dev / "report.json").read_bytes()
    result = run("report", str(dev), "--device-report", str(device_file))
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {device_file}: ") and expected in lines[0], lines
    assert "Traceback" not in result.output
    assert (dev / "report.json").read_bytes() == before and not kept_device_report(dev).exists()


@pytest.mark.parametrize("edit, expected", [c[1:] for c in DICT_CASES], ids=[c[0] for c in DICT_CASES])
def test_an_invalid_device_report_is_exit_3_naming_the_field_and_never_merged(build_dir, dev, tmp_path, edit,
                                                                              expected):  # fmt: skip
    device = json.loads(_device_text(build_dir))
    edit(device)
    _refused(dev, write_device(tmp_path / "device_report.json", device), expected)


@pytest.mark.parametrize("edit, expected", [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_a_device_report_that_is_not_strict_json_is_exit_3(build_dir, dev, tmp_path, edit, expected):
    path = tmp_path / "device_report.json"
    path.write_text(edit(_device_text(build_dir)), encoding="utf-8")
    _refused(dev, path, expected)


def test_the_valid_device_report_of_these_cases_merges(build_dir, dev, tmp_path):
    """The cases above differ from this file only in what they break."""
    path = tmp_path / "device_report.json"
    path.write_text(_device_text(build_dir), encoding="utf-8")
    result = run("report", str(dev), "--device-report", str(path), "--fail-on-budget")
    assert result.exit_code == 0, result.output
    assert kept_device_report(dev).is_file()


@pytest.mark.parametrize(
    "name, edit, expected",
    [
        ("report.json", lambda t: t.replace('"verdict": "pass"', '"verdict": "fail", "verdict": "pass"'),
         "duplicated key 'verdict'"),
        ("manifest.json", lambda t: t.replace('"schema_version": 1', '"schema_version": NaN'),
         "NaN is not a JSON number"),
    ],
)  # fmt: skip
def test_report_and_manifest_are_read_strictly(dev, name, edit, expected):
    path = dev / name
    text = path.read_text(encoding="utf-8")
    assert edit(text) != text
    path.write_text(edit(text), encoding="utf-8")
    result = run("report", str(dev), "--fail-on-budget")
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert str(path) in result.stderr and expected in result.stderr


def test_the_strict_reader_refuses_nested_duplicates_and_keeps_booleans():
    assert strict_json.loads('{"a": {"b": true, "c": [1, 2.5]}}', "x") == {"a": {"b": True, "c": [1, 2.5]}}
    with pytest.raises(InvalidInputError, match=r"x: not strict JSON: duplicated key 'b'"):
        strict_json.loads('{"a": [{"b": 1, "b": 2}]}', "x")
    with pytest.raises(InvalidInputError, match="x: not valid JSON"):
        strict_json.loads('{"a": 1,}', "x")
