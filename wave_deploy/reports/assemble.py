"""report.json's content, assembled from the results of a build's stages (docs/report-schema.md).

wave_deploy.pipeline.build calls ``assemble_report`` in its report stage. The budgets are judged by
``reports.judge.judge_budgets``, the function selection used on the predictions and a device merge uses on
the measurement; the result is validated against ``reports.schema.BuildReport`` before it is returned.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wave_deploy.profiles import DeviceProfile
from wave_deploy.reports.files import validate_report
from wave_deploy.reports.judge import Limits, Observed, judge_budgets
from wave_deploy.reports.schema import SCHEMA_VERSION, Failure
from wave_deploy.spec import ViTSpec, costs
from wave_deploy.version import __version__


def profile_section(profile: DeviceProfile) -> dict[str, Any]:
    """report.json's "profile" section (also the whole identity of a failed build's report)."""
    return {
        "name": profile.name,
        "description": profile.description,
        "device_name": profile.hardware.device_name,
        "accelerator": profile.hardware.accelerator,
        "runtime": profile.software.runtime,
        "precision": profile.runtime.precision,
        "engine_built_on_device": profile.software.engine_built_on_device,
        "input_size_px": profile.runtime.input_size_px,
        "power_mode": profile.hardware.power_mode.model_dump() if profile.hardware.power_mode else None,
        "overrides": list(profile.overrides),
    }


def assemble_report(
    out_dir: Path,
    profile: DeviceProfile,
    plan: dict[str, Any],
    trained: dict[str, Any],
    exported: dict[str, Any],
    bench: dict[str, Any] | None,
    data: Any,
    failure: Failure | None = None,
) -> dict[str, Any]:
    """report.json's content (schema: docs/report-schema.md) from the stage results, validated.

    ``bench`` is None when the model the profile runs was not benchmarked (its precision failed a gate);
    ``failure`` records such a gate failure (the verdict is then "fail" whatever the budgets say).
    """
    sel = plan["selection"]
    chosen = sel["chosen"]
    spec = ViTSpec.from_dict(chosen["spec"])
    b = profile.budgets
    c = costs(spec, batch=1, precision=profile.runtime.precision)
    latency_pred = chosen["latency_at_budget_ms"]
    memory_pred = chosen["memory_mib"]
    onnx_section = exported["onnx"]
    variants = {v.get("precision", f"variant{i}"): v for i, v in enumerate(onnx_section.get("variants", []))}
    agreement = next(
        (v.get("top1_agreement") for v in variants.values() if v.get("top1_agreement") is not None), None
    )
    build_peak = chosen.get("build_memory_mib")
    judged = judge_budgets(
        Limits.of_profile(b),
        Observed(
            latency_ms=latency_pred,
            memory_mib=memory_pred,
            build_memory_mib=build_peak,
            accuracy=trained["val_acc"],
            num_classes=data.info.num_classes,
        ),
    )
    budgets = judged.checks
    tensorrt = exported.get("tensorrt", {})
    local = {**bench["stats"], "what": bench["what"]} if bench else None
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "build_report",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wave_deploy": __version__,
        "profile": profile_section(profile),
        "spec": spec.to_dict(),
        "spec_name": spec.name,
        "costs": {"params": c.params, "macs": c.macs, "flops": c.flops, "weight_bytes": c.weight_bytes},
        "selection": {
            "objective": sel["objective"],
            "search_space": plan["search_space"],
            "chosen": {
                **chosen["spec"],
                "flops": chosen["flops"],
                "accuracy": chosen.get("accuracy"),
                "params": chosen["params"],
                "latency_ms": latency_pred,
                "memory_mib": memory_pred,
            },
            "frontier": [
                {
                    **f["spec"],
                    "flops": f["flops"],
                    "params": f["params"],
                    "latency_ms": f["latency_at_budget_ms"],
                    "memory_mib": f["memory_mib"],
                    "accuracy": f.get("accuracy"),  # the sliced-model estimate (--objective accuracy)
                    "feasible": f["feasible"],
                    "reasons": f["reasons"],
                }
                for f in sel["frontier"]
            ],
            "candidates": sel["n_candidates"],
            "feasible": sel["n_feasible"],
            "notes": sel["notes"],
            "headroom": sel.get("headroom"),  # planning.headroom: the bank far below the binding budget
        },
        "prediction": {
            "latency_ms": latency_pred,
            "percentile": b.latency_percentile,
            "batch": b.latency_batch,
            "source": chosen["latency_source"],
            "memory_mib": memory_pred,
            "build_memory_mib": build_peak,
        },
        "measured": {"local": local, "device": None},
        "latency_samples_ms": bench["samples_ms"] if bench else [],
        "accuracy": {
            "val_acc": trained["val_acc"],
            "val_acc_at_init": trained["val_acc_at_init"],
            "dataset": data.info.name,
            "onnx_top1_agreement": agreement,
            "variants": variant_accuracy(trained, onnx_section),
        },
        "training": {
            "scaler_phase": trained.get("scaler_phase"),
            "dense_phase": trained.get("dense_phase"),
            "init": trained.get("init", "wave"),  # builds before --init were all WAVE
        },
        "parity": {"onnx_fp32_max_abs_err": onnx_section["parity"]["max_abs_err"], "variants": variants},
        "sizes": {
            "checkpoint_bytes": (out_dir / "model.safetensors").stat().st_size,
            "onnx_bytes": (out_dir / "model.onnx").stat().st_size,
            "bundle_bytes": _dir_bytes(out_dir / "bundle") if (out_dir / "bundle").is_dir() else None,
        },
        "budgets": budgets,
        "verdict": "fail" if failure else judged.verdict,
        "failed_budgets": judged.failed,
        "failure": failure.model_dump() if failure else None,
        "artifacts": {
            "checkpoint": "model.safetensors",
            "onnx": "model.onnx",
            "bundle": "bundle/" if tensorrt.get("bundle") else None,
            "engine": (tensorrt.get("engine") or {}).get("path"),
            "report_md": "report.md",
            "plots": {
                "frontier": "plots/frontier.png",
                "latency": "plots/latency.png",
                "training": "plots/training.png",
            },
        },
    }
    report["init_comparison"] = trained.get("init_comparison")  # build --compare-init's table, or None
    return validate_report(report, str(out_dir))


def variant_accuracy(trained: dict[str, Any], onnx_section: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-1 on the validation split of every variant the export measured: fp32 PyTorch, ONNX fp32, fp16,
    int8, each with its drop from ONNX fp32 in points and whether it passed its gate."""
    acc = onnx_section.get("accuracy") or {}
    n = acc.get("n_images")
    rows = [{"variant": "PyTorch fp32", "top1": acc.get("torch_fp32_top1", trained.get("val_acc")),
             "n_images": n, "drop_points": None, "passed": True}]  # fmt: skip
    onnx_top1 = acc.get("onnx_fp32_top1")
    if onnx_top1 is not None:
        torch_top1 = rows[0]["top1"]
        drop = None if torch_top1 is None else round(100 * (torch_top1 - onnx_top1), 3)
        rows.append({"variant": "ONNX fp32", "top1": onnx_top1, "n_images": n, "drop_points": drop,
                     "passed": onnx_section.get("parity", {}).get("passed", True)})  # fmt: skip
    for v in onnx_section.get("variants", []):
        rows.append({
            "variant": f"ONNX {v.get('precision')} ({v.get('method', '?')})",
            "top1": v.get("top1"),
            "n_images": v.get("n_images"),
            "drop_points": v.get("top1_drop_points"),
            "max_drop_points": v.get("max_drop_points"),
            "top1_agreement": v.get("top1_agreement"),
            "passed": v.get("passed"),
            "failure": v.get("failure"),
            "file": v.get("file") if v.get("passed") else v.get("rejected_to"),
        })  # fmt: skip
    return rows


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
