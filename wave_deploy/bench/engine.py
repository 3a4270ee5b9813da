"""TensorRT engine files at run time: which GPU and TensorRT built an engine (engine.json), whether this
machine may load it, and loading it. The TensorRT exporter writes engines and their engine.json; the runners
and the exporter's own check load them through here, so bench never imports the exporters.

TensorRT is imported only after a CUDA GPU was found: without one it can log an error and crash instead of
raising (wave_deploy.probe).
"""

from __future__ import annotations

import json
from pathlib import Path

from wave_deploy import probe
from wave_deploy.errors import InvalidInputError, MissingDependencyError

ENGINE_META = "engine.json"  # written beside every engine by exporters.tensorrt.build_engine


def cuda_gpu() -> dict:
    """Name and compute capability of CUDA device 0; MissingDependencyError when there is none."""
    try:
        return probe.cuda_gpu()
    except MissingDependencyError as exc:
        raise MissingDependencyError("no CUDA GPU is available: TensorRT engines need one") from exc


def import_tensorrt():
    """Import tensorrt, after making sure a CUDA GPU exists (never the other way round)."""
    return probe.import_tensorrt()


def tensorrt_status() -> tuple[bool, str]:
    """(True, version) when a GPU and TensorRT are usable here, else (False, why)."""
    try:
        return True, import_tensorrt().__version__
    except MissingDependencyError as exc:
        return False, exc.one_line()


def check_engine_compat(meta: dict, *, tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
    """Raise MissingDependencyError when this GPU/TensorRT is not the one recorded in ``meta`` (engine.json)."""
    expected = {
        "TensorRT version": (meta.get("tensorrt_version"), tensorrt_version),
        "GPU": (meta.get("gpu_name"), gpu_name),
        "compute capability": (meta.get("compute_capability"), compute_capability),
    }
    wrong = [
        f"{what} {built!r} (here: {here!r})" for what, (built, here) in expected.items() if built != here
    ]
    if wrong:
        raise MissingDependencyError(
            "this TensorRT engine was built for another machine: " + "; ".join(wrong),
            hint="rebuild it here from the ONNX (trtexec line in the bundle's README, or wave-deploy export)",
        )


def read_engine_meta(engine_path: str | Path) -> dict:
    meta_path = Path(engine_path).parent / ENGINE_META
    if not meta_path.is_file():
        raise InvalidInputError(
            f"{meta_path} is missing: cannot tell which GPU and TensorRT version built {engine_path}"
        )
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {meta_path}: {exc}") from exc


def load_engine(engine_path: str | Path):
    """Deserialize an engine after checking this GPU and TensorRT match engine.json: (engine, trt, meta)."""
    gpu = cuda_gpu()  # no GPU: exit 4 before anything else, and before TensorRT is imported
    meta = read_engine_meta(engine_path)
    trt = import_tensorrt()
    check_engine_compat(meta, tensorrt_version=trt.__version__, **gpu)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise InvalidInputError(f"TensorRT could not deserialize {engine_path}")
    return engine, trt, meta
