"""What a profile deploys, decided in one place: the runtime, the precision and every choice that follows.

A profile's ``software.runtime``, ``runtime.precision``, ``runtime.int8_method`` and
``software.tensorrt_version`` together decide which ONNX variants an export makes, which file the device runs,
at which element type its weights and activations live, and how TensorRT builds the engine. ``Target.of``
reads them once; the latency and memory models, calibration, the exporters, the bundle and the pipeline ask
the ``Target`` instead of keeping tables of their own.

    runtime       precision  file the device runs        weights  activations  TensorRT (10: flags / 11+: typed)
    onnxruntime   fp32       model.onnx                  fp32     fp32         -
    onnxruntime   fp16       model.fp16.onnx             fp16     fp16         -
    onnxruntime   int8       model.int8.onnx             int8     fp32 (*)     -
    tensorrt      fp32       model.onnx                  fp32     fp32         no flag, TF32 off / model.onnx
    tensorrt      fp16       model.onnx|model.fp16.onnx  fp16     fp16         FP16 / model.fp16.onnx
    tensorrt      int8       model.int8.qdq.onnx         int8     fp16 (**)    INT8+FP16 / Q/DQ file

(*) ONNX Runtime int8, static Q/DQ (the default) or dynamic: only the weight GEMMs are quantized; LayerNorm,
softmax, GELU, the attention products and the residual stream stay float32, so the tensors that dominate the
live activation memory are fp32. Measured, not assumed: ``benchmarks/int8_activations.py`` (docs/latency.md,
"int8 activations"). (**) TensorRT keeps the unquantized layers of an int8 engine in fp16; fp16 is the
conservative element type of its activations (not measurable on this project's machines).

Nothing here imports the profile schema at run time, so the lowest modules (``spec``) can use ``DTYPE_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wave_deploy.errors import InvalidInputError

if TYPE_CHECKING:
    from wave_deploy.profiles import DeviceProfile

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}  # bytes per element of each precision

FP32_FILE = "model.onnx"
TENSORRT_FLAGS_PATH = "flags"  # TensorRT <= 10: weakly typed networks, reduced precision by builder flags
TENSORRT_TYPED_PATH = "strongly_typed"  # TensorRT >= 11: the ONNX file carries the precision


@dataclass(frozen=True)
class Variant:
    """One ONNX file an export can make: its key (export.json, the bundle's ``models``), file and method."""

    precision: str  # "fp32" | "fp16" | "int8"
    key: str  # "fp32" | "fp16" | "int8" (ONNX Runtime) | "int8_qdq" (TensorRT's symmetric Q/DQ)
    file: str
    method: str  # "export" | "float16-cast-io" | "static-qdq" | "dynamic"
    quantized_for: str | None = None  # static Q/DQ: "onnxruntime" (u8/s8 kernels) or "tensorrt" (symmetric)


FP32 = Variant("fp32", "fp32", FP32_FILE, "export")
FP16 = Variant("fp16", "fp16", "model.fp16.onnx", "float16-cast-io")
INT8_ORT_STATIC = Variant("int8", "int8", "model.int8.onnx", "static-qdq", "onnxruntime")
INT8_ORT_DYNAMIC = Variant("int8", "int8", "model.int8.onnx", "dynamic")
INT8_TENSORRT = Variant("int8", "int8_qdq", "model.int8.qdq.onnx", "static-qdq", "tensorrt")
VARIANT_FILES = {v.key: v.file for v in (FP32, FP16, INT8_ORT_STATIC, INT8_TENSORRT)}  # key -> file name


def tensorrt_major(version: str) -> int:
    """The major version of a TensorRT version string ("10.3" -> 10); InvalidInputError when unreadable."""
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:
        raise InvalidInputError(f"cannot read a TensorRT version from {version!r}") from exc


@dataclass(frozen=True)
class Target:
    """The deployment decisions of one profile. Build it with ``Target.of(profile)``."""

    profile: str
    runtime: str  # "onnxruntime" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    int8_method: str  # "static" | "dynamic" (dynamic: ONNX Runtime only, the profile schema checks)
    tensorrt_version: str | None = None

    @classmethod
    def of(cls, profile: DeviceProfile) -> Target:
        return cls(
            profile=profile.name,
            runtime=profile.software.runtime,
            precision=profile.runtime.precision,
            int8_method=profile.runtime.int8_method,
            tensorrt_version=profile.software.tensorrt_version,
        )

    @property
    def tensorrt(self) -> bool:
        return self.runtime == "tensorrt"

    # --- the ONNX files --------------------------------------------------------------------------------

    @property
    def int8_variant(self) -> Variant:
        if self.tensorrt:
            return INT8_TENSORRT
        return INT8_ORT_DYNAMIC if self.int8_method == "dynamic" else INT8_ORT_STATIC

    @property
    def variants(self) -> tuple[Variant, Variant]:
        """The reduced-precision variants every export makes and judges (fp16, then int8 as this target
        quantizes it), so that every report shows all three precisions' accuracy."""
        return (FP16, self.int8_variant)

    @property
    def deployed(self) -> Variant:
        """The ONNX file the device runs (for TensorRT: the precision of the engine; see ``engine_source``)."""
        return {"fp32": FP32, "fp16": FP16, "int8": self.int8_variant}[self.precision]

    @property
    def bench_variant(self) -> Variant:
        """What the local ONNX Runtime benchmark on the build machine times: the deployed file for ONNX
        Runtime targets except fp16 (ONNX Runtime's CPU provider has no fp16 kernels: timed as fp32), and the
        fp32 model as a stand-in for a TensorRT engine."""
        if self.tensorrt or self.precision == "fp16":
            return FP32
        return self.deployed

    # --- element types -------------------------------------------------------------------------------

    @property
    def weight_dtype(self) -> str:
        return self.precision

    @property
    def activation_dtype(self) -> str:
        """fp16 for fp16 models and TensorRT int8 engines; fp32 otherwise (ONNX Runtime int8 keeps every
        unquantized tensor in fp32: see the module docstring)."""
        if self.precision == "fp16" or (self.precision == "int8" and self.tensorrt):
            return "fp16"
        return "fp32"

    # --- TensorRT ----------------------------------------------------------------------------------------

    @property
    def tensorrt_path(self) -> str:
        """TENSORRT_FLAGS_PATH (TensorRT <= 10) or TENSORRT_TYPED_PATH (>= 11)."""
        self._need_tensorrt()
        return (
            TENSORRT_TYPED_PATH if tensorrt_major(str(self.tensorrt_version)) >= 11 else TENSORRT_FLAGS_PATH
        )

    @property
    def engine_source(self) -> Variant:
        """The ONNX file the engine is built from: fp32 plus builder flags on TensorRT <= 10 (except int8,
        which needs the Q/DQ scales), the deployed variant on strongly typed TensorRT."""
        if self.tensorrt_path == TENSORRT_FLAGS_PATH and self.precision == "fp16":
            return FP32
        return self.deployed

    @property
    def tensorrt_flags(self) -> list[str]:
        """Builder precision flags (TensorRT <= 10 only; strongly typed networks take none)."""
        if self.tensorrt_path != TENSORRT_FLAGS_PATH:
            return []
        return {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[self.precision]

    @property
    def disable_tf32(self) -> bool:
        """fp32 engines forbid TF32 so that they keep fp32 parity."""
        return self.precision == "fp32"

    def _need_tensorrt(self) -> None:
        if not self.tensorrt or not self.tensorrt_version:
            raise InvalidInputError(f"profile '{self.profile}' is not a TensorRT target with a version")

    def describe(self) -> str:
        """A headline, e.g. "ONNX Runtime int8 (static-qdq)" or "TensorRT 10.3 fp16"."""
        if self.tensorrt:
            return f"TensorRT {self.tensorrt_version} {self.precision}"
        method = f" ({self.deployed.method})" if self.precision == "int8" else ""
        return f"ONNX Runtime {self.precision}{method}"
