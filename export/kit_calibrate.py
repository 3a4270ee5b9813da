"""`run_on_device.py --calibrate --out SAMPLES`: measure the bundle's calibration design on the device.

The design (``calibration.zip``, its sha256 in plan.json) holds one ONNX graph per design model at the
bundle's geometry and deployed precision, without weights; ``kit_design`` writes each model's weights from
seeded random values just before it is timed, and deletes them after. ONNX Runtime: every model in every
pass gets a fresh session; each (model, batch) point is timed like `wave-deploy calibrate` does (warm-up,
then timed runs until both a count and a minimum duration are reached), passes in a shuffled order, the
pass with the lowest median kept. TensorRT: trtexec builds one engine per model (the plan's flags), then
times each batch per pass (``--exportTimes``). The samples file goes back to the build machine:
`wave-deploy calibrate --profile P --from-device SAMPLES`. No wave-deploy, torch, timm or onnx imports here.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

import kit_design
import numpy as np
from kit_common import (
    EXIT_INVALID,
    EXIT_MISSING,
    KitError,
    available_mib,
    latency_stats,
    log,
    machine,
    one_line,
    onnxruntime_errors,
    sha256,
    usable_cores,
)
from kit_stats import time_calls

SAMPLES_SCHEMA_VERSION = 1
EXIT_USAGE = 2
PROGRESS_EVERY_S = 10.0


def load_design(bundle: Path, plan: dict) -> kit_design.Design:
    """The bundle's design archive, checked against the sha256 plan.json records."""
    meta = plan.get("calibration")
    if not meta:
        raise KitError("this bundle has no calibration design (made by an older wave-deploy?)", EXIT_INVALID)
    path = bundle / meta["file"]
    if not path.is_file():
        raise KitError(f"{path} is missing", EXIT_INVALID)
    if sha256(path) != meta["sha256"]:
        raise KitError(f"{path.name}: sha256 does not match plan.json (copy the bundle again)", EXIT_INVALID)
    try:
        return kit_design.Design(path)
    except kit_design.DesignError as exc:
        raise KitError(str(exc), EXIT_INVALID) from exc


def design_points(design: kit_design.Design, quick: bool) -> list[tuple[dict, int]]:
    """(model record, batch) of the full design, or of its quick subset."""
    by_name = {(m["depth"], m["embed_dim"]): m for m in design.models}
    if not quick:
        return [(m, b) for m in design.models for b in m["batches"]]
    return [(by_name[(d, w)], b) for d, w, b in design.index["quick"]]


class Pace:
    """Progress lines on stderr: every PROGRESS_EVERY_S seconds and at the end, with the time left corrected by
    the pace so far (estimated seconds of work done vs seconds taken)."""

    def __init__(self, total_s: float):
        self.total_s, self.done_s = total_s, 0.0
        self.start = self.last = time.monotonic()

    def step(self, work_s: float, done: int, total: int, what: str) -> None:
        self.done_s += work_s
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S and done != total:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / self.done_s * max(0.0, self.total_s - self.done_s) if self.done_s else 0.0
        log(f"calibrate: {done}/{total} ({what}), elapsed {kit_design.clock_text(elapsed)}"
            + (f", about {kit_design.clock_text(left)} left" if done != total else ""))  # fmt: skip


def keep_best(best: dict, key: tuple, stats: dict) -> None:
    if key not in best or stats["p50_ms"] < best[key]["p50_ms"]:
        best[key] = stats


def sample_record(model: dict, batch: int, st: dict) -> dict:
    keys = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "iterations")
    return {"depth": model["depth"], "embed_dim": model["embed_dim"], "num_heads": model["num_heads"],
            "batch": batch, **{k: st[k] for k in keys}}  # fmt: skip


