"""The on-device kit's failures are one line with a documented exit code, never a traceback, and never a
file the build machine's strict reader refuses: a NaN output is a parity failure recorded as null, every
kit JSON file is written without NaN or infinity, timings that are not a measurement are exit 6, an --out
that cannot be written is exit 3 before anything is measured, runtime and design errors are mapped."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from wave_deploy import strict_json

KIT_DIR = Path(__file__).resolve().parents[1] / "export"


def _kit(name: str):
    if str(KIT_DIR) not in sys.path:
        sys.path.insert(0, str(KIT_DIR))
    return importlib.import_module(name)


def test_a_nan_output_is_a_parity_failure_recorded_as_null():
    kc = _kit("kit_common")
    ref = np.zeros((2, 3), dtype=np.float32)
    got = ref.copy()
    got[1, 1] = np.nan
    check = kc.compare("model.onnx", got, ref, {"atol": 1e-3, "rtol": 0.0})
    assert check["max_abs_err"] is None and check["passed"] is False and "NaN or infinity" in check["error"]
    json.dumps(check, allow_nan=False)  # writable as strict JSON


def test_a_report_holding_nan_is_written_strict_and_failed(tmp_path):
    rod = _kit("run_on_device")
    path = tmp_path / "device_report.json"
    rod.write_report(path, {"passed": True, "parity": {"max_abs_err": float("nan")}, "x": [float("inf")]})
    report = strict_json.read(path, "device report")  # the host's reader takes it
    assert (
        report["passed"] is False
        and report["parity"]["max_abs_err"] is None
        and "non-finite" in report["error"]
    )


def test_kit_json_is_written_without_nan(tmp_path):
    kc = _kit("kit_common")
    with pytest.raises(ValueError):
        kc.write_json_atomic(tmp_path / "s.json", {"p50_ms": float("nan")})
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("samples", [[0.0, 0.0, 0.0], [1.0, float("nan"), 1.0], []])
def test_timings_that_are_not_a_measurement_are_exit_6(samples):
    kc = _kit("kit_common")
    with pytest.raises(kc.KitError) as info:
        kc.latency_stats(
            samples, batch=1, warmup=0, timed="host-to-host", runtime="r", hardware="", threads=1
        )
    assert info.value.code == 6 and len(str(info.value).splitlines()) == 1


def test_an_unwritable_out_is_exit_3_before_the_bundle_is_even_read(tmp_path, capsys):
    rod = _kit("run_on_device")
    out = tmp_path / "missing-folder" / "samples.json"
    code = rod.main(["--calibrate", "--bundle", str(tmp_path / "no-bundle"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "cannot write --out" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert rod.main(["--calibrate", "--bundle", str(tmp_path), "--out", str(tmp_path)]) == 3  # a directory


def test_an_unwritable_report_is_exit_3_before_anything_runs(tmp_path, capsys):
    rod = _kit("run_on_device")
    report = tmp_path / "missing-folder" / "device_report.json"
    assert rod.main(["--bundle", str(tmp_path), "--report", str(report)]) == 3
    assert "cannot write --report" in capsys.readouterr().err


def test_bad_trtexec_times_are_exit_6(tmp_path):
    trt, kc = _kit("trt_device"), _kit("kit_common")
    for text in ("{not json", '{"computeMs": 1}', "[" * 100_000):
        (tmp_path / "times.json").write_text(text)
        with pytest.raises(kc.KitError) as info:
            trt.compute_times_ms(tmp_path / "times.json", compute_only=True)
        assert info.value.code == 6 and "times file" in str(info.value)


class _Design:
    """A design of one model whose files are written as asked (``fail``: what materialize raises)."""

    def __init__(self, fail=None):
        self.fail = fail
        self.index = {"timing": {"quick": {"warmup": 0, "iterations": 1, "min_duration_s": 0.0, "passes": 1}},
                      "geometry": {"img_size": 28, "patch_size": 7, "in_chans": 1, "head_dim": 32},
                      "precision": "fp32", "sample_shape": [1, 28, 28]}  # fmt: skip

    def materialize(self, model, directory):
        if self.fail:
            raise self.fail
        path = Path(directory) / "m.onnx"
        path.write_bytes(b"not an onnx graph")
        return path


class _FakeOrt:
    __version__ = "0.0"

    class SessionOptions:
        pass

    @staticmethod
    def InferenceSession(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed\nsecond line")


@pytest.mark.parametrize(
    "fail, code, words",
    [
        (None, 6, "onnxruntime failed on design model m: [ONNXRuntimeError]"),
        ("design", 3, "calibration design, model m: bad entry"),
        ("disk", 3, "weights in"),
    ],
)
def test_runtime_design_and_workdir_errors_are_one_line_kit_errors(tmp_path, monkeypatch, fail, code, words):
    kcal, kc, kd = _kit("kit_calibrate"), _kit("kit_common"), _kit("kit_design")
    raised = {
        None: None,
        "design": kd.DesignError("bad entry"),
        "disk": OSError(28, "No space left on device"),
    }
    monkeypatch.setattr(kcal, "_open_ort", lambda args: (_FakeOrt, 1, ["CPUExecutionProvider"]))
    monkeypatch.setattr(kcal, "probe_gflops", lambda *a: 1.0)
    monkeypatch.setattr(kcal, "check_memory", lambda points: None)
    model = {"name": "m", "depth": 1, "embed_dim": 32, "num_heads": 1}
    monkeypatch.setattr(kcal, "estimate", lambda points, *a: {("m", 1): 1.0})
    args = argparse.Namespace(quick=True, clock="wall", workdir=tmp_path, threads=1, provider=None)
    with pytest.raises(kc.KitError) as info:
        kcal.run_onnxruntime(_Design(raised[fail]), [(model, 1)], args)
    assert info.value.code == code and words in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # the work folder is gone


def test_a_workdir_that_cannot_be_made_is_exit_3_naming_it(tmp_path):
    kcal, kc = _kit("kit_calibrate"), _kit("kit_common")
    with pytest.raises(kc.KitError) as info:
        kcal.make_workdir(tmp_path / "no" / "such")
    assert info.value.code == 3 and "--workdir" in str(info.value) and "samples" not in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["--calibrate", "--out", "s.json", "--iterations", "5"],
        ["--calibrate", "--out", "s.json", "--warmup", "1"],
        ["--calibrate", "--out", "s.json", "--batch", "2"],
        ["--calibrate", "--out", "s.json", "--report", "r.json"],
        ["--clock", "thread"],
        ["--workdir", "/tmp"],
    ],
)
def test_options_of_the_other_mode_are_refused_exit_2(argv, tmp_path, capsys):
    rod = _kit("run_on_device")
    with pytest.raises(SystemExit) as info:
        rod.main(["--bundle", str(tmp_path), *argv])
    assert info.value.code == 2 and "go with --calibrate" in capsys.readouterr().err


def test_a_run_whose_report_fails_only_as_it_is_written_exits_6(tmp_path, monkeypatch, capsys):
    """A non-finite number that reaches the report (here the memory block) makes write_report fail it: the
    kit's exit code says so too (it was exit 0 beside a FAIL report)."""
    rod = _kit("run_on_device")
    plan = {"profile": "x86-cpu", "runtime": "onnxruntime", "bench_batch": 1}
    monkeypatch.setattr(rod, "load_bundle", lambda bundle: (plan, {}))
    monkeypatch.setattr(rod, "verify_models", lambda bundle, plan: True)
    batch = {"batch": 1, "max_abs_err": 0.0, "limit": 1e-3, "passed": True}
    result = {"parity": {"batches": [batch]}, "memory": {"peak_rss_mib": float("nan")}}
    monkeypatch.setattr(rod, "run_onnxruntime", lambda *a: result)
    report = tmp_path / "device_report.json"
    assert rod.main(["--bundle", str(tmp_path), "--report", str(report)]) == 6
    written = strict_json.read(report, "device report")
    assert written["passed"] is False and "non-finite" in written["error"]
    assert "FAIL" in capsys.readouterr().err
