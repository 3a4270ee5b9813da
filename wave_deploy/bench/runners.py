"""Runners: one small interface over PyTorch, ONNX Runtime and TensorRT, and the benchmark loop.

A runner executes one model on one runtime. ``run`` is host-to-host (numpy in, numpy out) and is what parity
checks use; ``timed_call`` returns a zero-argument callable for the timing loop, either "compute only"
(input already on the device, output left there, device synchronized) or "host-to-host". On a CPU the two
are the same thing and runners report "host-to-host". Heavy imports happen inside the classes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from wave_deploy import probe
from wave_deploy.bench.engine import load_engine
from wave_deploy.bench.stats import (
    TIMED_COMPUTE,
    TIMED_HOST_TO_HOST,
    LatencyStats,
    cpu_description,
    summarize,
    time_calls,
)
from wave_deploy.errors import InvalidInputError, MissingDependencyError, UsageError

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@runtime_checkable
class Runner(Protocol):
    name: str  # "torch" | "onnxruntime" | "tensorrt"
    runtime: (
        str  # runtime, version and what actually executes, e.g. "onnxruntime 1.32.0 [CPUExecutionProvider]"
    )
    hardware: str
    sample_shape: tuple[int, ...]  # one input sample, without the batch axis: (C, H, W)
    on_device: bool  # True when the model runs on an accelerator (compute-only timing is meaningful)

    @property
    def threads(self) -> int | None: ...  # intra-op threads, where the runtime has such a setting

    def run(self, inputs: np.ndarray) -> np.ndarray: ...

    def timed_call(self, inputs: np.ndarray, timed: str) -> Callable[[], object]: ...


def available_threads() -> int:
    return probe.usable_cores()


def gpu_description() -> str:
    return probe.gpu_description()


class TorchRunner:
    """PyTorch eager on CPU or CUDA; CUDA timing synchronizes the device inside the timed call."""

    name = "torch"

    def __init__(
        self, model, sample_shape: tuple[int, ...], *, device: str = "cpu", threads: int | None = None
    ):
        import torch

        if device not in ("cpu", "cuda"):
            raise UsageError(f"torch device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not probe.cuda_available():
            raise MissingDependencyError("torch runner on 'cuda' needs a CUDA GPU; none is available")
        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device
        # a copy: moving the caller's own module to the GPU would change it under the caller (and a caller's
        # later .cpu() would move the runner's model back; found by scripts/gpu_check.sh on an H200)
        self.model = copy.deepcopy(model).to(device).eval()
        self.sample_shape = tuple(sample_shape)
        self.threads = torch.get_num_threads()
        self.on_device = device == "cuda"
        self.runtime = f"torch {torch.__version__} eager [{device}]"
        self.hardware = gpu_description() if self.on_device else cpu_description()

    def _sync(self) -> None:
        if self.on_device:
            self._torch.cuda.synchronize()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device))
        return out.float().cpu().numpy()

    def timed_call(self, inputs: np.ndarray, timed: str) -> Callable[[], object]:
        torch = self._torch
        if timed == TIMED_COMPUTE and self.on_device:
            x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)

            def call():
                with torch.inference_mode():
                    self.model(x)
                self._sync()

            return call
        return lambda: self.run(inputs)


class OrtRunner:
    """An ONNX Runtime session; reports the providers the session actually uses, not the requested ones."""

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        strict_providers: bool = True,
    ):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise InvalidInputError(f"ONNX model {path} does not exist")
        self.path = path
        requested = [_PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or ["CPUExecutionProvider"])]
        available = probe.ort_providers()
        missing = [p for p in requested if p not in available]
        if missing and strict_providers:
            raise MissingDependencyError(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available here",
                hint=f"available: {', '.join(available)}",
            )
        self.threads = threads or available_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise InvalidInputError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.providers = list(self.session.get_providers())
        if self.providers[0] != requested[0]:
            log.warning("requested %s but the session runs on %s", requested[0], self.providers)
        self.on_device = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.runtime = f"onnxruntime {ort.__version__} [{', '.join(self.providers)}]"
        self.hardware = gpu_description() if self.on_device else cpu_description()
        first = _image_input(path, self.session.get_inputs())
        self.input_name = first.name
        self.input_dtype = _ORT_DTYPES[first.type]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.sample_shape = tuple(int(d) for d in first.shape[1:])
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        self._ort = ort

    def check_batch(self, batch: int) -> None:
        """InvalidInputError when the model's batch axis is fixed to another size than ``batch``."""
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise InvalidInputError(
                f"ONNX model {self.path} takes a fixed batch of {self.fixed_batch}; batch {batch} cannot run it",
                hint=f"use --batch {self.fixed_batch}, or export the model with a dynamic batch axis",
            )

    def run(self, inputs: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(inputs, dtype=self.input_dtype)}
        return self.session.run(self.output_names[:1], feed)[0]

    def timed_call(self, inputs: np.ndarray, timed: str) -> Callable[[], object]:
        if timed == TIMED_COMPUTE and self.on_device:
            binding = self.session.io_binding()
            value = self._ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(inputs, dtype=self.input_dtype), "cuda", 0
            )
            binding.bind_ortvalue_input(self.input_name, value)
            binding.bind_output(self.output_names[0], "cuda")

            def call():
                self.session.run_with_iobinding(binding)
                binding.synchronize_outputs()

            return call
        return lambda: self.run(inputs)


