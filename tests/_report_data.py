"""A build report for report tests, made by the build's own ``assemble_report`` from real stage results:
a real selection, real latency statistics, and the model files whose sizes and hashes it records."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner

from wave_deploy.bench.stats import TIMED_COMPUTE, TIMED_HOST_TO_HOST, summarize
from wave_deploy.cli.main import cli
from wave_deploy.fileio import sha256_bytes, sha256_file
from wave_deploy.pipeline.manifest import record_outputs
from wave_deploy.pipeline.records import BenchRecord, ExportRecord, PlanRecord, TrainRecord
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE, select
from wave_deploy.profiles import load_profile
from wave_deploy.reports import write_report_files
from wave_deploy.reports.assemble import assemble_report
from wave_deploy.reports.plots import DPI, FIGSIZE_IN

PNG_SIZE = (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))
MODEL_FILE = "model.fp16.onnx"  # what the jetson bundle ships and its kit runs
MODEL_BYTES = b"the fp16 model the bundle ships, for the report tests"
MODEL_SHA256 = sha256_bytes(MODEL_BYTES)


def _curve(steps: int, loss0: float, acc0: float, acc1: float) -> list[dict]:
    pts = range(0, steps + 1, max(1, steps // 10))
    return [{"step": s, "train_loss": loss0 * (1 - 0.8 * s / steps),
             "val_acc": acc0 + (acc1 - acc0) * s / steps} for s in pts]  # fmt: skip


def _model_files(out: Path) -> None:
    """The files assemble_report measures: a 1,234,567-byte checkpoint, model.onnx and a bundle whose
    plan.json records the sha256 of the model its kit runs; manifest.json records them as a build does."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors").write_bytes(b"\0" * 1_234_567)
    (out / "model.onnx").write_bytes(b"\0" * 1_300_000)
    (out / "bundle").mkdir(exist_ok=True)
    (out / "bundle" / MODEL_FILE).write_bytes(MODEL_BYTES)
    plan = {"sha256": {MODEL_FILE: MODEL_SHA256}, "models": {"fp16": MODEL_FILE}}
    (out / "bundle" / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    record_outputs(out, "train", {"model.safetensors": sha256_file(out / "model.safetensors")})
    exported = ["model.onnx", f"bundle/{MODEL_FILE}", "bundle/plan.json"]
    record_outputs(out, "export", {rel: sha256_file(out / rel) for rel in exported})


def make_report(
    profile_name: str = "jetson",
    latency_budget_ms: float = 2.0,
    seed: int = 0,
    out: Path | None = None,
    calibration=None,
) -> dict:
    """report.json's content from assemble_report over a real selection of the default search space (with a
    tightened latency budget so that the frontier has rejected sizes) and real latency statistics."""
    profile = load_profile(profile_name)
    budgets = profile.budgets.model_copy(update={"latency_ms": latency_budget_ms, "min_accuracy": 0.5})
    profile = profile.model_copy(update={"budgets": budgets})
    sel = select(profile, DEFAULT_SEARCH_SPACE, calibration=calibration)
    rng = random.Random(seed)
    samples = [0.8 + rng.expovariate(8.0) for _ in range(300)]
    local = summarize(samples, batch=budgets.latency_batch, warmup=20, timed=TIMED_HOST_TO_HOST,
                      runtime="onnxruntime 1.20.0 [CPUExecutionProvider]",
                      hardware="Test CPU (2 logical cores)", threads=2).to_dict()  # fmt: skip
    bench = BenchRecord.load({
        "model": "model.onnx",
        "stats": local,
        "what": "model.onnx on this build machine (not the target)",
        "samples_ms": samples,
    }, "bench")  # fmt: skip
    phase = {"train_time_s": 12.5, "images_per_s": 2500.0}
    trained = TrainRecord.load({
        "spec": sel.chosen.spec.to_dict(),
        "val_acc": 0.9312,
        "val_acc_at_init": 0.4125,
        "scaler_phase": {"steps": 200, "curve": _curve(200, 2.3, 0.41, 0.62), **phase},
        "dense_phase": {"steps": 600, "curve": _curve(600, 1.2, 0.62, 0.9312), **phase},
    }, "train")  # fmt: skip
    fp16 = {
        "precision": "fp16", "method": "float16-cast-io", "path": MODEL_FILE, "file": MODEL_FILE,
        "sha256": MODEL_SHA256, "size_bytes": 650000, "tolerance": {"atol": 0.01, "rtol": 0.01},
        "max_abs_err": 0.0041, "top1_agreement": 0.996, "n_validation": 256, "n_images": 500,
        "top1": 0.9302, "top1_drop_points": 0.1, "max_drop_points": 1.0, "passed": True, "chosen": True,
    }  # fmt: skip
    exported = {
        "profile": profile.name,
        "onnx": {
            "parity": {"max_abs_err": 3.2e-06, "passed": True},
            "accuracy": {
                "split": "validation",
                "n_images": 500,
                "torch_fp32_top1": 0.9312,
                "onnx_fp32_top1": 0.9312,
            },
            "variants": [fp16],
            "chosen_precision": "fp16",
            "chosen_passed": True,
        },
        "tensorrt": {"bundle": "bundle/"},
    }
    data = SimpleNamespace(info=SimpleNamespace(name="mnist-5k (500 val)", num_classes=10))
    plan = PlanRecord.load(
        {"selection": sel.to_dict(), "search_space": DEFAULT_SEARCH_SPACE.to_dict()}, "plan"
    )
    out = Path(tempfile.mkdtemp(prefix="report-data-")) if out is None else out
    _model_files(out)
    report = assemble_report(out, profile, plan, trained, ExportRecord.load(exported, "export"), bench, data)
    report["created"] = "2025-01-02T03:04:05Z"
    return report


def make_device_report(report: dict, at_budget_ms: float, **overrides) -> dict:
    """device_report.json as export/run_on_device.py writes it, with the budget's percentile at a value."""
    pct = report["budgets"]["latency"]["percentile"]
    samples = [at_budget_ms * f for f in (0.90, 0.92, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.0)]
    stats = summarize(samples, batch=report["prediction"]["batch"], warmup=20, timed=TIMED_COMPUTE,
                      runtime="TensorRT 10.3.0", hardware="Orin (nvgpu)", threads=None).to_dict()  # fmt: skip
    stats[f"{pct}_ms"] = at_budget_ms  # exactly at the value the test wants judged
    dev = {
        "schema_version": 1, "kind": "device_report", "passed": True, "profile": report["profile"]["name"],
        "power_mode": "NV Power Mode: 15W 0", "batch": stats["batch"], "runtime": report["profile"]["runtime"],
        "runtime_version": "10.3.0", "precision": report["profile"]["precision"],
        "parity": {"batches": [], "max_abs_err": 0.0031, "passed": True}, "latency": stats,
        "hardware": "Orin (nvgpu)", "model_file": MODEL_FILE, "model_sha256": MODEL_SHA256,
    }  # fmt: skip
    dev.update(overrides)
    return dev


def write_build(tmp_path: Path, name: str, **kwargs) -> tuple[Path, dict]:
    out = tmp_path / name
    report = make_report(out=out, **kwargs)
    write_report_files(out, report)
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


def write_device(path: Path, dev: dict) -> Path:
    path.write_text(json.dumps(dev), encoding="utf-8")
    return path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def rejudge(report: dict) -> dict:
    """Judge a test-edited report's budget values again, as the build and a merge do."""
    from wave_deploy.reports.judge import Limits, judge_budgets, observed_in

    checks = report["budgets"]
    judged = judge_budgets(Limits.of_report(checks, batch=1), observed_in(checks))
    report["budgets"], report["verdict"], report["failed_budgets"] = (
        judged.checks,
        judged.verdict,
        judged.failed,
    )
    return report
