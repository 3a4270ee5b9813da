"""report.json's content, assembled from the typed records of a build's stages (docs/report-schema.md).

wave_deploy.pipeline.build calls ``assemble_report`` in its report stage with the plan, train, export and
bench records (wave_deploy.pipeline.records). The budgets are judged by ``reports.judge.judge_budgets``, the
function selection used on the predictions and a device merge uses on the measurement; the result is
validated against ``reports.schema.BuildReport`` before it is returned.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wave_deploy.pipeline.records import BenchRecord, ExportRecord, PlanRecord, SizeRecord, TrainRecord
from wave_deploy.profiles import DeviceProfile
from wave_deploy.reports.evidence import annotate, build_observed, stricter
from wave_deploy.reports.files import validate_report
from wave_deploy.reports.judge import Limits, judge_budgets
from wave_deploy.reports.schema import SCHEMA_VERSION, Failure
from wave_deploy.spec import costs
from wave_deploy.target import Target
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
        "deployed": Target.of(profile).describe(),
        "build_host_is_device": profile.hardware.build_host_is_device,
    }


def assemble_report(
    out_dir: Path,
    profile: DeviceProfile,
    plan: PlanRecord,
    train: TrainRecord,
    export: ExportRecord,
    bench: BenchRecord | None,
    data: Any,
    failure: Failure | None = None,
    require_evidence: str = "any",
) -> dict[str, Any]:
    """report.json's content (schema: docs/report-schema.md) from the stage records, validated.

    ``bench`` is None when the model the profile runs was not benchmarked (its precision failed a gate);
    ``failure`` records such a gate failure (the verdict is then "fail" whatever the budgets say).
    ``data`` is the build's dataset (its ``info``: name and classes). Every budget records its evidence
    (reports.evidence); ``require_evidence`` (build --require-evidence), or the profile's
    budgets.require_evidence where stricter, fails the checks judged on less.
    """
    chosen, spec = plan.chosen, plan.chosen.spec
    required = stricter(require_evidence, profile.budgets.require_evidence)
    limits = dataclasses.replace(Limits.of_profile(profile.budgets), require_evidence=required)
    observed, extra = build_observed(profile, chosen, train, data, bench)
    judged = judge_budgets(limits, observed)
    annotate(judged.checks, extra)
    c = costs(spec, batch=1, precision=profile.runtime.precision)
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "build_report",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wave_deploy": __version__,
        "profile": profile_section(profile),
        "spec": spec.to_dict(),
        "spec_name": spec.name,
        "costs": {"params": c.params, "macs": c.macs, "flops": c.flops, "weight_bytes": c.weight_bytes},
        "selection": selection_section(plan),
        "prediction": prediction_section(chosen, profile),
        "measured": {"local": local_section(bench), "device": None},
        "latency_samples_ms": list(bench.samples_ms) if bench else [],
        "accuracy": accuracy_section(train, export, data),
        "training": {
            "scaler_phase": _phase(train.scaler_phase),
            "dense_phase": _phase(train.dense_phase),
            "init": getattr(train, "init", None) or "wave",  # builds before --init were all WAVE
        },
        "parity": {
            "onnx_fp32_max_abs_err": export.onnx.parity.max_abs_err,
            "variants": _variants_by_precision(export),
        },
        "sizes": sizes_section(out_dir),
        "budgets": judged.checks,
        "verdict": "fail" if failure else judged.verdict,
        "failed_budgets": judged.failed,
        "failure": failure.model_dump() if failure else None,
        "artifacts": artifacts_section(export),
    }
    report["init_comparison"] = getattr(train, "init_comparison", None)  # --compare-init's table, or None
    return validate_report(report, str(out_dir))


def _size_row(size: SizeRecord) -> dict[str, Any]:
    """A candidate as report.json's selection lists it."""
    return {
        **size.spec.to_dict(),
        "flops": size.flops,
        "params": size.params,
        "latency_ms": size.latency_at_budget_ms,
        "memory_mib": size.memory_mib,
        "accuracy": size.accuracy,  # the sliced-model estimate (--objective accuracy)
    }


