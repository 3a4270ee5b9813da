"""``build()``: the product's main job, one device profile at a time (DESIGN sections 1 and 7).

    profile -> plan (selection) -> WAVE init + scaler phase + brief dense training -> fold -> export
    (ONNX + TensorRT engine or on-device bundle) -> local benchmark -> report

Every stage runs through ``stages.StageRunner``: it is skipped when its key (a hash of its inputs) matches
the manifest and its recorded outputs are intact, so an identical rerun reuses everything and a killed build
redoes only what did not finish. Training checkpoints live under ``.cache/`` and resume mid-phase. Profiles
that pick the same spec share one trained model (``<out>/.models/<key>/``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wave_deploy import __version__
from wave_deploy.errors import BudgetBrokenError, InvalidInputError
from wave_deploy.fileio import sha256_file, write_json
from wave_deploy.stages import StageOutput, StageRunner, stage_key

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1


@dataclass
class BuildOptions:
    templates: str | None = None  # bank path; None: the shipped default bank
    data: str | None = None  # ImageFolder path; None: built-in MNIST-5k
    out: str = "artifacts"  # root; each profile writes <out>/<profile name>/
    seed: int = 0
    strategy: str = "aux"
    scaler_steps: int = 60
    dense_steps: int = 150
    batch_size: int = 128
    objective: str = "flops"
    calibration: str | None = None
    opset: int = 18
    exporter: str = "dynamo"
    bench_iterations: int = 200
    bench_warmup: int = 20
    device: str = "auto"
    force: bool = False

    def training_fields(self) -> dict[str, Any]:
        keys = ("seed", "strategy", "scaler_steps", "dense_steps", "batch_size")
        return {k: getattr(self, k) for k in keys}


@dataclass
class DeviceResult:
    profile: str
    out_dir: str
    report: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.report["verdict"]


Event = Callable[[str, str, str, float | None], None]  # (profile, stage, "start"|"done"|"reused", seconds)


def build(
    profiles: list[str], options: BuildOptions, on_event: Event | None = None, on_step=None
) -> list[DeviceResult]:
    """Build every profile; return their results. Raises the first stage's WaveDeployError."""
    from wave_deploy import data as datasets
    from wave_deploy.profiles import load_profile
    from wave_deploy.wave.bank import TemplateBank, default_bank_path

    loaded = [load_profile(p) for p in profiles]  # validate every profile before any work
    bank_path = Path(options.templates) if options.templates else default_bank_path()
    bank = TemplateBank.load(bank_path)
    data = datasets.load(options.data, seed=options.seed)
    expected = (bank.geometry.in_chans, bank.geometry.img_size, bank.geometry.img_size)
    if tuple(data.train_x.shape[1:]) != expected:
        raise InvalidInputError(
            f"data images are {tuple(data.train_x.shape[1:])} but the template bank needs {expected}",
            hint="give --data images of the bank's size and channels, or a bank built for them",
        )
    inputs = {"bank": str(bank_path), "bank_sha256": sha256_file(bank_path), "data": data.info.fingerprint}
    results = []
    for profile in loaded:
        results.append(_build_one(profile, bank, data, inputs, options, on_event, on_step))
    return results


def _build_one(profile, bank, data, inputs, options: BuildOptions, on_event, on_step) -> DeviceResult:
    out_dir = Path(options.out) / profile.name
    config = {"profile": profile.name, "options": asdict(options), **inputs}
    runner = StageRunner(out_dir, config=config, force=options.force)
    profile_json = profile.model_dump(mode="json")

    def stage(name: str, key: str, fn) -> dict:
        if on_event:
            on_event(profile.name, name, "start", None)
        record = runner.run(name, key, fn)
        if on_event:
            on_event(profile.name, name, "reused" if record.reused else "done", record.seconds)
        return record.result

    plan_key = stage_key(
        profile=profile_json,
        bank=inputs["bank_sha256"],
        objective=options.objective,
        calibration=_file_hash(options.calibration),
        classes=data.info.num_classes,
    )
    plan = stage("plan", plan_key, lambda d: _plan(d, profile, bank, data, options))
    spec_dict = plan["selection"]["chosen"]["spec"]

    train_key = stage_key(
        bank=inputs["bank_sha256"], data=inputs["data"], spec=spec_dict, **options.training_fields()
    )
    trained = stage(
        "train", train_key, lambda d: _train(d, bank, data, spec_dict, options, train_key, on_step)
    )

    export_key = stage_key(
        model=runner.records["train"].outputs["model.safetensors"],
        profile=profile_json,
        opset=options.opset,
        exporter=options.exporter,
        seed=options.seed,
    )
    exported = stage("export", export_key, lambda d: _export(d, profile, data, options))

    bench_key = stage_key(
        onnx=runner.records["export"].outputs["model.onnx"],
        batch=profile.budgets.latency_batch,
        iterations=options.bench_iterations,
        warmup=options.bench_warmup,
        threads=profile.runtime.intra_op_threads,
    )
    bench = stage("bench", bench_key, lambda d: _bench(d, profile, exported, options))

    report_key = stage_key(plan=plan_key, train=train_key, export=export_key, bench=bench_key)
    stage("report", report_key, lambda d: _report(d, profile, plan, trained, exported, bench, data))
    report = _read_json(out_dir / "report.json")
    stages = [{"name": r.name, "seconds": r.seconds, "reused": r.reused} for r in runner.records.values()]
    return DeviceResult(profile.name, str(out_dir), report, stages)