def probe_gflops(ort, design: kit_design.Design, threads: int) -> float:
    """The GEMM speed of ONNX Runtime here (the design's probe.onnx, about 0.2 s)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(design.read("probe.onnx"), options, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    (m, k), n = shapes["a"], shapes["b"][1]
    return kit_design.gemm_gflops(session, m, k, n)


def estimate(points, timing: dict, passes: int, gflops: float) -> dict:
    """Estimated seconds per (model name, batch) over all passes (kit_design's estimate, as wave-deploy's)."""
    out = {}
    for model, batch in points:
        latency = kit_design.estimate_latency_ms(model["gflop"][str(batch)], model["kernels"], gflops)
        out[(model["name"], batch)] = kit_design.point_seconds(latency, timing, passes)
    return out


def check_memory(points, peak=lambda model: model["memory_mib"], what: str = "") -> None:
    """KitError (exit 4) before anything is written or run when the design's most demanding model needs more
    than the memory available here (``available_mib``; no check where the platform cannot tell). ``peak``: a
    model record's estimated peak in MiB (default: its runtime memory at its largest batch, ``memory_mib``);
    ``what``: what that estimate covers, for the message."""
    model = max((m for m, _ in points), key=peak)
    need = peak(model)
    available = available_mib()
    if available is not None and need > available:
        raise KitError(f"the design's largest model ({model['name']}) needs about {need:.0f} MiB{what} but this "
                       f"device has {available:.0f} MiB available: free memory and run again", EXIT_MISSING)  # fmt: skip


def _open_ort(args):
    """onnxruntime, the intra-op threads and the providers: checked before anything is measured."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise KitError("onnxruntime is not installed: pip install onnxruntime", EXIT_MISSING) from exc
    threads = args.threads or usable_cores()
    if args.clock == "thread" and threads != 1:
        raise KitError("--clock thread times one thread's CPU time: use it with --threads 1", EXIT_USAGE)
    providers = args.provider or ["CPUExecutionProvider"]
    unknown = [p for p in providers if p not in ort.get_available_providers()]
    if unknown:
        raise KitError(f"ONNX Runtime provider(s) {unknown} not available here", EXIT_MISSING)
    return ort, threads, providers


def _time_session(session, batches: list, sample_shape: list, timing: dict, clock) -> dict:
    """{batch: per-call latencies in ms} of one session."""
    name = session.get_inputs()[0].name
    out = {}
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, *sample_shape)).astype(np.float32)
        out[batch] = time_calls(lambda feed={name: x}: session.run(None, feed), warmup=timing["warmup"],
                                iterations=timing["iterations"], min_duration_s=timing["min_duration_s"],
                                clock=clock)  # fmt: skip
    return out


def run_onnxruntime(design: kit_design.Design, points, args) -> tuple[dict, list]:
    """Every point timed in ONNX Runtime, in shuffled passes with a fresh session per model and pass:
    (runtime and settings records, samples)."""
    ort, threads, providers = _open_ort(args)
    timing = design.index["timing"]["quick" if args.quick else "full"]
    passes = timing["passes"]
    check_memory(points)
    seconds = estimate(points, timing, passes, probe_gflops(ort, design, threads))
    by_model: dict[str, list] = {}
    for model, batch in points:
        by_model.setdefault(model["name"], [model]).append(batch)
    g = design.index["geometry"]
    log(f"calibrate: {len(points)} measurements of {len(by_model)} models at {g['img_size']} px, patch "
        f"{g['patch_size']}, {g['in_chans']} channel(s), heads of {g['head_dim']}, {design.index['precision']} "
        f"(onnxruntime {ort.__version__}, {threads} thread(s), {args.clock} clock, {passes} pass(es)); "
        f"estimated {kit_design.clock_text(sum(seconds.values()))}; a progress line every "
        f"{PROGRESS_EVERY_S:g} s")  # fmt: skip
    clock = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # as wave-deploy's OrtRunner
    options.log_severity_level = 3
    best: dict = {}
    pace, rng, done, detail = Pace(sum(seconds.values())), random.Random(0), 0, ""
    workdir = make_workdir(args.workdir)
    try:
        for n_pass in range(passes):
            order = list(by_model)
            rng.shuffle(order)
            for name in order:
                model, *batches = by_model[name]
                graph = materialize(design, model, workdir)
                with onnxruntime_errors(f"design model {name}"):
                    session = ort.InferenceSession(str(graph), options, providers=providers)
                    detail = f"onnxruntime {ort.__version__} [{', '.join(session.get_providers())}]"
                    measured = _time_session(session, batches, design.index["sample_shape"], timing, clock)
                del session
                for path in workdir.iterdir():
                    path.unlink()
                for batch, ms in measured.items():
                    st = latency_stats(ms, batch=batch, warmup=timing["warmup"], timed="host-to-host",
                                       runtime=detail, hardware="", threads=threads)  # fmt: skip
                    keep_best(best, (name, batch), st)
                    done += 1
                    pace.step(seconds[(name, batch)] / passes, done, passes * len(points),
                              f"pass {n_pass + 1}/{passes}")  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    runtime = {"name": "onnxruntime", "version": ort.__version__, "detail": detail,
               "precision": design.index["precision"], "threads": threads, "clock": args.clock}  # fmt: skip
    settings = {"passes": passes, "quick": bool(args.quick),
                **{k: timing[k] for k in ("warmup", "iterations", "min_duration_s")}}  # fmt: skip
    return {"runtime": runtime, "settings": settings}, [
        sample_record(m, b, best[(m["name"], b)]) for m, b in points
    ]


