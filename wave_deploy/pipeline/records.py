"""Typed records that the build's stages hand each other: plan -> train -> export -> bench -> report.

Each stage returns its record; the stage cache (manifest.json) stores ``record.dump()`` and a reused stage is
read back with ``Record.load(...)``, so the report stage gets the same typed records either way and assembles
report.json from their fields (wave_deploy.reports.assemble), not from string keys. The records are pydantic
models over the files the stages write (plan.json, train.json, export.json, bench.json): named fields are
typed and checked, further keys are kept as they are, so the files keep their documented formats.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Self

from wave_deploy.bench.stats import Latency
from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import ViTSpec

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """A stage's result: typed fields over its JSON file; unknown keys are kept (additive formats)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def load(cls, data: object, where: str) -> Self:
        """The record from a stage's JSON (``where`` names it); InvalidInputError (exit 3) when it does not fit."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise InvalidInputError(
                f"{where}: {field}: {err['msg']}", hint="rerun the build with --force"
            ) from None

    def dump(self) -> dict[str, Any]:
        """JSON-ready, as the stage's file holds it."""
        return self.model_dump(mode="json")


# --- plan ---------------------------------------------------------------------------------------------------


class SizeRecord(Record):
    """One candidate size as the plan judged it (``selection.Candidate.to_dict``)."""

    spec: ViTSpec
    params: int
    flops: int
    latency_ms: float  # predicted p50 at the budget's batch
    latency_at_budget_ms: float  # at the budget's percentile
    latency_source: str
    latency_notes: list[str] = Field(default_factory=list)
    memory_mib: float
    build_memory_mib: float | None = None
    accuracy: float | None = None  # the sliced-model estimate (--objective accuracy)
    feasible: bool
    reasons: list[str] = Field(default_factory=list)


class SelectionRecord(Record):
    objective: str
    latency_source: str
    chosen: SizeRecord
    frontier: list[SizeRecord]
    n_candidates: int
    n_feasible: int
    notes: list[str] = Field(default_factory=list)


class PlanRecord(Record):
    """plan.json: the choice, its frontier and the search space it was chosen from."""

    selection: SelectionRecord
    search_space: dict[str, Any]

    @property
    def chosen(self) -> SizeRecord:
        return self.selection.chosen


# --- train --------------------------------------------------------------------------------------------------


class PhaseRecord(Record):
    """One training phase (scaler or dense) of a trained model."""

    steps: int
    train_time_s: float
    images_per_s: float
    final_val_acc: float | None = None
    curve: list[dict[str, Any]] = Field(default_factory=list)


class TrainRecord(Record):
    """train.json: the trained size, its accuracy at initialization and after training, its phases."""

    spec: ViTSpec
    val_acc: float
    val_acc_at_init: float
    scaler_phase: PhaseRecord | None = None
    dense_phase: PhaseRecord | None = None


# --- export -------------------------------------------------------------------------------------------------


class VariantRecord(Record):
    """One reduced-precision ONNX variant and its accuracy gate (export.json ``onnx.variants``)."""

    precision: str
    method: str
    top1: float | None = None
    n_images: int | None = None
    top1_drop_points: float | None = None
    max_drop_points: float | None = None
    top1_agreement: float | None = None
    passed: bool
    failure: str | None = None
    chosen: bool = False
    file: str | None = None
    rejected_to: str | None = None
    gate: dict[str, Any] | None = None  # kit_accuracy.DropJudgement: decision, interval, losses, gains, n


class OnnxAccuracy(Record):
    n_images: int
    torch_fp32_top1: float
    onnx_fp32_top1: float


class ParityRecord(Record):
    max_abs_err: float
    passed: bool = True


class OnnxRecord(Record):
    parity: ParityRecord
    accuracy: OnnxAccuracy | None = None
    chosen_precision: str
    chosen_passed: bool = True
    variants: list[VariantRecord] = Field(default_factory=list)


class ExportRecord(Record):
    """export.json: the fp32 model behind its parity gate, the variants, the engine or the bundle."""

    profile: str
    onnx: OnnxRecord
    tensorrt: dict[str, Any] = Field(default_factory=dict)
    onnxruntime: dict[str, Any] = Field(default_factory=dict)

    @property
    def bundle(self) -> str | None:
        """The on-device bundle this export wrote (TensorRT or ONNX Runtime kit), if any."""
        return self.tensorrt.get("bundle") or self.onnxruntime.get("bundle")

    @property
    def engine_path(self) -> str | None:
        return (self.tensorrt.get("engine") or {}).get("path")


# --- bench --------------------------------------------------------------------------------------------------


class BenchRecord(Record):
    """bench.json: the local benchmark of the model the profile runs, on this build machine."""

    model: str
    stats: Latency
    what: str
    samples_ms: list[float] = Field(default_factory=list)  # in bench.json; not in the stage cache
    memory: dict[str, Any] | None = None  # kit_memory.session_memory, where the build host is the device
