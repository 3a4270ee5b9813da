"""The "tensorrt" stage of an export: the build plan and trtexec line for TensorRT profiles, then a local
engine checked against PyTorch (a GPU and TensorRT here, and a profile that need not build on the device)
or the on-device bundle. CPU profiles: nothing to do."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wave_deploy.bench.engine import tensorrt_status
from wave_deploy.bench.runners import TensorRTRunner
from wave_deploy.errors import ParityError
from wave_deploy.exporters import tensorrt as trt_x
from wave_deploy.exporters.base import ExportContext
from wave_deploy.exporters.bundle import write_bundle
from wave_deploy.exporters.bundle_validation import validation_input
from wave_deploy.exporters.onnx import TOLERANCES, onnx_io
from wave_deploy.fileio import write_json
from wave_deploy.target import Target

log = logging.getLogger(__name__)


class TensorRTExporter:
    """Build plan + trtexec line; a local engine or an on-device bundle. CPU profiles: nothing to do."""

    name = "tensorrt"

    def export(self, ctx: ExportContext) -> dict:
        profile = ctx.profile
        if not Target.of(profile).tensorrt:
            return {"target": False, "reason": f"not a TensorRT target (runtime {profile.software.runtime})"}
        plan = trt_x.make_build_plan(profile, onnx_io(ctx.fp32_onnx))
        write_json(ctx.out_dir / "tensorrt_plan.json", plan.to_dict())
        sources = {"fp32": ctx.fp32_onnx, **ctx.variant_paths}
        onnx_for_engine = sources.get(plan.onnx_variant)
        if onnx_for_engine is None:  # the variant failed its accuracy gate: no engine, no bundle
            why = f"the {plan.precision} ONNX variant failed its accuracy gate (export.json onnx.variants)"
            return {
                "target": True,
                "plan": plan.to_dict(),
                "trtexec": None,
                "bundle": None,
                "bundle_reason": why,
            }
        section = {
            "target": True,
            "plan": plan.to_dict(),
            "trtexec": trt_x.trtexec_command(plan, onnx_for_engine, ctx.out_dir / "engine" / "model.engine"),
        }
        if plan.engine_built_on_device:
            why = "the profile requires the engine to be built on the device"
        elif not ctx.build_engine:
            why = "local engine build disabled"
        else:
            usable, detail = tensorrt_status()
            why = None if usable else f"no local engine: {detail}"  # type: ignore[assignment]
        if why is None:
            section["engine"] = self._build_and_check(ctx, plan, onnx_for_engine, TOLERANCES[plan.precision])
            return section
        variants = {k: v for k, v in ctx.variant_paths.items() if k == plan.onnx_variant}
        bundle = write_bundle(
            ctx.out_dir / "bundle", ctx.fp32_onnx, plan, ctx.reference_inputs, ctx.reference_outputs, profile,
            variants=variants, validation=validation_input(ctx),
        )  # fmt: skip
        section.update(bundle=str(bundle), bundle_reason=why)
        log.info("wrote on-device bundle %s (%s)", bundle, why)
        return section

    @staticmethod
    def _build_and_check(ctx: ExportContext, plan, onnx_path: Path, tol) -> dict:
        engine_path = ctx.out_dir / "engine" / "model.engine"
        meta = trt_x.build_engine(plan, onnx_path, engine_path)
        runner = TensorRTRunner(engine_path)
        checks = []
        for batch, x in ctx.reference_inputs.items():
            ref = ctx.reference_outputs[batch]
            err = float(np.max(np.abs(runner.run(x).astype(np.float64) - ref)))
            checks.append({"batch": batch, "max_abs_err": err, "limit": tol.limit(ref)})
        bad = [c for c in checks if c["max_abs_err"] > c["limit"]]
        if bad and plan.precision != "int8":  # int8 engines are judged by accuracy, not logits
            c = bad[0]
            raise ParityError(
                f"TensorRT {plan.precision} engine differs from PyTorch: max abs error {c['max_abs_err']:.3g} "
                f"> {c['limit']:.3g} at batch {c['batch']}"
            )
        return {"path": str(engine_path), "meta": meta, "parity": checks}
