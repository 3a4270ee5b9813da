"""wave_deploy.target: one object answers every deployment question of a profile, and every stage asks it."""

from __future__ import annotations

import pytest

from wave_deploy.errors import InvalidInputError
from wave_deploy.profiles import apply_overrides, list_profiles, load_profile
from wave_deploy.target import DTYPE_BYTES, Target, tensorrt_major

# The whole decision table, written out once by hand: (runtime, precision, int8 method, TensorRT major) ->
# (file the device runs, weights, activations, engine source file, builder flags).
EXPECTED = {
    ("onnxruntime", "fp32", "static", None): ("model.onnx", "fp32", "fp32", None, None),
    ("onnxruntime", "fp16", "static", None): ("model.fp16.onnx", "fp16", "fp16", None, None),
    ("onnxruntime", "int8", "static", None): ("model.int8.onnx", "int8", "fp32", None, None),
    ("onnxruntime", "int8", "dynamic", None): ("model.int8.onnx", "int8", "fp32", None, None),
    ("tensorrt", "fp32", "static", 10): ("model.onnx", "fp32", "fp32", "model.onnx", []),
    ("tensorrt", "fp16", "static", 10): ("model.fp16.onnx", "fp16", "fp16", "model.onnx", ["FP16"]),
    ("tensorrt", "int8", "static", 10): ("model.int8.qdq.onnx", "int8", "fp16", "model.int8.qdq.onnx", ["INT8", "FP16"]),
    ("tensorrt", "fp32", "static", 11): ("model.onnx", "fp32", "fp32", "model.onnx", []),
    ("tensorrt", "fp16", "static", 11): ("model.fp16.onnx", "fp16", "fp16", "model.fp16.onnx", []),
    ("tensorrt", "int8", "static", 11): ("model.int8.qdq.onnx", "int8", "fp16", "model.int8.qdq.onnx", []),
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(EXPECTED, key=str))
def test_target_answers_the_decision_table(key):
    runtime, precision, method, major = key
    target = Target(
        profile="p", runtime=runtime, precision=precision, int8_method=method,
        tensorrt_version=None if major is None else f"{major}.3",
    )  # fmt: skip
    file, weights, activations, engine_file, flags = EXPECTED[key]
    assert (target.deployed.file, target.weight_dtype, target.activation_dtype) == (
        file,
        weights,
        activations,
    )
    assert target.deployed.precision == precision
    if runtime == "tensorrt":
        assert (target.engine_source.file, target.tensorrt_flags) == (engine_file, flags)
        assert target.disable_tf32 == (precision == "fp32")
        assert target.bench_variant.file == "model.onnx"  # the fp32 model stands in for the engine here
    else:
        with pytest.raises(InvalidInputError, match="not a TensorRT target"):
            _ = target.tensorrt_flags
        assert target.bench_variant.file == ("model.onnx" if precision == "fp16" else file)
    # every export makes fp16 and this target's int8, so every report shows all three precisions
    assert [v.precision for v in target.variants] == ["fp16", "int8"]
    assert target.variants[1] == target.int8_variant


@pytest.mark.parametrize("profile", list_profiles(), ids=lambda p: p.name)
def test_target_of_a_profile_reads_its_runtime_precision_method_and_version(profile):
    target = Target.of(profile)
    assert (target.runtime, target.precision, target.int8_method, target.tensorrt_version) == (
        profile.software.runtime,
        profile.runtime.precision,
        profile.runtime.int8_method,
        profile.software.tensorrt_version,
    )
    int8 = Target.of(apply_overrides(profile, ["runtime.precision=int8"]))
    assert int8.deployed.method == "static-qdq"
    assert int8.deployed.quantized_for == profile.software.runtime  # u8/s8 kernels vs symmetric Q/DQ
    assert "int8" in int8.describe() and (int8.tensorrt or "static-qdq" in int8.describe())


def test_the_latency_memory_and_export_paths_ask_the_target():
    """The modules that used to keep their own precision tables now read the Target (no second table)."""
    from wave_deploy.planning.latency import predict_analytic
    from wave_deploy.planning.memory import predict_memory
    from wave_deploy.spec import ViTSpec, weight_bytes

    spec = ViTSpec(depth=2, embed_dim=64, num_heads=2, img_size=32, patch_size=4, in_chans=3, num_classes=10)
    for name, precision in (("x86-cpu", "int8"), ("jetson", "int8"), ("jetson", "fp16"), ("x86-cpu", "fp32")):
        profile = apply_overrides(load_profile(name), [f"runtime.precision={precision}"])
        target = Target.of(profile)
        memory = predict_memory(spec, profile)
        assert (memory.weight_precision, memory.activation_precision) == (
            target.weight_dtype,
            target.activation_dtype,
        )
        assert memory.weights_mib == weight_bytes(spec, target.weight_dtype) / (1 << 20)
        assert predict_analytic(spec, profile, 1).latency_ms > 0


def test_dtype_sizes_and_tensorrt_versions():
    assert DTYPE_BYTES == {"fp32": 4, "fp16": 2, "int8": 1}
    assert tensorrt_major("10.3") == 10 and tensorrt_major("11") == 11
    with pytest.raises(InvalidInputError, match="cannot read a TensorRT version"):
        tensorrt_major("ten")
