"""Making a calibration: measure a designed sample of ViT shapes with the local runtime, fit, write the file.

`wave-deploy calibrate` runs ``prepare`` (design, memory check, up-front time estimate) and then ``run``. The
design (``design_samples``) is whole models over a grid of depth x width x batch at one geometry (image size,
patch, channels, head size, MLP ratio). ONNX Runtime times each model as deployment exports it: the
project's exporter and the profile's deployed variant, built by ``design_graphs`` (one export per width,
its block replicated per depth, weights written from seeded random values by the kit's ``kit_design``, the
same code the on-device kit runs); ``--runtime torch`` runs timm models eagerly. ``measure`` times every
point in several shuffled passes and keeps the best pass's statistics; ``latency.fit_latency`` fits the
calibrated model to the medians; the file (``calibration_file.CalibrationFile``) records the runtime, the
machine and every sample (docs/latency.md). Samples measured on a device by the kit are fitted by
``device_samples``.
"""

from __future__ import annotations

import datetime
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wave_deploy.bench.runners import OrtRunner, TorchRunner, available_threads, seeded_inputs
from wave_deploy.bench.stats import TIMED_HOST_TO_HOST, LatencyStats, cpu_description, summarize, time_calls
from wave_deploy.calibration import cost
from wave_deploy.calibration.design import (  # noqa: F401  (the design's names, importable from here)
    LARGE_TOKENS,
    MIN_POINTS,
    TIMING,
    calibration_space,
    default_batches,
    design_axes,
    design_samples,
)
from wave_deploy.calibration.file import (
    CALIBRATION_SCHEMA_VERSION,
    FEATURES,
    CalibrationFile,
    write_calibration_file,
)
from wave_deploy.calibration.graphs import design_graphs
from wave_deploy.errors import UsageError
from wave_deploy.planning.latency import Calibration, fit_latency, load_calibration
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE
from wave_deploy.probe import os_platform
from wave_deploy.profiles import DeviceProfile
from wave_deploy.spec import ViTSpec
from wave_deploy.target import FP32, Target, Variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One step of a calibration, for progress lines: ``done`` of ``total`` steps, and the estimated seconds of
    the work done and in all (so a caller can correct the up-front estimate as it goes)."""

    phase: str  # "export" or "measure"
    done: int
    total: int
    work_done_s: float
    work_total_s: float
    detail: str


def _materialize(graph, seed: int, directory: Path) -> Path:
    path = directory / f"{graph.spec.name}.onnx"
    path.write_bytes(graph.graph)
    cost.kit_design().write_data(directory / f"{graph.spec.name}.data", graph.tensors, graph.data_bytes, seed)
    return path


def _open_runner(spec: ViTSpec, graph, seed: int, threads: int, directory: Path):
    if graph is not None:
        return OrtRunner(_materialize(graph, seed, directory), threads=threads)
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(**spec.timm_kwargs()).eval()
    return TorchRunner(model, (spec.in_chans, spec.img_size, spec.img_size), threads=threads)


def measure(
    points: list[tuple[ViTSpec, int]],
    *,
    runtime: str = "onnxruntime",
    variant: Variant = FP32,
    threads: int = 1,
    clock: str = "wall",
    passes: int = 3,
    quick: bool = False,
    seed: int = 0,
    exporter: str = "dynamo",
    graphs: dict | None = None,
    point_s: dict | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[list[dict], str]:
    """Time (spec, batch) points with the local runtime: ``passes`` passes over all models in a shuffled order
    (a fresh session per model and pass); each point keeps the pass with the lowest median, so a burst of load
    from other processes during one pass does not bias it. Returns sample dicts and the runtime description.
    ONNX Runtime times ``design_graphs`` (made here unless ``graphs`` has them); ``point_s`` (estimated
    seconds per point) weighs the progress reports."""

    by_model: dict[ViTSpec, list[int]] = {}
    for spec, batch in points:
        by_model.setdefault(spec, []).append(batch)
    clock_fn = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    timing = TIMING["quick" if quick else "full"]
    weight = point_s or {p: 1.0 for p in points}
    work_total, work_done = sum(weight[p] for p in points), 0.0  # each point's weight covers all passes
    best: dict[tuple[ViTSpec, int], LatencyStats] = {}
    detail, rng = "", random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="wave-deploy-measure-") as tmp:
        if runtime == "onnxruntime" and graphs is None:
            batch_max = max(b for _, b in points)

            def exported(done: int, total: int) -> None:
                if on_progress:
                    on_progress(Progress("export", done, total, 0.0, work_total, "widths exported"))

            graphs = design_graphs(list(by_model), variant, workdir=Path(tmp), exporter=exporter,
                                   batch_max=batch_max, on_width=exported)  # fmt: skip
        seeds = {s: i for i, s in enumerate(graphs or by_model)}
        for n_pass in range(passes):
            order = list(by_model)
            rng.shuffle(order)
            for i, spec in enumerate(order):
                graph = graphs[spec] if graphs is not None else None
                runner = _open_runner(spec, graph, seeds[spec], threads, Path(tmp))
                detail = runner.runtime
                for batch in by_model[spec]:
                    call = runner.timed_call(seeded_inputs(runner.sample_shape, batch), TIMED_HOST_TO_HOST)
                    samples = time_calls(call, warmup=timing["warmup"], iterations=timing["iterations"],
                                         min_duration_s=timing["min_duration_s"], clock=clock_fn)  # fmt: skip
                    st = summarize(samples, batch=batch, warmup=0, timed=TIMED_HOST_TO_HOST,
                                   runtime=runner.runtime, hardware=runner.hardware, threads=runner.threads)  # fmt: skip
                    if (spec, batch) not in best or st.p50_ms < best[(spec, batch)].p50_ms:
                        best[(spec, batch)] = st
                    work_done += weight[(spec, batch)] / passes
                del runner
                for leftover in Path(tmp).glob(f"{spec.name}.*"):
                    leftover.unlink()
                if on_progress:
                    on_progress(Progress("measure", n_pass * len(order) + i + 1, passes * len(order),
                                         work_done, work_total, f"pass {n_pass + 1}/{passes}"))  # fmt: skip
    return [_sample(spec, batch, best[(spec, batch)]) for spec, batch in points], detail


def _sample(spec: ViTSpec, batch: int, st: LatencyStats) -> dict:
    return {
        "depth": spec.depth,
        "embed_dim": spec.embed_dim,
        "num_heads": spec.num_heads,
        "batch": batch,
        "p50_ms": st.p50_ms,
        "p90_ms": st.p90_ms,
        "p95_ms": st.p95_ms,
        "p99_ms": st.p99_ms,
        "mean_ms": st.mean_ms,
        "iterations": st.iterations,
    }


def default_calibration_path(profile: DeviceProfile) -> Path:
    """``./<profile>.calibration.json`` in the working directory: never inside the installed package."""
    return Path.cwd() / f"{profile.name}.calibration.json"


def this_machine() -> dict:
    return {
        "cpu": cpu_description(),
        "logical_cores": available_threads(),
        "platform": os_platform(),
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def calibration_data(
    profile: DeviceProfile,
    samples: list[dict],
    *,
    runtime: str,
    detail: str,
    threads: int | None,
    clock: str,
    space,
    machine: dict | None = None,
    source: dict | None = None,
    quick: bool = False,
) -> CalibrationFile:
    """Fit the calibrated model to measured ``samples`` (of ``space``'s geometry): the file's content.
    ``machine`` and ``source`` default to this machine and a local measurement; ``quick``: the samples are the
    design's quick subset."""
    target = Target.of(profile)  # torch calibrations time the fp32 model
    w_prec, a_prec = (target.weight_dtype, target.activation_dtype) if runtime != "torch" else ("fp32",) * 2
    rows = [
        (space.spec(s["depth"], s["embed_dim"], s["num_heads"]), s["batch"], s["p50_ms"]) for s in samples
    ]
    fit = fit_latency(rows, w_prec, a_prec)
    factors = {
        p: max(1.0, statistics.median(s[f"{p}_ms"] / s["p50_ms"] for s in samples))
        for p in ("p90", "p95", "p99")
    }
    geometry = {
        k: getattr(space, k) for k in ("img_size", "patch_size", "in_chans", "num_classes", "mlp_ratio")
    }
    content = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "profile": profile.name,
        "source": source or {"kind": "local", "samples_file": None, "samples_sha256": None},
        "quick": quick,
        "runtime": {
            "name": runtime,
            "version": detail.split()[1] if len(detail.split()) > 1 else "",
            "detail": detail,
            "precision": w_prec,
            "threads": threads,
            "clock": clock,
        },
        "machine": machine or this_machine(),
        "geometry": {**geometry, "head_dim": space.head_dim},
        "covered": {
            key: {"lo": min(s[key] for s in samples), "hi": max(s[key] for s in samples)}
            for key in ("depth", "embed_dim", "batch")
        },
        "model": {
            "features": list(FEATURES),
            "coefficients_ms": fit.coefficients,
            "cache_mb": fit.cache_mb,
            "percentile_factors": {"p50": 1.0, **factors},
            "weight_precision": w_prec,
            "activation_precision": a_prec,
        },
        "fit": {
            "n_samples": len(samples),
            "mape_pct": fit.mape_pct,
            "max_abs_pct": fit.max_abs_pct,
            "within_10pct": fit.within_10pct,
        },
        "samples": samples,
    }
    return CalibrationFile.build(content)


