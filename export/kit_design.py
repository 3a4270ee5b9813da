"""The calibration design as the bundle ships it, and the one way its weights are made: numpy and stdlib only.

A bundle's ``calibration.zip`` holds ``index.json`` and one ONNX graph per design model. Each graph keeps its
structure and its small constants (shapes, per-tensor scales) inline; its weights are ONNX *external data*
that is not shipped: ``index.json`` lists, per graph, every external tensor's byte range, element type and
fill rule, and ``materialize`` writes the data file from seeded random values so that ONNX Runtime (or
trtexec) loads a complete model. Timing does not depend on the values of weights; it depends on their
shapes, element types and on every tensor being distinct memory, which this keeps.

Fill rules: ``["normal", std]`` (floats), ``["int", lo, hi]`` (integers, both ends included), ``["const",
value]`` (quantization scales and zero points). wave-deploy makes the graphs and imports this module too
(``wave_deploy._kit.kit_design``), so the build machine's calibration writes the same bytes as the device's.
No wave-deploy, torch, timm or onnx imports here.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

DESIGN_SCHEMA_VERSION = 1
INDEX = "index.json"
DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "int32": np.int32}
MAX_DATA_BYTES = 64 << 30  # one design model's weights: far above any size the design makes
CHUNK = 1 << 22  # elements generated at a time: bounded memory for any tensor size


class DesignError(ValueError):
    """A design archive or entry that cannot be used (the callers map it to their exit code)."""


def fill_values(fill: list, dtype: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of ``dtype`` by the fill rule ``fill``."""
    kind, np_type = fill[0], DTYPES[dtype]
    if kind == "const":
        return np.full(n, fill[1], dtype=np_type)
    if kind == "normal":
        return (rng.standard_normal(n, dtype=np.float32) * np.float32(fill[1])).astype(np_type)
    if kind == "int":
        return rng.integers(int(fill[1]), int(fill[2]), size=n, endpoint=True).astype(np_type)
    raise DesignError(f"unknown fill rule {fill!r}")


def check_tensors(tensors: list, data_bytes: int) -> None:
    """Every entry [offset, length, dtype, fill] inside [0, data_bytes), a whole number of elements, in
    ascending non-overlapping order."""
    if not isinstance(data_bytes, int) or not 0 <= data_bytes <= MAX_DATA_BYTES:
        raise DesignError(f"data size {data_bytes!r} is out of range")
    end = 0
    for entry in tensors:
        if not (isinstance(entry, list) and len(entry) == 4 and entry[2] in DTYPES):
            raise DesignError(f"bad tensor entry {entry!r}")
        offset, length, dtype, _ = entry
        size = np.dtype(DTYPES[dtype]).itemsize
        if not (isinstance(offset, int) and isinstance(length, int) and offset >= end and length > 0):
            raise DesignError(f"tensor entry {entry!r} overlaps or is out of order")
        if length % size or offset + length > data_bytes:
            raise DesignError(f"tensor entry {entry!r} does not fit the data file of {data_bytes} bytes")
        end = offset + length


def write_data(path: Path, tensors: list, data_bytes: int, seed: int) -> Path:
    """The external-data file of one graph: each tensor's values at its offset, zeros between."""
    check_tensors(tensors, data_bytes)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.truncate(data_bytes)
        for offset, length, dtype, fill in tensors:
            little = np.dtype(DTYPES[dtype]).newbyteorder("<")  # ONNX raw data is little-endian
            n = length // little.itemsize
            fh.seek(offset)
            fh.writelines(
                fill_values(fill, dtype, min(CHUNK, n - start), rng).astype(little).tobytes()
                for start in range(0, n, CHUNK)
            )
    return path


class Design:
    """A calibration.zip: ``index`` (its index.json) and ``materialize(model, directory)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            self.index = json.loads(self._zip.read(INDEX).decode("utf-8"), parse_constant=_no_constant)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise DesignError(f"cannot read the calibration design {self.path}: {exc}") from exc
        if not isinstance(self.index, dict) or self.index.get("schema_version") != DESIGN_SCHEMA_VERSION:
            raise DesignError(f"{self.path}: not a version-{DESIGN_SCHEMA_VERSION} calibration design")
        try:
            for model in self.index["models"]:
                check_tensors(model["tensors"], model["data_bytes"])
        except (KeyError, TypeError) as exc:
            raise DesignError(f"{self.path}: index.json lacks {exc}") from exc

    @property
    def models(self) -> list[dict]:
        return list(self.index["models"])

    def materialize(self, model: dict, directory: str | Path) -> Path:
        """Write ``model``'s graph and its data file into ``directory``; returns the graph's path."""
        directory = Path(directory)
        graph = directory / model["graph"]
        graph.write_bytes(self._zip.read(model["graph"]))
        write_data(directory / model["data"], model["tensors"], model["data_bytes"], model["seed"])
        return graph

    def read(self, name: str) -> bytes:
        return self._zip.read(name)

    def close(self) -> None:
        self._zip.close()


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# --- how long a calibration takes: the same estimate on the build machine and on the device -----------


def point_seconds(latency_ms: float, timing: dict, passes: int) -> float:
    """Seconds one (model, batch) point costs over ``passes`` passes: warm-up runs, then timed runs until
    both the iteration count and the minimum duration are reached."""
    run_s = latency_ms / 1e3
    timed = max(timing["iterations"] * run_s, timing["min_duration_s"])
    return passes * (timing["warmup"] * run_s + timed)


def estimate_latency_ms(gflop: float, kernels: int, gflop_per_s: float) -> float:
    """A rough latency from the GEMM speed a probe measured: the GFLOP at 60% of it, plus 5 us per kernel."""
    return 1e3 * gflop / (0.6 * gflop_per_s) + 0.005 * kernels


def clock_text(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def gemm_gflops(session, m: int, k: int, n: int) -> float:
    """GFLOP/s of an ONNX Runtime session of one (m, k) x (k, n) MatMul (inputs "a" and "b"): one warm-up run,
    then runs for at least 0.2 s and 3 runs. The one probe of a machine's GEMM speed, here and on the device."""
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.standard_normal((m, k), dtype=np.float32),
        "b": rng.standard_normal((k, n), dtype=np.float32),
    }
    session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.2 or runs < 3:
        session.run(None, feed)
        runs += 1
    return 2 * m * k * n * runs / (time.perf_counter() - start) / 1e9
