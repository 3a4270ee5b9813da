"""TensorRT: profile -> build plan -> trtexec line for every shipped profile; engine/GPU compatibility."""

from __future__ import annotations

import json
import sys

import pytest

from wave_deploy.bench import engine as trt_engine
from wave_deploy.errors import EXIT_MISSING_DEPENDENCY, InvalidInputError, MissingDependencyError, UsageError
from wave_deploy.exporters import tensorrt as trt_x
from wave_deploy.profiles import list_profiles, load_profile
from wave_deploy.target import tensorrt_major

ONNX_META = {"input_name": "input", "input_shape": ["batch", 1, 28, 28], "output_name": "logits",
             "output_shape": ["batch", 10]}  # fmt: skip
PROFILES = list_profiles()


def with_trt(profile, version: str, precision: str | None = None):
    software = profile.software.model_copy(update={"tensorrt_version": version})
    runtime = profile.runtime.model_copy(update={"precision": precision or profile.runtime.precision})
    return profile.model_copy(update={"software": software, "runtime": runtime})


def flag_value(cmd: list[str], flag: str) -> str:
    values = [arg.split("=", 1)[1] for arg in cmd if arg.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} appears {len(values)} times in {cmd}"
    return values[0]


def test_shipped_profiles_include_tensorrt_and_cpu_targets():
    runtimes = {p.software.runtime for p in PROFILES}
    assert runtimes == {"tensorrt", "onnxruntime"}


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_every_shipped_profile_yields_a_valid_plan_and_trtexec_line_or_says_it_is_not_a_target(profile):
    if profile.software.runtime != "tensorrt":
        with pytest.raises(UsageError, match="not a TensorRT target"):
            trt_x.make_build_plan(profile, ONNX_META)
        return
    plan = trt_x.make_build_plan(profile, ONNX_META)
    rt = profile.runtime
    assert plan.min_shape == [rt.batch_min, 1, 28, 28] and plan.max_shape == [rt.batch_max, 1, 28, 28]
    assert plan.opt_shape == [rt.batch_opt, 1, 28, 28]
    assert plan.precision == rt.precision and plan.workspace_mib == rt.workspace_mib
    assert plan.engine_built_on_device == profile.software.engine_built_on_device
    cmd = trt_x.trtexec_command(plan, "model.onnx", "out/model.engine")
    assert cmd[0] == "trtexec"
    assert flag_value(cmd, "--onnx") == "model.onnx" and flag_value(cmd, "--saveEngine") == "out/model.engine"
    assert flag_value(cmd, "--minShapes") == f"input:{rt.batch_min}x1x28x28"
    assert flag_value(cmd, "--optShapes") == f"input:{rt.batch_opt}x1x28x28"
    assert flag_value(cmd, "--maxShapes") == f"input:{rt.batch_max}x1x28x28"
    assert flag_value(cmd, "--timingCacheFile") == "out/timing.cache"
    assert flag_value(cmd, "--percentile") == "50,90,95,99"
    if rt.workspace_mib:
        assert flag_value(cmd, "--memPoolSize") == f"workspace:{rt.workspace_mib}M"
    major = tensorrt_major(profile.software.tensorrt_version)
    if major >= 11:
        assert "--stronglyTyped" in cmd and "--fp16" not in cmd and "--int8" not in cmd
    else:
        assert ("--fp16" in cmd) == (rt.precision in ("fp16", "int8"))
        assert ("--int8" in cmd) == (rt.precision == "int8")
    assert {"--useSpinWait", "--noDataTransfers"} <= set(cmd)
    build_only = trt_x.trtexec_command(plan, "model.onnx", "model.engine", benchmark=False)
    assert "--skipInference" in build_only and not any(a.startswith("--iterations") for a in build_only)


@pytest.mark.parametrize(
    ("version", "precision", "path", "variant", "flags", "cli_flags"),
    [
        ("10.3", "fp16", "flags", "fp32", ["FP16"], ["--fp16"]),
        ("10.3", "int8", "flags", "int8_qdq", ["INT8", "FP16"], ["--int8", "--fp16"]),
        ("10.3", "fp32", "flags", "fp32", [], ["--noTF32"]),
        ("11.0", "fp16", "strongly_typed", "fp16", [], ["--stronglyTyped"]),
        ("11.0", "int8", "strongly_typed", "int8_qdq", [], ["--stronglyTyped"]),
    ],
)
def test_tensorrt_10_uses_builder_flags_and_11_is_strongly_typed(
    version, precision, path, variant, flags, cli_flags
):
    profile = with_trt(load_profile("jetson"), version, precision)
    plan = trt_x.make_build_plan(profile, ONNX_META)
    assert (plan.path, plan.onnx_variant, plan.builder_flags) == (path, variant, flags)
    assert plan.disable_tf32 == (precision == "fp32")
    cmd = trt_x.trtexec_command(plan, "m.onnx", "m.engine")
    precision_args = [a for a in cmd if a in ("--fp16", "--int8", "--stronglyTyped", "--noTF32")]
    assert precision_args == cli_flags


