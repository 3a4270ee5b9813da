"""Latency models: analytic roofline, NNLS fit, calibration files, memory model, and a real (tiny) calibration."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from wave_deploy.calibration import calibrate as calib
from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError
from wave_deploy.planning import latency as lat
from wave_deploy.planning.memory import BUILD_WEIGHT_COPIES, MIB, RUNTIME_FACTORS, predict_memory
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.profiles import builtin_profiles_dir, load_profile
from wave_deploy.spec import ViTSpec, activation_bytes, model_ops, weight_bytes

TINY_SPACE = SearchSpace(
    img_size=8,
    patch_size=4,
    in_chans=1,
    num_classes=3,
    mlp_ratio=2.0,
    w=16,
    head_dim=16,
    max_depth=2,
    max_embed_dim=32,
)


def _hardware(profile, **changes):
    return profile.model_copy(update={"hardware": profile.hardware.model_copy(update=changes)})


def _latency_model(profile, **changes):
    return profile.model_copy(update={"latency_model": profile.latency_model.model_copy(update=changes)})


def test_analytic_latency_is_pure_compute_roofline_when_memory_is_free_and_overhead_zero():
    spec = ViTSpec(depth=4, embed_dim=128, num_heads=4)
    profile = _latency_model(
        _hardware(load_profile("x86-cpu"), memory_bandwidth_gb_per_s=1e12), per_kernel_overhead_us=0.0
    )
    pred = lat.predict_analytic(spec, profile, batch=2)
    peak = profile.hardware.peak_tflops_fp32 * 1e12 * profile.latency_model.compute_efficiency
    all_flops = sum(o.flops * o.count for o in model_ops(spec, 2))
    assert math.isclose(pred.latency_ms, 1e3 * all_flops / peak, rel_tol=1e-12)
    assert pred.source == "analytic" and math.isclose(sum(pred.breakdown_ms.values()), pred.latency_ms)


def test_analytic_latency_is_pure_bandwidth_plus_overhead_when_compute_is_free():
    spec = ViTSpec(depth=2, embed_dim=64, num_heads=2)
    profile = _hardware(
        load_profile("jetson"), peak_tflops_fp32=1e9, peak_tflops_fp16=1e9, peak_tops_int8=1e9
    )
    lm = profile.latency_model
    ops = model_ops(spec, 1, "fp16", "fp16")
    expected = sum(
        o.count
        * (
            o.bytes / (profile.hardware.memory_bandwidth_gb_per_s * 1e9 * lm.memory_efficiency)
            + lm.per_kernel_overhead_us * 1e-6
        )
        for o in ops
    )
    assert math.isclose(lat.predict_analytic(spec, profile, 1).latency_ms, 1e3 * expected, rel_tol=1e-12)


def test_analytic_latency_grows_with_depth_width_and_batch():
    profile = load_profile("x86-cpu")
    base = lat.predict(ViTSpec(depth=2, embed_dim=64, num_heads=2), profile, 1).latency_ms
    assert lat.predict(ViTSpec(depth=3, embed_dim=64, num_heads=2), profile, 1).latency_ms > base
    assert lat.predict(ViTSpec(depth=2, embed_dim=96, num_heads=3), profile, 1).latency_ms > base
    assert lat.predict(ViTSpec(depth=2, embed_dim=64, num_heads=2), profile, 2).latency_ms > base


def test_percentile_mapping_uses_stated_factors():
    pred = lat.predict(ViTSpec(depth=1, embed_dim=32, num_heads=1), load_profile("x86-cpu"))
    assert pred.at("p50") == pred.latency_ms
    assert math.isclose(pred.at("p99"), 1.10 * pred.latency_ms)
    with pytest.raises(InvalidInputError):
        pred.at("p75")


def _brute_force_nnls(a, b):
    """Best least-squares solution over every column subset whose unconstrained solution is non-negative."""
    best, best_x = math.inf, None
    n = a.shape[1]
    for k in range(n + 1):
        for cols in itertools.combinations(range(n), k):
            x = np.zeros(n)
            if cols:
                x[list(cols)] = np.linalg.lstsq(a[:, list(cols)], b, rcond=None)[0]
            if (x >= -1e-12).all():
                r = float(np.sum((a @ x - b) ** 2))
                if r < best:
                    best, best_x = r, x
    return best, best_x


def test_nnls_matches_brute_force_over_active_sets():
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.normal(size=(12, 5))
        b = rng.normal(size=12)
        x = lat.nnls(a, b)
        best, best_x = _brute_force_nnls(a, b)
        assert (x >= 0).all()
        assert math.isclose(float(np.sum((a @ x - b) ** 2)), best, rel_tol=1e-9, abs_tol=1e-12)
        assert np.allclose(x, best_x, atol=1e-8)


def test_fit_recovers_known_coefficients_and_cache_from_synthetic_measurements():
    truth = dict(zip(lat.FEATURES, [0.02, 0.004, 5.0, 9.0, 0.0, 0.15, 0.0, 0.08]))
    cache_mb = 4.0  # on the fit's grid (0.25 MB x 2^(k/2))
    rows = []
    for depth, width, batch in itertools.product([1, 2, 5, 9, 12], [32, 96, 192, 320], [1, 3, 8]):
        spec = ViTSpec(depth=depth, embed_dim=width, num_heads=width // 32)
        values = lat.features(spec, batch, "fp32", "fp32", cache_mb)
        ms = sum(truth[name] * v for name, v in zip(lat.FEATURES, values))
        rows.append((spec, batch, ms))
    fit = lat.fit_latency(rows, "fp32", "fp32")
    assert fit.cache_mb == cache_mb
    for name in lat.FEATURES:
        assert math.isclose(fit.coefficients[name], truth[name], rel_tol=1e-6, abs_tol=1e-9), name
    assert fit.mape_pct < 1e-6 and fit.within_10pct == 1.0


def test_fit_refuses_too_few_or_bad_measurements():
    spec = ViTSpec(depth=1, embed_dim=32, num_heads=1)
    with pytest.raises(InvalidInputError, match="at least"):
        lat.fit_latency([(spec, 1, 1.0)] * 3, "fp32", "fp32")
    with pytest.raises(InvalidInputError, match="positive"):
        lat.fit_latency([(spec, 1, -1.0)] * 10, "fp32", "fp32")


def test_memory_is_weights_plus_activations_plus_overhead_and_build_peak_is_stated_multiple():
    spec = ViTSpec(depth=4, embed_dim=128, num_heads=4)
    x86 = load_profile("x86-cpu")
    cpu = predict_memory(spec, x86, batch=2)
    assert cpu.weights_mib == weight_bytes(spec, "fp32") / MIB
    assert cpu.activations_mib == activation_bytes(spec, 2, "fp32") / MIB
    factors = RUNTIME_FACTORS["onnxruntime"]
    assert (
        cpu.total_mib
        == factors[0] * cpu.weights_mib
        + factors[1] * cpu.activations_mib
        + x86.latency_model.runtime_overhead_mib
    )
    assert cpu.build_peak_mib is None
    jetson = load_profile("jetson")
    gpu = predict_memory(spec, jetson, batch=1)
    assert gpu.weights_mib == weight_bytes(spec, "fp16") / MIB and gpu.activation_precision == "fp16"
    assert gpu.scratch_mib == min(jetson.runtime.workspace_mib, gpu.activations_mib)
    assert gpu.total_mib == gpu.weights_mib + gpu.activations_mib + gpu.scratch_mib + 150.0
    expected_build = (
        jetson.latency_model.runtime_overhead_mib
        + BUILD_WEIGHT_COPIES * weight_bytes(spec) / MIB
        + jetson.runtime.workspace_mib
        + gpu.activations_mib
    )
    assert math.isclose(gpu.build_peak_mib, expected_build)


def _calibration_dict(profile_name="x86-cpu") -> dict:
    sample = {
        "depth": 1,
        "embed_dim": 32,
        "num_heads": 1,
        "batch": 1,
        "p50_ms": 0.05,
        "p90_ms": 0.06,
        "p95_ms": 0.06,
        "p99_ms": 0.07,
        "mean_ms": 0.055,
        "iterations": 100,
    }
    data = {
        "schema_version": 3,
        "profile": profile_name,
        "source": {"kind": "local", "samples_file": None, "samples_sha256": None},
        "runtime": {
            "name": "onnxruntime",
            "version": "1.0",
            "detail": "onnxruntime 1.0 [CPU]",
            "precision": "fp32",
            "threads": 1,
            "clock": "wall",
        },
        "machine": {
            "cpu": "test",
            "logical_cores": 2,
            "platform": "linux",
            "python": "3.11",
            "date": "2025-01-01",
        },
        "geometry": {
            "img_size": 28,
            "patch_size": 4,
            "in_chans": 1,
            "num_classes": 10,
            "mlp_ratio": 4.0,
            "head_dim": 32,
        },
        "covered": {
            "depth": {"lo": 1, "hi": 1},
            "embed_dim": {"lo": 32, "hi": 32},
            "batch": {"lo": 1, "hi": 1},
        },
        "model": {
            "features": list(lat.FEATURES),
            "coefficients_ms": {f: 0.01 for f in lat.FEATURES},
            "cache_mb": 8.0,
            "percentile_factors": {"p50": 1.0, "p90": 1.1, "p95": 1.2, "p99": 1.4},
            "weight_precision": "fp32",
            "activation_precision": "fp32",
        },
        "fit": {"n_samples": 1, "mape_pct": 1.0, "max_abs_pct": 2.0, "within_10pct": 1.0},
        "samples": [sample],
    }
    return refit(data, error=0.02)


def refit(data: dict, error: float | None = None) -> dict:
    """``data`` with its fit block recomputed from its model and samples (what the reader checks); ``error``:
    first move each sample's latencies so that the model predicts its p50 ``error`` (a fraction) too high."""
    from wave_deploy.calibration.file import (
        Geometry,
        LatencyModel,
        Sample,
        fit_statistics,
        predicted_ms,
        sample_spec,
    )

    if error is not None:
        model, geometry = (
            LatencyModel.model_validate(data["model"]),
            Geometry.model_validate(data["geometry"]),
        )
        for s in data["samples"]:
            ms = predicted_ms(model, sample_spec(geometry, Sample.model_validate(s)), s["batch"])[0] / (
                1 + error
            )
            s.update({k: f * ms for k, f in (("p50_ms", 1.0), ("p90_ms", 1.2), ("p95_ms", 1.2), ("p99_ms", 1.4),
                                             ("mean_ms", 1.1))})  # fmt: skip
    stats = fit_statistics(
        LatencyModel.model_validate(data["model"]),
        Geometry.model_validate(data["geometry"]),
        [Sample.model_validate(s) for s in data["samples"]],
    )
    data["fit"] = {**stats, "within_10pct": stats["within_10pct"][1]}
    return data


