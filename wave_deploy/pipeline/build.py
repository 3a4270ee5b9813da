"""``build()``: the product's main job, one device profile at a time (DESIGN sections 1 and 7).

    profile -> plan (selection) -> WAVE init + scaler phase + brief dense training -> fold -> export
    (ONNX + TensorRT engine or on-device bundle) -> local benchmark -> report

Every stage runs through ``manifest.StageRunner``: it is skipped when its key (a hash of its inputs) matches
the manifest and its recorded outputs are intact, so an identical rerun reuses everything and a killed build
redoes only what did not finish. Training checkpoints live under ``.cache/`` and resume mid-phase. Profiles
that pick the same spec share one trained model (``<out>/.models/<key>/``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wave_deploy import data as datasets
from wave_deploy._kit.kit_memory import session_memory
from wave_deploy.bench.runners import OrtRunner, benchmark_samples
from wave_deploy.data_shape import probe_data
from wave_deploy.errors import (
    InvalidInputError,
    WaveDeployError,
)
from wave_deploy.exporters.base import data_inputs, export_for_profile, precision_gate
from wave_deploy.fileio import check_writable_dir, copy_file, remove_stale_parts, write_json
from wave_deploy.options import BuildOptions
from wave_deploy.pipeline.compare_init import compare
from wave_deploy.pipeline.failclosed import fail_closed, neutralize, neutralize_profiles
from wave_deploy.pipeline.inits import Sources, check_objective, resolve_sources, run_init
from wave_deploy.pipeline.keys import StageKeys
from wave_deploy.pipeline.manifest import StageOutput, StageRunner, shared_model_problem
from wave_deploy.pipeline.records import (
    BenchRecord,
    ExportRecord,
    PlanRecord,
    R,
    Record,
    TrainRecord,
)
from wave_deploy.pipeline.results import DeviceResult
from wave_deploy.planning.headroom import beyond_bank
from wave_deploy.planning.latency import load_calibration
from wave_deploy.planning.plan import select_with_headroom
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.profiles import DeviceProfile, apply_overrides, load_profile
from wave_deploy.reports import failure_of, load_report, write_report_files
from wave_deploy.reports.assemble import assemble_report, profile_section
from wave_deploy.reports.merge import merge_kept
from wave_deploy.reports.verify import KEPT_REL, kept_device_report, load_verified_report
from wave_deploy.spec import ViTSpec
from wave_deploy.target import Target
from wave_deploy.training.checkpoint import UnusableCheckpointError
from wave_deploy.training.folding import load_folded_file, save_folded
from wave_deploy.version import __version__
from wave_deploy.wave.score import accuracy_table

log = logging.getLogger(__name__)


Event = Callable[[str, str, str, float | None], None]  # (profile, stage, "start"|"done"|"reused", seconds)
Note = Callable[[str, str], None]  # (profile, message)


def build(
    profiles: list[str], options: BuildOptions, on_event: Event | None = None, on_step=None,
    on_note: Note | None = None,
) -> list[DeviceResult]:  # fmt: skip
    """Build every profile; return one result per profile, failed ones included.

    Fail closed: a profile whose build fails gets a failing report.json/report.md (never an earlier PASS),
    the earlier run's models are moved to ``stale/`` (pipeline.failclosed), and the next profile is built all
    the same. Errors before any per-profile work (a bad profile, --set, bank, teacher or data) raise, after
    marking failed the reports that the named profiles' directories already held. ``on_note(profile,
    message)`` hears what a person should read before a long step (--compare-init's cost estimate).
    """

    check_writable_dir(options.out, "--out")  # before any work: exit 3 naming the path
    try:
        # validate every profile (and every --set) before any work
        loaded = [apply_overrides(load_profile(p), options.profile_overrides) for p in profiles]
        if options.calibration:
            load_calibration(options.calibration)  # a missing or invalid file: exit 3 before any work
        # bank, teacher and geometry from a listing and image headers: a bank of other channels is
        # refused before any image is decoded (the same refusal as plan's)
        sources = resolve_sources(options, probe_data(options.data))
        check_objective(options, sources)
        geom = sources.geometry
        size = geom.target_img_size(options.img_size)
        data = datasets.load_for_bank(
            options.data,
            in_chans=geom.in_chans,
            img_size=size,
            seed=options.seed,
            resize=bool(options.img_size),
        )
    except BaseException as exc:
        neutralize(options.out, profiles, failure_of("inputs", exc))  # earlier reports fail; nothing new
        raise
    inputs = {"sources": sources.key(), "data": data.info.fingerprint}
    if options.force:  # --force retrains: no model trained by an earlier build is reused
        shutil.rmtree(Path(options.out) / ".models", ignore_errors=True)
    hooks = (on_step, on_note)
    results: list[DeviceResult] = []
    for i, profile in enumerate(loaded):
        try:
            results.append(_build_one(profile, sources, data, inputs, options, on_event, hooks))
        except BaseException as exc:  # an interrupt or a bug: the profiles not reached keep no earlier PASS
            neutralize_profiles(options.out, loaded[i + 1 :], failure_of("not built", exc))
            raise
    return results


def _build_one(
    profile: DeviceProfile, sources: Sources, data, inputs, options: BuildOptions, on_event, hooks
) -> DeviceResult:
    """One profile's stages; a WaveDeployError becomes a failing report and a failed DeviceResult."""
    out_dir = Path(options.out) / profile.name
    done: list[dict[str, Any]] = []
    current = ["setup"]
    try:
        return _run_stages(profile, sources, data, inputs, options, on_event, hooks, out_dir, current, done)
    except BaseException as exc:
        # before the first stage (e.g. an unreadable manifest) this is an input error: nothing new is created
        before_work = current[0] == "setup"
        failure = failure_of(current[0], exc)
        completed = [stage["name"] for stage in done]  # their outputs are this run's: the rest is stale
        fail_closed(out_dir, profile_section(profile), failure, completed, only_if_present=before_work)
        if not isinstance(exc, WaveDeployError):
            raise  # a bug (or an interrupt): the report says fail, the traceback says why
        log.warning("%s: build failed at stage %s: %s", profile.name, current[0], exc.one_line())
        if before_work and not (out_dir / "report.json").exists():
            report: dict[str, Any] = {"profile": profile_section(profile), "verdict": "fail", "failed_budgets": [],
                      "failure": failure.model_dump(), "spec": None}  # fmt: skip
        else:
            report = load_report(out_dir)
        return DeviceResult(profile.name, str(out_dir), report, list(done), error=exc)


@dataclass
class _Stages:
    """The stages of one profile's build through the stage cache: each returns its typed record, whether it
    ran now or was reused, and is announced to ``on_event``; ``current`` names the stage running (for a
    failure report) and ``done`` lists the stages finished."""

    profile: str
    out_dir: Path
    runner: StageRunner
    on_event: Event | None
    current: list[str]
    done: list[dict[str, Any]]

    def run(self, name: str, key: str, fn, record_type: type[R]) -> R:
        self.current[0] = name
        if self.on_event:
            self.on_event(self.profile, name, "start", None)
        ran = self.runner.run(name, key, fn)
        self.done.append({"name": ran.name, "seconds": ran.seconds, "reused": ran.reused})
        if self.on_event:
            self.on_event(self.profile, name, "reused" if ran.reused else "done", ran.seconds)
        return record_type.load(ran.result, f"{self.out_dir}: the {name} stage's record")

    def output_sha(self, stage: str, name: str) -> str:
        return self.runner.records[stage].outputs[name]


def _run_stages(
    profile: DeviceProfile, sources: Sources, data, inputs, options: BuildOptions, on_event, hooks, out_dir: Path,
    current: list[str], done: list[dict[str, Any]],
) -> DeviceResult:  # fmt: skip
    config = {"profile": profile.name, "options": options.resolved(), **inputs}
    runner = StageRunner(out_dir, config=config, force=options.force)
    stages = _Stages(profile.name, out_dir, runner, on_event, current, done)
    keys = StageKeys(profile, inputs, options, data)

    plan_key = keys.plan()
    plan = stages.run("plan", plan_key, lambda d: _plan(d, profile, sources, data, options), PlanRecord)
    spec_dict = plan.chosen.spec.to_dict()
    train_key = keys.train(spec_dict)
    train = lambda d: _train(d, sources, data, spec_dict, options, train_key, hooks, profile.name)
    trained = stages.run("train", train_key, train, TrainRecord)
    export_key = keys.export(stages.output_sha("train", "model.safetensors"))
    exported = stages.run("export", export_key, lambda d: _export(d, profile, data, options), ExportRecord)
    gate = precision_gate(exported.dump())
    bench, bench_key = None, None
    if gate is None:  # a model that failed its gate is not what the device would run: nothing to time
        bench_key = keys.bench(stages.output_sha("export", "model.onnx"))
        bench = stages.run("bench", bench_key, lambda d: _bench(d, profile, options), BenchRecord)
    kept = kept_device_report(out_dir)
    report_key = keys.report(plan_key, train_key, export_key, bench_key, gate, kept)
    failure = None if gate is None else failure_of("export", gate)
    records = (plan, trained, exported, bench)
    report = lambda d: _report(d, profile, *records, data, failure, runner.recorded, options.require_evidence)
    stages.run("report", report_key, report, Record)
    # judged again from its evidence, every recorded file re-hashed: a reused report must prove itself too
    return DeviceResult(profile.name, str(out_dir), load_verified_report(out_dir), list(done), error=gate)


def _plan(
    out_dir: Path, profile: DeviceProfile, sources: Sources, data, options: BuildOptions
) -> StageOutput:
    bank_space = SearchSpace.from_bank(sources.geometry, data.info.num_classes)
    if options.img_size:  # the models are built for the data's (resized) image size
        bank_space = dataclasses.replace(bank_space, img_size=options.img_size)
    from_bank = sources.geometry_source == "bank"  # past a teacher's sizes weight selection cannot go
    space = beyond_bank(bank_space, options.beyond_bank) if from_bank else bank_space
    accuracy = None
    if options.objective == "accuracy":  # every size of the space, sliced, on this build's validation split
        accuracy = accuracy_table(sources.bank_path, space.specs(), data)
    selection = select_with_headroom(
        profile, space, bank_space if from_bank else None, objective=options.objective, accuracy=accuracy,
        calibration=options.calibration,
    )  # fmt: skip
    record = PlanRecord.load({"selection": selection.to_dict(), "search_space": space.to_dict()}, "plan")
    write_json(out_dir / "plan.json", record.dump())
    return StageOutput(record.dump(), ["plan.json"])


def _train(
    out_dir: Path,
    sources: Sources,
    data,
    spec_dict: dict,
    options: BuildOptions,
    key: str,
    hooks,
    profile: str,
) -> StageOutput:
    """The model's initialization (``--init``, or every one with ``--compare-init``) and training; shared by
    every profile of this output root that picks the spec.

    Damaged caches recover: a shared model under ``.models/<key>/`` that is damaged or foreign is discarded
    and retrained without being asked; ``--force`` discards the training checkpoints under
    ``.cache/train-<key>/`` (an unreadable checkpoint otherwise stops the build, naming that folder), and
    ``build`` discards every shared model before the first profile, so a forced build trains again.
    """

    shared = out_dir.parent / ".models" / key
    cache = out_dir.parent / ".cache" / f"train-{key}"
    record_path = shared / "train.json"
    for folder in (shared, cache):
        remove_stale_parts(folder)
    if options.force:
        shutil.rmtree(cache, ignore_errors=True)
    problem = shared_model_problem(shared, key, spec_dict)
    if problem is not None:
        if shared.exists():
            log.warning("discarding the cached model in %s: %s; training it again", shared, problem)
            shutil.rmtree(shared)
        spec = ViTSpec.from_dict(spec_dict)
        on_step, on_note = hooks
        try:
            if options.compare_init:
                note = None if on_note is None else (lambda message: on_note(profile, message))
                model, record = compare(sources, spec, data, options, cache, on_step=on_step, on_note=note)
            else:
                model, record = run_init(options.init, sources, spec, data, options, seed=options.seed,
                                         on_step=on_step, checkpoint_dir=cache)  # fmt: skip
        except UnusableCheckpointError as exc:
            raise InvalidInputError(exc.message, hint=f"delete {cache}, or rerun with --force") from exc
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_folded(shared / "model.safetensors", state, spec, {"train_key": key, "wave_deploy": __version__})
        write_json(record_path, record)  # written last: its presence marks the shared model complete
        shutil.rmtree(cache, ignore_errors=True)
    else:
        log.info("reusing the model trained for another profile (%s)", shared)
    for name in ("model.safetensors", "train.json"):
        copy_file(shared / name, out_dir / name)
    trained = TrainRecord.load(_read_json(out_dir / "train.json"), str(out_dir / "train.json"))
    return StageOutput(trained.dump(), ["model.safetensors", "train.json"])


def _export(out_dir: Path, profile: DeviceProfile, data, options: BuildOptions) -> StageOutput:

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
        device_val_images=options.device_val_images,
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
    return StageOutput(ExportRecord.load(summary, "export.json").dump(), files)


def _bench(out_dir: Path, profile: DeviceProfile, options: BuildOptions) -> StageOutput:
    """Time the model the profile's runtime would run, with ONNX Runtime on this build machine."""

    onnx = out_dir / Target.of(profile).bench_variant.file  # passed its gate: _run_stages checked
    runner = OrtRunner(onnx, threads=profile.runtime.intra_op_threads)
    stats, samples = benchmark_samples(
        runner,
        batch=profile.budgets.latency_batch,
        warmup=options.bench_warmup,
        iterations=options.bench_iterations,
        seed=options.seed,
    )
    what = f"{onnx.name} with ONNX Runtime on this build machine (not the target device)"
    memory = None
    if profile.hardware.build_host_is_device:  # the host's measurements count: its session's memory too
        what = f"{onnx.name} with ONNX Runtime on this build machine (the profile says it is the device)"
        threads = profile.runtime.intra_op_threads or 1
        memory = session_memory(onnx, profile.budgets.latency_batch, threads, ["CPUExecutionProvider"])
    record = BenchRecord(
        model=onnx.name, stats=stats, what=what, samples_ms=[round(s, 4) for s in samples], memory=memory
    )
    write_json(out_dir / "bench.json", record.dump())
    # the stage cache keeps the statistics; the samples stay in bench.json
    return StageOutput(record.model_copy(update={"samples_ms": []}).dump(), ["bench.json"])


def _report(
    out_dir: Path,
    profile: DeviceProfile,
    plan: PlanRecord,
    trained: TrainRecord,
    exported: ExportRecord,
    bench: BenchRecord | None,
    data,
    failure,
    recorded: dict[str, str],
    require_evidence: str = "any",
) -> StageOutput:
    """report.json/md and plots; a kept device measurement is merged again if it is the one ``recorded``
    (manifest.json before this build) names, and stays recorded as an output of this stage."""
    if bench is not None:  # with its samples, which bench.json holds and the stage cache does not
        bench = BenchRecord.load(_read_json(out_dir / "bench.json"), str(out_dir / "bench.json"))
    report = assemble_report(
        out_dir, profile, plan, trained, exported, bench, data, failure, require_evidence=require_evidence
    )
    report = merge_kept(out_dir, report, recorded)
    paths = write_report_files(out_dir, report)
    files = {str(Path(p).relative_to(out_dir)) for p in paths}
    if kept_device_report(out_dir).is_file():
        files.add(KEPT_REL)
    return StageOutput({"verdict": report["verdict"]}, sorted(files))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
