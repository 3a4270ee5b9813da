"""report.json's content, assembled from the results of a build's stages (docs/report-schema.md).

wave_deploy.pipeline calls ``assemble_report`` in its report stage; wave_deploy.reports renders the result,
and wave_deploy.device_reports judges it again, with the same ``budget_verdict``, when a device's measurement
is merged.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wave_deploy import __version__
from wave_deploy.reports import SCHEMA_VERSION, budget_verdict
from wave_deploy.spec import ViTSpec, costs


def assemble_report(out_dir: Path, profile, plan, trained, exported, bench, data) -> dict[str, Any]:
    """report.json's content (schema: docs/report-schema.md) from the stage results."""
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
    budgets = {
        "latency": {
            "budget_ms": b.latency_ms,
            "percentile": b.latency_percentile,
            "batch": b.latency_batch,
            "value_ms": latency_pred,
            "source": "predicted",
            "ok": latency_pred <= b.latency_ms,
        },
        "memory": {
            "budget_mib": b.memory_mib,
            "value_mib": memory_pred,
            "source": "predicted",
            "ok": memory_pred <= b.memory_mib,
        },
        "build_memory": None,
        "accuracy": None,
    }
    build_peak = chosen.get("build_memory_mib")
    if b.build_memory_mib is not None and build_peak is not None:
        budgets["build_memory"] = {
            "budget_mib": b.build_memory_mib,
            "value_mib": build_peak,
            "source": "predicted",
            "ok": build_peak <= b.build_memory_mib,
        }
    if b.min_accuracy is not None:
        budgets["accuracy"] = {
            "min": b.min_accuracy,
            "value": trained["val_acc"],
            "ok": trained["val_acc"] >= b.min_accuracy,
        }
    verdict, failed = budget_verdict(budgets)
    tensorrt = exported.get("tensorrt", {})
    local = {**bench["stats"], "what": bench["what"]}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "build_report",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wave_deploy": __version__,
        "profile": {
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
        },
        "spec": spec.to_dict(),
        "spec_name": spec.name,
        "costs": {"params": c.params, "macs": c.macs, "flops": c.flops, "weight_bytes": c.weight_bytes},
        "selection": {
            "objective": sel["objective"],
            "search_space": plan["search_space"],
            "chosen": {
                **chosen["spec"],
                "flops": chosen["flops"],
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
                    "feasible": f["feasible"],
                    "reasons": f["reasons"],
                }
                for f in sel["frontier"]
            ],
            "candidates": sel["n_candidates"],
            "feasible": sel["n_feasible"],
            "notes": sel["notes"],
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
        "latency_samples_ms": bench["samples_ms"],
        "accuracy": {
            "val_acc": trained["val_acc"],
            "val_acc_at_init": trained["val_acc_at_init"],
            "dataset": data.info.name,
            "onnx_top1_agreement": agreement,
        },
        "training": {"scaler_phase": trained.get("scaler_phase"), "dense_phase": trained.get("dense_phase")},
        "parity": {"onnx_fp32_max_abs_err": onnx_section["parity"]["max_abs_err"], "variants": variants},
        "sizes": {
            "checkpoint_bytes": (out_dir / "model.safetensors").stat().st_size,
            "onnx_bytes": (out_dir / "model.onnx").stat().st_size,
            "bundle_bytes": _dir_bytes(out_dir / "bundle") if (out_dir / "bundle").is_dir() else None,
        },
        "budgets": budgets,
        "verdict": verdict,
        "failed_budgets": failed,
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


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
