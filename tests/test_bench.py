"""Latency statistics (exactly numpy's percentiles), the timing loop, real runners, and `wave-deploy bench`."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from click.testing import CliRunner
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.bench import get_runner_class
from wave_deploy.bench.runners import OrtRunner, TorchRunner, benchmark
from wave_deploy.bench.stats import (
    LATENCY_KEYS,
    TIMED_COMPUTE,
    TIMED_HOST_TO_HOST,
    percentile,
    summarize,
    time_calls,
)
from wave_deploy.cli.main import cli
from wave_deploy.errors import EXIT_MISSING_DEPENDENCY, MissingDependencyError, UsageError
from wave_deploy.exporters import onnx as ox
from wave_deploy.spec import ViTSpec

SPEC = ViTSpec(depth=1, embed_dim=32, num_heads=2, patch_size=7)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VisionTransformer(**SPEC.timm_kwargs()).eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("bench") / "model.onnx"
    ox.export_onnx(model, SPEC, path, exporter="legacy", batch_min=1, batch_max=8)
    return path


SAMPLES = [
    [3.0],
    [1.0, 2.0],
    [5.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0],  # duplicates, unsorted
    list(np.random.default_rng(0).lognormal(0.0, 0.5, 101)),
    list(np.random.default_rng(1).exponential(2.0, 1000)),
]


@pytest.mark.parametrize("samples", SAMPLES, ids=lambda s: f"n{len(s)}")
def test_percentiles_equal_numpy_linear_percentiles_exactly(samples):
    ordered = sorted(samples)
    for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100, 33.3):
        assert percentile(ordered, q) == float(np.percentile(np.asarray(samples), q))


def test_summary_statistics_match_numpy_and_throughput_is_batch_over_mean():
    samples = SAMPLES[3]
    stats = summarize(
        samples, batch=4, warmup=2, timed=TIMED_HOST_TO_HOST, runtime="r", hardware="h", threads=1
    )
    assert (stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms) == tuple(
        float(np.percentile(samples, q)) for q in (50, 90, 95, 99)
    )
    assert stats.min_ms == min(samples) and stats.max_ms == max(samples)
    assert stats.mean_ms == pytest.approx(float(np.mean(samples)), rel=1e-13)
    assert stats.throughput_img_per_s == pytest.approx(4 / (stats.mean_ms / 1000))
    assert stats.iterations == len(samples) and stats.warmup == 2
    assert tuple(stats.to_dict()) == LATENCY_KEYS


def test_timing_loop_runs_warmup_untimed_then_exactly_the_iterations():
    calls, ticks = [], iter(range(0, 10**9, 1_500_000))  # a clock that advances 1.5 ms per reading
    samples = time_calls(lambda: calls.append(1), warmup=3, iterations=7, clock=lambda: next(ticks))
    assert len(calls) == 10 and samples == [1.5] * 7


def test_the_host_and_the_kit_time_with_the_one_loop_and_bad_arguments_are_usage_errors():
    """bench.stats.time_calls is kit_stats.time_calls (the device kit's, kit_calibrate's) behind a usage-error
    mapping: one loop, so a device's samples and the build machine's are taken the same way."""
    import importlib
    import inspect
    import sys
    from pathlib import Path

    from wave_deploy._kit import kit_stats

    kit_dir = str(Path(kit_stats.__file__).parent)  # the kit imports its siblings by their plain names
    sys.path.insert(0, kit_dir)
    try:
        kit_calibrate = importlib.import_module("kit_calibrate")
    finally:
        sys.path.remove(kit_dir)
    assert kit_calibrate.time_calls is sys.modules["kit_stats"].time_calls
    assert inspect.getsource(kit_calibrate.time_calls) == inspect.getsource(kit_stats.time_calls)
    assert "kit_stats.time_calls(fn" in inspect.getsource(time_calls)
    ticks = iter(range(0, 10**9, 500_000))
    assert kit_stats.time_calls(lambda: None, warmup=1, iterations=3, clock=lambda: next(ticks)) == [0.5] * 3
    for bad in ({"iterations": 0}, {"warmup": -1}, {"min_duration_s": -1.0}):
        with pytest.raises(kit_stats.StatsError):
            kit_stats.time_calls(lambda: None, **bad)
        with pytest.raises(UsageError):
            time_calls(lambda: None, **bad)


def test_timing_loop_keeps_going_until_the_minimum_duration():
    ticks = iter(range(0, 10**9, 1_000_000))  # every call takes 1 ms by this clock
    samples = time_calls(lambda: None, warmup=0, iterations=5, min_duration_s=0.02, clock=lambda: next(ticks))
    assert len(samples) == 20


def test_onnxruntime_runner_reports_the_sessions_actual_providers_and_threads(onnx_file, model):
    runner = OrtRunner(onnx_file, providers=["cpu"], threads=1)
    assert runner.providers == runner.session.get_providers() == ["CPUExecutionProvider"]
    assert runner.threads == 1 and "CPUExecutionProvider" in runner.runtime
    x = ox.seeded_inputs(SPEC, 3)
    assert np.max(np.abs(runner.run(x) - ox.torch_outputs(model, x))) <= 1e-4
    stats = benchmark(runner, batch=2, warmup=1, iterations=5)
    assert stats.timed == TIMED_HOST_TO_HOST and stats.threads == 1 and stats.runtime == runner.runtime
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="CUDA provider is available here"
)
def test_onnxruntime_runner_refuses_a_provider_that_is_not_available(onnx_file):
    with pytest.raises(MissingDependencyError) as info:
        OrtRunner(onnx_file, providers=["cuda"])
    assert info.value.exit_code == EXIT_MISSING_DEPENDENCY


def test_torch_cpu_runner_runs_the_model_and_cannot_claim_compute_only_timing(model):
    runner = get_runner_class("torch")(model, (1, 28, 28), device="cpu", threads=1)
    x = ox.seeded_inputs(SPEC, 2)
    assert np.array_equal(runner.run(x), ox.torch_outputs(model, x))
    stats = benchmark(runner, batch=2, warmup=1, iterations=4, timed=TIMED_COMPUTE)
    assert stats.timed == TIMED_HOST_TO_HOST  # nothing to copy on a CPU: say what was really timed
    assert stats.iterations == 4 and stats.batch == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_cuda_runner_times_compute_only_and_matches_cpu(model):  # pragma: no cover - GPU machines
    runner = TorchRunner(model, (1, 28, 28), device="cuda")
    x = ox.seeded_inputs(SPEC, 4)
    assert np.max(np.abs(runner.run(x) - ox.torch_outputs(model.cpu(), x))) <= 1e-3
    stats = benchmark(runner, batch=4, warmup=2, iterations=10)
    assert stats.timed == TIMED_COMPUTE and "compute capability" in stats.hardware


def test_bench_cli_json_has_the_report_latency_keys(onnx_file):
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            str(onnx_file),
            "--batch",
            "2",
            "--iterations",
            "5",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"model", *LATENCY_KEYS}
    assert data["batch"] == 2 and data["iterations"] == 5 and data["threads"] == 1


def test_bench_cli_prints_a_trtexec_like_summary(onnx_file):
    result = CliRunner().invoke(cli, ["bench", str(onnx_file), "--iterations", "3", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert (
        "Throughput:" in result.stdout
        and "percentile(99%)" in result.stdout
        and "Timed: host-to-host" in result.stdout
    )


def test_bench_cli_exit_codes_for_bad_inputs(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["bench", str(tmp_path / "missing.onnx")]).exit_code == 3
    (tmp_path / "notes.txt").write_text("x")
    assert runner.invoke(cli, ["bench", str(tmp_path / "notes.txt")]).exit_code == 2
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    assert runner.invoke(cli, ["bench", str(tmp_path / "broken.onnx")]).exit_code == 3
    assert runner.invoke(cli, ["bench", str(tmp_path / "broken.onnx"), "--batch", "0"]).exit_code == 2
    if not torch.cuda.is_available():
        (tmp_path / "model.engine").write_bytes(b"engine bytes")
        assert runner.invoke(cli, ["bench", str(tmp_path / "model.engine")]).exit_code == 4
