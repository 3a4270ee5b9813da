"""Each build stage's cache key: a hash of everything the stage's output depends on, so that an unchanged
input reuses the stage and a changed one reruns it (``pipeline.manifest``: keys, records, reuse)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wave_deploy.fileio import sha256_file
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.manifest import stage_key
from wave_deploy.profiles import DeviceProfile


def file_hash(path: str | None) -> str | None:
    return sha256_file(path) if path else None


@dataclass
class StageKeys:
    """Each stage's cache key: a hash of everything its output depends on (pipeline.manifest.stage_key)."""

    profile: DeviceProfile
    inputs: dict[str, Any]
    options: BuildOptions
    data: Any

    def plan(self) -> str:
        o = self.options
        return stage_key(
            profile=self.profile.model_dump(mode="json"),
            geometry=self.inputs["sources"][
                "geometry"
            ],  # the search space (a teacher's weights do not change it)
            bank=self.inputs["sources"]["bank_sha256"],
            objective=o.objective,
            scored_on=self.inputs["data"] if o.objective == "accuracy" else None,
            calibration=file_hash(o.calibration),
            classes=self.data.info.num_classes,
            beyond_bank=o.beyond_bank,
        )

    def train(self, spec_dict: dict) -> str:
        return stage_key(
            sources=self.inputs["sources"],  # the bank, the teacher and the geometry, with the init choice
            data=self.inputs["data"],
            spec=spec_dict,
            **self.options.training_fields(len(self.data.train_x)),
        )

    def export(self, model_sha256: str) -> str:
        o = self.options
        return stage_key(
            model=model_sha256, profile=self.profile.model_dump(mode="json"), opset=o.opset, exporter=o.exporter,
            seed=o.seed, device_val_images=o.device_val_images,
        )  # fmt: skip

    def bench(self, onnx_sha256: str) -> str:
        p, o = self.profile, self.options
        return stage_key(
            onnx=onnx_sha256, batch=p.budgets.latency_batch, iterations=o.bench_iterations, warmup=o.bench_warmup,
            threads=p.runtime.intra_op_threads, host_memory=p.hardware.build_host_is_device,
        )  # fmt: skip

    def report(self, plan: str, train: str, export: str, bench: str | None, gate, kept: Path) -> str:
        """The report also records the --set settings, which a setting that changes no value would not show
        in the other keys; a device measurement merged since the last build is merged again."""
        return stage_key(
            plan=plan, train=train, export=export, bench=bench, overrides=list(self.profile.overrides),
            gate=None if gate is None else gate.one_line(), device=sha256_file(kept) if kept.is_file() else None,
            require_evidence=self.options.require_evidence,
        )  # fmt: skip