def test_plan_survives_a_json_round_trip():
    plan = trt_x.make_build_plan(load_profile("jetson"), ONNX_META)
    assert trt_x.BuildPlan.from_dict(json.loads(plan.to_json())) == plan


def test_plan_notes_a_model_resolution_other_than_the_profiles():
    plan = trt_x.make_build_plan(load_profile("jetson"), ONNX_META)
    assert any("28 px" in note and "224 px" in note for note in plan.notes)


def test_static_batch_onnx_cannot_serve_a_batch_range():
    static = {**ONNX_META, "input_shape": [1, 1, 28, 28]}
    with pytest.raises(InvalidInputError, match="batch axis is fixed"):
        trt_x.make_build_plan(load_profile("jetson"), static)


def test_unreadable_or_too_old_tensorrt_version_is_invalid():
    with pytest.raises(InvalidInputError):
        trt_x.make_build_plan(with_trt(load_profile("jetson"), "seven"), ONNX_META)
    with pytest.raises(InvalidInputError, match="too old"):
        trt_x.make_build_plan(with_trt(load_profile("jetson"), "7.1"), ONNX_META)


BUILT = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}


def test_engine_compat_accepts_the_building_machine():
    trt_engine.check_engine_compat(
        BUILT, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7"
    )


@pytest.mark.parametrize(
    ("here", "named"),
    [
        ({"tensorrt_version": "10.7.0"}, "TensorRT version '10.3.0' (here: '10.7.0')"),
        ({"gpu_name": "NVIDIA L4"}, "GPU 'Orin' (here: 'NVIDIA L4')"),
        ({"compute_capability": "8.9"}, "compute capability '8.7' (here: '8.9')"),
    ],
)
def test_engine_compat_refuses_another_gpu_or_tensorrt_with_exit_4(here, named):
    current = {**BUILT, **here}
    with pytest.raises(MissingDependencyError) as info:
        trt_engine.check_engine_compat(BUILT, **current)
    assert info.value.exit_code == EXIT_MISSING_DEPENDENCY
    assert named in str(info.value)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="checks the no-GPU path")
def test_without_a_gpu_build_and_load_fail_with_exit_4_before_importing_tensorrt(tmp_path):
    sys.modules.pop("tensorrt", None)
    plan = trt_x.make_build_plan(load_profile("jetson"), ONNX_META)
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        trt_x.build_engine(plan, tmp_path / "m.onnx", tmp_path / "m.engine")
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    with pytest.raises(MissingDependencyError, match="no CUDA GPU"):
        trt_engine.load_engine(tmp_path / "m.engine")
    assert "tensorrt" not in sys.modules
    usable, why = trt_engine.tensorrt_status()
    assert not usable and "no CUDA GPU" in why


def _tensorrt_usable() -> bool:
    if not _has_gpu():  # the GPU first: never import tensorrt without one
        return False
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _tensorrt_usable(), reason="needs a CUDA GPU and the tensorrt package")
def test_real_engine_build_matches_pytorch_and_records_its_gpu(tmp_path):  # pragma: no cover - GPU machines
    import numpy as np
    import tensorrt
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.bench.runners import TensorRTRunner
    from wave_deploy.exporters import onnx as ox
    from wave_deploy.spec import ViTSpec

    spec = ViTSpec(depth=2, embed_dim=32, num_heads=2, patch_size=7)
    torch.manual_seed(0)
    model = VisionTransformer(**spec.timm_kwargs()).eval()
    ox.export_onnx(model, spec, tmp_path / "model.onnx", batch_min=1, batch_max=8)
    profile = with_trt(load_profile("nvidia-l4"), tensorrt.__version__, "fp32")
    plan = trt_x.make_build_plan(profile, ox.onnx_io(tmp_path / "model.onnx"))
    meta = trt_x.build_engine(plan, tmp_path / "model.onnx", tmp_path / "model.engine")
    assert (
        meta["gpu_name"] == torch.cuda.get_device_name(0) and meta["tensorrt_version"] == tensorrt.__version__
    )
    runner = TensorRTRunner(tmp_path / "model.engine")
    for batch in (1, 8):
        x = ox.seeded_inputs(spec, batch, seed=batch)
        err = np.max(np.abs(runner.run(x) - ox.torch_outputs(model, x)))
        assert err <= ox.TOLERANCES["fp32"].atol  # fp32 engine, TF32 disabled