def _plan(out_dir: Path, profile, bank, data, options: BuildOptions) -> StageOutput:
    from wave_deploy.selection import SearchSpace, select

    space = SearchSpace.from_bank(bank.geometry, data.info.num_classes)
    selection = select(profile, space, objective=options.objective, calibration=options.calibration)
    result = {"selection": selection.to_dict(), "search_space": space.to_dict()}
    write_json(out_dir / "plan.json", result)
    return StageOutput(result, ["plan.json"])


def _train(
    out_dir: Path, bank, data, spec_dict: dict, options: BuildOptions, key: str, on_step
) -> StageOutput:
    """WAVE init + scaler phase + dense phase; shared by every profile of this output root that picks the spec."""
    from wave_deploy.folding import save_folded
    from wave_deploy.spec import ViTSpec
    from wave_deploy.wave.init import DensePhase, ScalerPhase, initialize

    shared = out_dir.parent / ".models" / key
    record_path = shared / "train.json"
    if not (shared / "model.safetensors").is_file() or not record_path.is_file():
        spec = ViTSpec.from_dict(spec_dict)
        model, record = initialize(
            bank,
            spec,
            data,
            strategy=options.strategy,
            scaler=ScalerPhase(steps=options.scaler_steps, batch_size=options.batch_size, seed=options.seed),
            dense=DensePhase(steps=options.dense_steps, batch_size=options.batch_size, seed=options.seed),
            on_step=on_step,
            device=options.device,
            checkpoint_dir=out_dir.parent / ".cache" / f"train-{key}",
        )
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_folded(shared / "model.safetensors", state, spec, {"train_key": key, "wave_deploy": __version__})
        write_json(record_path, record)  # written last: its presence marks the shared model complete
        shutil.rmtree(out_dir.parent / ".cache" / f"train-{key}", ignore_errors=True)
    else:
        log.info("reusing the model trained for another profile (%s)", shared)
    for name in ("model.safetensors", "train.json"):
        _copy_atomic(shared / name, out_dir / name)
    return StageOutput(_read_json(out_dir / "train.json"), ["model.safetensors", "train.json"])


def _export(out_dir: Path, profile, data, options: BuildOptions) -> StageOutput:
    from wave_deploy.exporters.base import export_for_profile
    from wave_deploy.folding import load_folded_file

    model, spec, _ = load_folded_file(out_dir / "model.safetensors")
    validation = data.val_x[:256].numpy()
    summary = export_for_profile(
        model,
        spec,
        profile,
        out_dir,
        opset=options.opset,
        exporter=options.exporter,
        seed=options.seed,
        validation=validation,
    )
    files = ["export.json", "model.onnx"] + [p.name for p in out_dir.glob("model.*.onnx")]
    files += [
        str(p.relative_to(out_dir))
        for sub in ("bundle", "engine")
        for p in (out_dir / sub).rglob("*")
        if p.is_file()
    ]
    if (out_dir / "tensorrt_plan.json").is_file():
        files.append("tensorrt_plan.json")
    return StageOutput(summary, files)


def _bench(out_dir: Path, profile, exported: dict, options: BuildOptions) -> StageOutput:
    """Time the model the profile's runtime would run, with ONNX Runtime on this build machine."""
    from wave_deploy.bench.runners import OrtRunner, benchmark_samples

    onnx = out_dir / "model.onnx"
    if profile.software.runtime == "onnxruntime" and profile.runtime.precision == "int8":
        onnx = next(iter(sorted(out_dir.glob("model.int8*.onnx"))), onnx)
    runner = OrtRunner(onnx, threads=profile.runtime.intra_op_threads)
    stats, samples = benchmark_samples(
        runner,
        batch=profile.budgets.latency_batch,
        warmup=options.bench_warmup,
        iterations=options.bench_iterations,
        seed=options.seed,
    )
    result = {
        "model": onnx.name,
        "stats": stats.to_dict(),
        "samples_ms": [round(s, 4) for s in samples],
        "what": f"{onnx.name} with ONNX Runtime on this build machine (not the target device)",
    }
    write_json(out_dir / "bench.json", result)
    return StageOutput({"model": onnx.name, "stats": stats.to_dict()}, ["bench.json"])


def _report(
    out_dir: Path, profile, plan: dict, trained: dict, exported: dict, bench: dict, data
) -> StageOutput:
    from wave_deploy.reports import write_report_files

    report = assemble_report(
        out_dir, profile, plan, trained, exported, _read_json(out_dir / "bench.json"), data
    )
    paths = write_report_files(out_dir, report)
    return StageOutput(
        {"verdict": report["verdict"]}, sorted(str(Path(p).relative_to(out_dir)) for p in paths)
    )


def assemble_report(out_dir: Path, profile, plan, trained, exported, bench, data) -> dict[str, Any]:
    """report.json's content (schema: docs/report-schema.md) from the stage results."""
    from wave_deploy.spec import ViTSpec, costs

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
    failed = [name for name, v in budgets.items() if v is not None and not v["ok"]]
    tensorrt = exported.get("tensorrt", {})
    local = {**bench["stats"], "what": bench["what"]}
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
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
        "verdict": "fail" if failed else "pass",
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


def check_budgets(results: list[DeviceResult]) -> None:
    """Raise BudgetBrokenError (exit 8) naming every device whose built model breaks a budget."""
    failed = [
        f"{r.profile} ({', '.join(r.report['failed_budgets'])})" for r in results if r.verdict != "pass"
    ]
    if failed:
        raise BudgetBrokenError(
            f"built model breaks a budget on: {'; '.join(failed)}",
            hint="reports are written; see report.md, or pass --no-fail-on-budget",
        )


def _file_hash(path: str | None) -> str | None:
    return sha256_file(path) if path else None


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def _copy_atomic(src: Path, dst: Path) -> None:
    from wave_deploy.fileio import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