def _write(tmp_path: Path, data, name="cal.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_calibrated_prediction_follows_coefficients_and_names_its_file(tmp_path):
    path = _write(tmp_path, _calibration_dict())
    spec = ViTSpec(depth=2, embed_dim=64, num_heads=2)
    pred = lat.predict(spec, load_profile("x86-cpu"), 3, calibration=path)
    values = lat.features(spec, 3, "fp32", "fp32", 8.0)
    assert math.isclose(pred.latency_ms, 0.01 * sum(values))
    assert pred.source == f"calibrated:{path}"
    assert math.isclose(pred.at("p99"), 1.4 * pred.latency_ms)
    assert any("batch=3 outside" in n for n in pred.notes)


def test_profile_calibration_file_is_resolved_relative_to_the_profile(tmp_path):
    _write(tmp_path, _calibration_dict())
    data = yaml.safe_load((builtin_profiles_dir() / "x86-cpu.yaml").read_text())
    data["latency_model"].update(kind="calibrated", calibration_file="cal.json")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    profile = load_profile(tmp_path / "p.yaml")
    pred = lat.predict(ViTSpec(depth=1, embed_dim=32, num_heads=1), profile)
    assert pred.source == f"calibrated:{tmp_path / 'cal.json'}"
    result = CliRunner().invoke(cli, ["plan", "--profile", str(tmp_path / "p.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["latency_source"].startswith("calibrated:")


def _broken(mutate):
    data = _calibration_dict()
    mutate(data)
    return data


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        _broken(lambda d: d.update(schema_version=1)),
        _broken(lambda d: d.pop("source")),  # required from version 3
        _broken(lambda d: d["geometry"].pop("head_dim")),
        _broken(lambda d: d["runtime"].update(threads=None)),  # null only for TensorRT
        _broken(lambda d: d["runtime"].update(name="tensorrt")),  # ... and then it must be null
        _broken(lambda d: d.pop("covered")),
        _broken(lambda d: d["covered"]["depth"].update(hi=4)),
        _broken(lambda d: d["covered"]["batch"].update(lo=2, hi=1)),
        _broken(lambda d: d.pop("machine")),
        _broken(lambda d: d.update(extra=1)),
        _broken(lambda d: d["model"]["coefficients_ms"].update(run=-1.0)),
        _broken(lambda d: d["model"].update(features=["run"])),
        _broken(lambda d: d["model"]["percentile_factors"].update(p99=0.5)),
        _broken(lambda d: d.update(samples=[])),
        _broken(lambda d: d["samples"][0].update(p50_ms=0)),
    ],
)
def test_load_calibration_rejects_bad_files(tmp_path, content):
    with pytest.raises(InvalidInputError, match="calibration file"):
        lat.load_calibration(_write(tmp_path, content))


def test_missing_calibration_file_and_wrong_profile_are_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        lat.load_calibration(tmp_path / "nope.json")
    path = _write(tmp_path, _calibration_dict("raspberry-pi-5"))
    with pytest.raises(InvalidInputError, match="made for profile 'raspberry-pi-5'"):
        lat.predict(ViTSpec(depth=1, embed_dim=32, num_heads=1), load_profile("x86-cpu"), calibration=path)
    result = CliRunner().invoke(cli, ["plan", "--profile", "x86-cpu", "--calibration", str(path)])
    assert result.exit_code == 3


def test_design_covers_width_ends_depths_and_batches():
    from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE

    grid = calib.design_samples(DEFAULT_SEARCH_SPACE, batch_max=16)
    widths = {s.embed_dim for s, _ in grid}
    assert min(widths) == 32 and max(widths) == 384 and len(widths) == 6
    assert {s.depth for s, _ in grid} == {1, 2, 4, 8, 12}
    assert {b for _, b in grid} == {1, 2, 4, 8}
    assert len(grid) == 6 * 5 * 4 and len(set(grid)) == len(grid)
    assert {b for _, b in calib.design_samples(DEFAULT_SEARCH_SPACE, batch_max=2)} == {1, 2}


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_quick_calibration_writes_a_valid_file(tmp_path, runtime):
    """A real calibration on 8 tiny shapes (timm models timed in ONNX Runtime or PyTorch); no timing asserted."""
    profile = load_profile("x86-cpu")
    out = tmp_path / "x86.calibration.json"
    cal = calib.calibrate(profile, runtime=runtime, out=out, space=TINY_SPACE, quick=True, threads=1)
    assert out.is_file() and cal.path == str(out)
    data = json.loads(out.read_text())
    assert data["profile"] == "x86-cpu" and data["runtime"]["name"] == runtime
    assert data["runtime"]["threads"] == 1 and data["machine"]["logical_cores"] >= 1
    assert len(data["samples"]) == 8 == data["fit"]["n_samples"]
    assert {(s["depth"], s["embed_dim"], s["batch"]) for s in data["samples"]} == set(
        itertools.product([1, 2], [16, 32], [1, 4])
    )
    assert all(v >= 0 for v in data["model"]["coefficients_ms"].values())
    pred = lat.predict(TINY_SPACE.spec(2, 32), profile, 2, calibration=cal)
    assert data["quick"] is True  # a smoke check, not calibrated evidence
    assert pred.source == f"quick-calibration:{out}" and pred.latency_ms > 0


def test_calibrate_cli_rejects_unknown_runtime_and_profile():
    runner = CliRunner()
    assert runner.invoke(cli, ["calibrate", "--profile", "x86-cpu", "--runtime", "trt"]).exit_code == 2
    assert runner.invoke(cli, ["calibrate", "--profile", "no-such-profile"]).exit_code == 3
    assert (
        runner.invoke(
            cli, ["calibrate", "--profile", "x86-cpu", "--clock", "thread", "--threads", "2"]
        ).exit_code
        == 2
    )