def write_calibration(content: CalibrationFile, path: str | Path) -> Calibration:
    """Write the file atomically and read it back through the validator."""
    write_calibration_file(content, path)
    log.info(
        "calibration of %s: fit MAPE %.2f%% over %d samples -> %s",
        content.profile,
        content.fit.mape_pct,
        content.fit.n_samples,
        path,
    )
    return load_calibration(path)


@dataclass(frozen=True)
class Job:
    """A calibration ready to run: what will be measured, how, and what it is estimated to cost."""

    profile: DeviceProfile
    space: object
    runtime: str
    variant: Variant
    threads: int
    clock: str
    passes: int
    quick: bool
    exporter: str
    points: list
    estimate: cost.Estimate

    @property
    def models(self) -> int:
        return len({s for s, _ in self.points})


def prepare(
    profile: DeviceProfile,
    *,
    runtime: str = "onnxruntime",
    space=None,
    quick: bool = False,
    threads: int | None = None,
    clock: str = "wall",
    passes: int | None = None,
    exporter: str = "dynamo",
    gflops: float | None = None,
) -> Job:
    """Check the settings, make the design, bound its memory (InvalidInputError before anything is allocated)
    and estimate its time. ``threads``: intra-op threads (default: the profile's, capped at this machine's
    cores). ``clock``: 'wall' or 'thread' (one thread's CPU time: immune to other processes preempting it)."""
    if runtime not in ("onnxruntime", "torch"):
        raise UsageError(f"calibration runtime must be 'onnxruntime' or 'torch', got {runtime!r}")
    if clock not in ("wall", "thread"):
        raise UsageError(f"clock must be 'wall' or 'thread', got {clock!r}")
    space = DEFAULT_SEARCH_SPACE if space is None else space
    threads = threads or min(profile.runtime.intra_op_threads or available_threads(), available_threads())
    if clock == "thread" and threads != 1:
        raise UsageError("clock 'thread' measures one thread's CPU time: use it with threads=1")
    target = Target.of(profile)
    variant = target.deployed if runtime == "onnxruntime" else FP32
    if variant.precision != target.precision:
        log.warning(
            "this calibration measures %s; the profile deploys %s", variant.precision, target.precision
        )
    batches = default_batches(space, profile.runtime.batch_max, latency_batch=profile.budgets.latency_batch)
    points = design_samples(space, profile.runtime.batch_max, quick=quick, batches=batches)
    w_prec, a_prec = (target.weight_dtype, target.activation_dtype) if runtime != "torch" else ("fp32",) * 2
    memory = cost.check_memory(points, weight_prec=w_prec, act_prec=a_prec, runtime=runtime, exports=True)
    passes = passes or TIMING["quick" if quick else "full"]["passes"]
    timing = TIMING["quick" if quick else "full"]
    estimate = cost.estimate(
        points, timing, passes, gflops=gflops or cost.probe_gflops(threads),
        widths=len({s.embed_dim for s, _ in points}), exporter=exporter if runtime == "onnxruntime" else None,
        variant_made=variant.precision != "fp32", memory_mib=memory, weight_prec=w_prec,
    )  # fmt: skip
    return Job(profile, space, runtime, variant, threads, clock, passes, quick, exporter, points, estimate)


def run(job: Job, out: str | Path | None = None, on_progress=None) -> Calibration:
    """Measure the job's design, fit, write the file (default ``default_calibration_path``)."""
    samples, detail = measure(
        job.points, runtime=job.runtime, variant=job.variant, threads=job.threads, clock=job.clock,
        passes=job.passes, quick=job.quick, exporter=job.exporter, point_s=job.estimate.point_s,
        on_progress=on_progress,
    )  # fmt: skip
    data = calibration_data(job.profile, samples, runtime=job.runtime, detail=detail, threads=job.threads,
                            clock=job.clock, space=job.space, quick=job.quick)  # fmt: skip
    return write_calibration(data, Path(out) if out else default_calibration_path(job.profile))


def calibrate(
    profile: DeviceProfile, *, out: str | Path | None = None, on_progress=None, **settings
) -> Calibration:
    """``prepare`` then ``run``: measure the design with the local runtime, fit, write the file."""
    return run(prepare(profile, **settings), out, on_progress)
