"""TensorRT: profile -> build plan -> trtexec line (pure), and the engine build/load (lazy, GPU checked first).

TensorRT 10 networks are weakly typed: reduced precision is allowed by builder flags (FP16, INT8) on an fp32
ONNX. TensorRT >= 11 removed those flags: networks are strongly typed, so fp16 needs an ONNX already in
fp16 and int8 needs explicit Q/DQ nodes. ``make_build_plan`` chooses the path from the profile's
``software.tensorrt_version``; ``trtexec_command`` writes the same plan as a trtexec command line.

Nothing here imports TensorRT at module import. ``build_engine`` and ``load_engine`` check for a CUDA GPU
(through torch) *before* importing TensorRT, since TensorRT without a usable GPU can abort the process
instead of raising. An engine runs only on the GPU model and TensorRT version that built it: both are
written to ``engine.json`` beside the engine, and ``load_engine`` refuses a mismatch (exit 4).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wave_deploy.bench.engine import ENGINE_META, cuda_gpu, import_tensorrt
from wave_deploy.errors import InvalidInputError, MissingDependencyError, StageFailedError, UsageError
from wave_deploy.fileio import sha256_file, write_bytes, write_json
from wave_deploy.probe import host_name
from wave_deploy.profiles import DeviceProfile
from wave_deploy.target import TENSORRT_TYPED_PATH, Target, tensorrt_major

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"
PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchSettings:
    """How trtexec (and the on-device kit) time the engine."""

    iterations: int = 200
    warmup_ms: int = 500
    duration_s: int = 3
    avg_runs: int = 10
    percentiles: tuple = (50, 90, 95, 99)
    use_spin_wait: bool = True
    no_data_transfers: bool = True  # time GPU compute only ("compute only"); host copies excluded


@dataclass(frozen=True)
class BuildPlan:
    profile: str
    tensorrt_version: str  # the version the profile names, e.g. "10.3"
    tensorrt_major: int
    path: str  # TENSORRT_FLAGS_PATH | TENSORRT_TYPED_PATH (wave_deploy.target)
    precision: str  # fp32 | fp16 | int8
    onnx_variant: str  # "fp32" | "fp16" | "int8_qdq": which ONNX file the engine is built from
    builder_flags: list  # TensorRT BuilderFlag names to set (flags path only)
    disable_tf32: bool  # fp32 plans forbid TF32 so the engine keeps fp32 parity
    workspace_mib: int | None
    input_name: str
    min_shape: list
    opt_shape: list
    max_shape: list
    timing_cache: str  # file name, beside the engine
    engine_built_on_device: bool
    bench: BenchSettings = field(default_factory=BenchSettings)
    notes: list = field(default_factory=list)
    schema_version: int = PLAN_SCHEMA_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bench"]["percentiles"] = list(self.bench.percentiles)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> BuildPlan:
        data = dict(data)
        bench = dict(data.pop("bench", {}))
        if "percentiles" in bench:
            bench["percentiles"] = tuple(bench["percentiles"])
        try:
            return cls(bench=BenchSettings(**bench), **data)
        except TypeError as exc:
            raise InvalidInputError(f"invalid build plan: {exc}") from exc


def make_build_plan(profile: DeviceProfile, onnx_meta: dict) -> BuildPlan:
    """The builder settings for ``profile`` and an exported ONNX (``onnx_io()`` or OnnxExportResult.to_dict())."""
    if not Target.of(profile).tensorrt:
        raise UsageError(
            f"profile '{profile.name}' is not a TensorRT target (runtime {profile.software.runtime})",
            hint="CPU profiles run the ONNX model in ONNX Runtime",
        )
    version = profile.software.tensorrt_version
    if version is None:
        raise InvalidInputError(
            f"profile '{profile.name}': a TensorRT target needs software.tensorrt_version"
        )
    major = tensorrt_major(version)
    if major < 8:
        raise InvalidInputError(f"profile '{profile.name}': TensorRT {version} is too old (need >= 8.5)")
    target = Target.of(profile)
    path, precision = target.tensorrt_path, target.precision
    rt = profile.runtime
    shape = list(onnx_meta["input_shape"])
    if len(shape) != 4:
        raise InvalidInputError(f"expected an image input (B, C, H, W), got shape {shape}")
    if isinstance(shape[0], int) and not rt.batch_min == rt.batch_max == shape[0]:
        raise InvalidInputError(
            f"the ONNX batch axis is fixed at {shape[0]} but profile '{profile.name}' asks for batch "
            f"{rt.batch_min}..{rt.batch_max}; export with a dynamic batch axis"
        )
    sample = [int(d) for d in shape[1:]]
    notes = []
    if sample[-1] != rt.input_size_px:
        notes.append(
            f"model input is {sample[-1]} px but the profile's budgets were set for {rt.input_size_px} px"
        )
    if path == TENSORRT_TYPED_PATH and precision != "fp32":
        notes.append(f"TensorRT {major} is strongly typed: {precision} comes from the ONNX file, not a flag")
    return BuildPlan(
        profile=profile.name,
        tensorrt_version=str(version),
        tensorrt_major=major,
        path=path,
        precision=precision,
        onnx_variant=target.engine_source.key,
        builder_flags=target.tensorrt_flags,
        disable_tf32=target.disable_tf32,
        workspace_mib=rt.workspace_mib,
        input_name=onnx_meta["input_name"],
        min_shape=[rt.batch_min, *sample],
        opt_shape=[rt.batch_opt, *sample],
        max_shape=[rt.batch_max, *sample],
        timing_cache=TIMING_CACHE,
        engine_built_on_device=profile.software.engine_built_on_device,
        notes=notes,
    )


def _shape_arg(name: str, shape: list) -> str:
    return f"{name}:{'x'.join(str(d) for d in shape)}"


def trtexec_command(
    plan: BuildPlan,
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    trtexec: str = "trtexec",
    benchmark: bool = True,
    export_times: str | Path | None = None,
) -> list[str]:
    """The trtexec argv that builds (and, with ``benchmark``, times) the engine described by ``plan``."""
    engine_path = Path(engine_path)
    cmd = [
        trtexec,
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={_shape_arg(plan.input_name, plan.min_shape)}",
        f"--optShapes={_shape_arg(plan.input_name, plan.opt_shape)}",
        f"--maxShapes={_shape_arg(plan.input_name, plan.max_shape)}",
    ]
    if plan.path == TENSORRT_TYPED_PATH:
        cmd.append("--stronglyTyped")
    else:
        cmd += [f"--{flag.lower()}" for flag in plan.builder_flags]
    if plan.disable_tf32:
        cmd.append("--noTF32")
    if plan.workspace_mib:
        unit = "M" if plan.tensorrt_major >= 10 else ""  # TensorRT < 10 reads a bare number as MiB
        cmd.append(f"--memPoolSize=workspace:{plan.workspace_mib}{unit}")
    cmd.append(f"--timingCacheFile={engine_path.parent / plan.timing_cache}")
    if not benchmark:
        cmd.append("--skipInference" if plan.tensorrt_major >= 10 else "--buildOnly")
        return cmd
    b = plan.bench
    cmd += [
        f"--shapes={_shape_arg(plan.input_name, plan.opt_shape)}",
        f"--iterations={b.iterations}",
        f"--warmUp={b.warmup_ms}",
        f"--duration={b.duration_s}",
        f"--avgRuns={b.avg_runs}",
        f"--percentile={','.join(str(p) for p in b.percentiles)}",
    ]
    if b.use_spin_wait:
        cmd.append("--useSpinWait")
    if b.no_data_transfers:
        cmd.append("--noDataTransfers")
    if export_times is not None:
        cmd.append(f"--exportTimes={export_times}")
    return cmd


# --- local build and load (GPU machines with TensorRT) ------------------------------------------------


def build_engine(plan: BuildPlan, onnx_path: str | Path, engine_path: str | Path) -> dict:
    """Build and serialize an engine with the TensorRT Python API; write engine.json beside it."""
    gpu = cuda_gpu()
    trt = import_tensorrt()
    local_major = tensorrt_major(trt.__version__)
    if local_major != plan.tensorrt_major:
        raise MissingDependencyError(
            f"the plan is for TensorRT {plan.tensorrt_version} but TensorRT {trt.__version__} is installed"
        )
    engine_path = Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.path == TENSORRT_TYPED_PATH:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif local_major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StageFailedError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if plan.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mib << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.disable_tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(plan.input_name, plan.min_shape, plan.opt_shape, plan.max_shape)
    config.add_optimization_profile(opt_profile)
    cache_path = engine_path.parent / plan.timing_cache
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageFailedError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    write_bytes(engine_path, bytes(serialized))
    write_bytes(cache_path, bytes(cache.serialize()))
    meta = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "tensorrt_version": trt.__version__,
        **gpu,
        "host": host_name(),
        "precision": plan.precision,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path),
        "plan": plan.to_dict(),
    }
    write_json(engine_path.parent / ENGINE_META, meta)
    log.info("built %s (TensorRT %s on %s)", engine_path, trt.__version__, gpu["gpu_name"])
    return meta
