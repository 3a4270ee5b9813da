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
from pathlib import Path
from typing import Any

from wave_deploy import __version__
from wave_deploy.errors import BudgetBrokenError, InvalidInputError
from wave_deploy.fileio import sha256_file, write_json
from wave_deploy.stages import StageOutput, StageRunner, stage_key

log = logging.getLogger(__name__)


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
    profile_overrides: tuple[str, ...] = ()  # `--set SECTION.FIELD=VALUE`, applied to every profile

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
    from wave_deploy.profiles import apply_overrides, load_profile
    from wave_deploy.wave.bank import TemplateBank, default_bank_path

    # validate every profile (and every --set) before any work
    loaded = [apply_overrides(load_profile(p), options.profile_overrides) for p in profiles]
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

    # the report records the --set settings, which a setting that changes no value would not show in the keys
    report_key = stage_key(
        plan=plan_key, train=train_key, export=export_key, bench=bench_key, overrides=list(profile.overrides)
    )
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
    from wave_deploy.exporters.base import data_inputs, export_for_profile
    from wave_deploy.folding import load_folded_file

    model, spec, _ = load_folded_file(out_dir / "model.safetensors")
    # validation split (up to 1000 images, labelled) judges the variants; 256 seeded training images calibrate int8
    summary = export_for_profile(
        model,
        spec,
        profile,
        out_dir,
        opset=options.opset,
        exporter=options.exporter,
        seed=options.seed,
        **data_inputs(data, seed=options.seed),
    )
    files = ["export.json", "model.onnx"] + [p.name for p in out_dir.glob("model.*.onnx")]
    files += [
        str(p.relative_to(out_dir))
        for sub in ("bundle", "engine", "rejected")
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
    chosen = [v for v in exported["onnx"].get("variants", []) if v.get("chosen") and v.get("file")]
    if profile.software.runtime == "onnxruntime" and profile.runtime.precision == "int8" and chosen:
        onnx = out_dir / chosen[0]["file"]  # the int8 file the device runs (fp16 on a CPU: timed as fp32)
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
    from wave_deploy.report_assembly import assemble_report
    from wave_deploy.reports import write_report_files

    report = assemble_report(
        out_dir, profile, plan, trained, exported, _read_json(out_dir / "bench.json"), data
    )
    paths = write_report_files(out_dir, report)
    return StageOutput(
        {"verdict": report["verdict"]}, sorted(str(Path(p).relative_to(out_dir)) for p in paths)
    )


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