def make_workdir(parent) -> Path:
    """A fresh folder for the design models' weights (in ``--workdir``, default the system's temporary
    directory): KitError (exit 3) naming the folder when it cannot be made."""
    try:
        return Path(tempfile.mkdtemp(prefix="wave-deploy-calibrate-", dir=parent))
    except OSError as exc:
        where = parent or tempfile.gettempdir()
        raise KitError(
            f"cannot make a work folder in {where} (--workdir): {one_line(exc)}", EXIT_INVALID
        ) from None


def materialize(design: kit_design.Design, model: dict, workdir: Path) -> Path:
    """``design.materialize``: a broken design entry is exit 3, a work folder that cannot take the weights
    (full, read-only) exit 3 naming the folder, not the samples file."""
    try:
        return design.materialize(model, workdir)
    except kit_design.DesignError as exc:
        raise KitError(
            f"calibration design, model {model.get('name')}: {one_line(exc)}", EXIT_INVALID
        ) from None
    except OSError as exc:
        raise KitError(f"cannot write design model {model.get('name')}'s weights in {workdir} (--workdir; "
                       f"a full disk?): {one_line(exc)}", EXIT_INVALID) from None  # fmt: skip
    except (KeyError, ValueError, TypeError) as exc:
        raise KitError(
            f"calibration design, model {model.get('name')}: {one_line(exc)}", EXIT_INVALID
        ) from None


def samples_file(bundle: Path, plan: dict, args) -> dict:
    """Measure the design with the bundle's runtime and return the samples file's content."""
    design = load_design(bundle, plan)
    try:
        runtime = plan["runtime"] if args.runtime == "auto" else args.runtime
        if runtime != design.index["runtime"]:
            raise KitError(f"this bundle's design is timed with {design.index['runtime']} (plan.json); "
                           f"--runtime {runtime} cannot calibrate it", EXIT_USAGE)  # fmt: skip
        points = design_points(design, args.quick)
        if runtime == "tensorrt":
            import trt_device

            measured, samples = trt_device.calibrate(bundle, plan, design, points, args)
        else:
            measured, samples = run_onnxruntime(design, points, args)
        return {
            "schema_version": SAMPLES_SCHEMA_VERSION,
            "kind": "calibration_samples",
            "profile": plan["profile"],
            "variant": design.index["variant"],
            "design_sha256": plan["calibration"]["sha256"],
            "machine": machine(),
            "geometry": design.index["geometry"],
            **measured,
            "samples": samples,
        }
    finally:
        design.close()