IMAGE_INPUT = "one float image input of shape (batch, C, H, W) with fixed C, H and W"


def _describe_inputs(inputs) -> str:
    shown = ", ".join(
        f"{i.name!r} {i.type} {list(i.shape) if i.shape is not None else '?'}" for i in inputs[:4]
    )
    return shown + (f", ... ({len(inputs)} in all)" if len(inputs) > 4 else "") if inputs else "none"


def _image_input(path: Path, inputs):
    """The model's one input when it is a float image batch (what bench feeds); else InvalidInputError
    naming what the model takes and what bench needs."""
    problem = None
    if len(inputs) != 1:
        problem = f"{len(inputs)} inputs"
    elif inputs[0].type not in _ORT_DTYPES:
        problem = f"a {inputs[0].type} input"
    elif inputs[0].shape is None or len(inputs[0].shape) != 4:
        problem = f"a {0 if inputs[0].shape is None else len(inputs[0].shape)}-D input"
    elif not all(isinstance(d, int) and d > 0 for d in inputs[0].shape[1:]):
        problem = "an input whose C, H or W is not a fixed size"
    if problem is not None:
        raise InvalidInputError(
            f"ONNX model {path} takes {problem} ({_describe_inputs(inputs)}); bench needs {IMAGE_INPUT} "
            f"({', '.join(_ORT_DTYPES)})"
        )
    return inputs[0]


class TensorRTRunner:
    """A deserialized TensorRT engine (TensorRT >= 10 tensor API), buffers allocated with torch on CUDA."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path):
        import torch

        self._torch = torch
        self.engine, self.trt, meta = load_engine(engine_path)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = [self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names]
        self.input_name = next(n for n, i in zip(names, is_input) if i)
        self.output_name = next(n for n, i in zip(names, is_input) if not i)
        self.sample_shape = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name)[1:])
        self.threads = None
        self.on_device = True
        self.runtime = f"tensorrt {self.trt.__version__} [{meta.get('precision', '?')}]"
        self.hardware = gpu_description()

    def _device_buffers(self, inputs: np.ndarray):
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        y = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        return x, y

    def _execute(self) -> None:
        stream = self._torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        _, y = self._device_buffers(inputs)
        self._execute()
        return y.cpu().numpy()

    def timed_call(self, inputs: np.ndarray, timed: str) -> Callable[[], object]:
        if timed == TIMED_COMPUTE:
            buffers = self._device_buffers(inputs)  # kept alive by the closure

            def call():
                self._execute()
                return buffers

            return call
        return lambda: self.run(inputs)


def open_runner(
    path: str | Path, *, providers: list[str] | None = None, threads: int | None = None
) -> Runner:
    """A runner for a model file: ``.onnx`` -> ONNX Runtime; ``.engine``/``.plan``/``.trt`` -> TensorRT."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OrtRunner(path, providers=providers, threads=threads)
    if suffix in (".engine", ".plan", ".trt"):
        if not path.is_file():
            raise InvalidInputError(f"TensorRT engine {path} does not exist")
        return TensorRTRunner(path)
    raise UsageError(f"cannot benchmark {path}: expected a .onnx model or a TensorRT .engine/.plan file")


def seeded_inputs(sample_shape: tuple[int, ...], batch: int, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 inputs of shape (batch, *sample_shape), identical for the same seed."""
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    return np.random.default_rng(seed).standard_normal((batch, *sample_shape)).astype(np.float32)


def benchmark(runner: Runner, **options) -> LatencyStats:
    """Time ``runner`` on seeded inputs of one batch size (options: see ``benchmark_samples``)."""
    return benchmark_samples(runner, **options)[0]


def benchmark_samples(
    runner: Runner,
    *,
    batch: int = 1,
    warmup: int = 10,
    iterations: int = 100,
    min_duration_s: float = 0.0,
    timed: str | None = None,
    seed: int = 0,
) -> tuple[LatencyStats, list[float]]:
    """Time ``runner`` on seeded inputs of one batch size; compute-only on accelerators unless asked otherwise.

    Returns the statistics and the per-iteration latencies in ms (for histograms).
    """
    if timed is None:
        timed = TIMED_COMPUTE if runner.on_device else TIMED_HOST_TO_HOST
    if timed not in (TIMED_COMPUTE, TIMED_HOST_TO_HOST):
        raise UsageError(f"timed must be '{TIMED_COMPUTE}' or '{TIMED_HOST_TO_HOST}', got {timed!r}")
    if timed == TIMED_COMPUTE and not runner.on_device:
        timed = TIMED_HOST_TO_HOST  # on a CPU there is nothing to copy: say what was really timed
    if isinstance(runner, OrtRunner):
        runner.check_batch(batch)
    call = runner.timed_call(seeded_inputs(runner.sample_shape, batch, seed), timed)
    samples = time_calls(call, warmup=warmup, iterations=iterations, min_duration_s=min_duration_s)
    stats = summarize(
        samples,
        batch=batch,
        warmup=warmup,
        timed=timed,
        runtime=runner.runtime,
        hardware=runner.hardware,
        threads=runner.threads,
    )
    return stats, list(samples)