def selection_section(plan: PlanRecord) -> dict[str, Any]:
    sel = plan.selection
    return {
        "objective": sel.objective,
        "search_space": plan.search_space,
        "chosen": _size_row(sel.chosen),
        "frontier": [
            {**_size_row(f), "feasible": f.feasible, "reasons": list(f.reasons)} for f in sel.frontier
        ],
        "candidates": sel.n_candidates,
        "feasible": sel.n_feasible,
        "notes": list(sel.notes),
        "headroom": getattr(
            sel, "headroom", None
        ),  # planning.headroom: the bank far below the binding budget
    }


def prediction_section(chosen: SizeRecord, profile: DeviceProfile) -> dict[str, Any]:
    b = profile.budgets
    return {
        "latency_ms": chosen.latency_at_budget_ms,
        "percentile": b.latency_percentile,
        "batch": b.latency_batch,
        "source": chosen.latency_source,
        "memory_mib": chosen.memory_mib,
        "build_memory_mib": chosen.build_memory_mib,
    }


def local_section(bench: BenchRecord | None) -> dict[str, Any] | None:
    """The local benchmark: its latency statistics, what was timed and which file."""
    if bench is None:
        return None
    memory = getattr(bench, "memory", None)  # the session's peak, where the build host is the device
    return {"latency": bench.stats.to_dict(), "what": bench.what, "model": bench.model, "memory": memory}


def accuracy_section(train: TrainRecord, export: ExportRecord, data: Any) -> dict[str, Any]:
    agreement = next((v.top1_agreement for v in export.onnx.variants if v.top1_agreement is not None), None)
    return {
        "val_acc": train.val_acc,
        "val_acc_at_init": train.val_acc_at_init,
        "dataset": data.info.name,
        "onnx_top1_agreement": agreement,
        "variants": variant_accuracy(train, export),
    }


def _variants_by_precision(export: ExportRecord) -> dict[str, Any]:
    return {v.precision: v.dump() for v in export.onnx.variants}


def _phase(phase) -> dict[str, Any] | None:
    return None if phase is None else phase.dump()


def sizes_section(out_dir: Path) -> dict[str, Any]:
    bundle = out_dir / "bundle"
    return {
        "checkpoint_bytes": (out_dir / "model.safetensors").stat().st_size,
        "onnx_bytes": (out_dir / "model.onnx").stat().st_size,
        "bundle_bytes": _dir_bytes(bundle) if bundle.is_dir() else None,
    }


def artifacts_section(export: ExportRecord) -> dict[str, Any]:
    return {
        "checkpoint": "model.safetensors",
        "onnx": "model.onnx",
        "bundle": "bundle/" if export.bundle else None,
        "engine": export.engine_path,
        "report_md": "report.md",
        "plots": {
            "frontier": "plots/frontier.png",
            "latency": "plots/latency.png",
            "training": "plots/training.png",
        },
    }


def variant_accuracy(train: TrainRecord, export: ExportRecord) -> list[dict[str, Any]]:
    """Top-1 on the validation split of every variant the export measured: fp32 PyTorch, ONNX fp32, fp16,
    int8, each with its drop from ONNX fp32 in points and whether it passed its gate."""
    acc = export.onnx.accuracy
    n = acc.n_images if acc else None
    torch_top1 = acc.torch_fp32_top1 if acc else train.val_acc
    rows: list[dict[str, Any]] = [
        {"variant": "PyTorch fp32", "top1": torch_top1, "n_images": n, "drop_points": None, "passed": True}
    ]
    if acc is not None:
        drop = round(100 * (torch_top1 - acc.onnx_fp32_top1), 3)
        rows.append({"variant": "ONNX fp32", "top1": acc.onnx_fp32_top1, "n_images": n, "drop_points": drop,
                     "passed": export.onnx.parity.passed})  # fmt: skip
    for v in export.onnx.variants:
        rows.append({
            "variant": f"ONNX {v.precision} ({v.method})",
            "top1": v.top1,
            "n_images": v.n_images,
            "drop_points": v.top1_drop_points,
            "max_drop_points": v.max_drop_points,
            "top1_agreement": v.top1_agreement,
            "passed": v.passed,
            "failure": v.failure,
            "file": v.file if v.passed else v.rejected_to,
            "gate": v.gate,  # decision, n, losses/gains, the drop's interval (kit_accuracy)
        })  # fmt: skip
    return rows


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
