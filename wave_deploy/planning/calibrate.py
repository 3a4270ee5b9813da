"""Making a calibration: measure a designed sample of ViT shapes with the local runtime, fit, write the file.

`wave-deploy calibrate` runs ``calibrate``. The design (``design_samples``) is whole models over a grid of
depth x width x batch; each model is a randomly initialized timm VisionTransformer, exported to ONNX exactly as
deployment exports it (or run in PyTorch eager). ``measure`` times every point in several shuffled passes and
keeps the best pass's statistics; ``wave_deploy.planning.latency.fit_latency`` fits the calibrated model to the
medians; the file (a ``calibration_file.CalibrationFile``) records the runtime, the machine and every sample
(docs/latency.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from wave_deploy.bench.runners import OrtRunner, TorchRunner, available_threads, seeded_inputs
from wave_deploy.bench.stats import TIMED_HOST_TO_HOST, LatencyStats, cpu_description, summarize, time_calls
from wave_deploy.errors import InvalidInputError, UsageError
from wave_deploy.planning.calibration_file import (
    CALIBRATION_SCHEMA_VERSION,
    FEATURES,
    CalibrationFile,
    write_calibration_file,
)
from wave_deploy.planning.latency import Calibration, fit_latency, load_calibration
from wave_deploy.profiles import DeviceProfile
from wave_deploy.spec import ViTSpec
from wave_deploy.target import FP32, Target, Variant

log = logging.getLogger(__name__)


def _spread(values: list[int], k: int) -> list[int]:
    """k values spread evenly over ``values`` by index, ends included."""
    if len(values) <= k:
        return list(values)
    return sorted({values[round(i * (len(values) - 1) / (k - 1))] for i in range(k)})


# Above this many tokens per image (class token included) the default design times batches 1 and 2 only: at
# 224 px / patch 16 (197 tokens) a DeiT-Small-sized model at batch 8 takes over a second per run on one core.
LARGE_TOKENS = 65


def default_batches(space, batch_max: int, *, quick: bool = False, latency_batch: int = 1) -> list[int]:
    """Batches the design times: 1, 2, 4, 8 (quick: 1, 4), or 1, 2 (quick: 1) at more than LARGE_TOKENS
    tokens per image; plus the profile's budget batch; all capped at ``batch_max``."""
    tokens = (space.img_size // space.patch_size) ** 2 + 1
    base: tuple[int, ...]
    if tokens > LARGE_TOKENS:
        base = (1,) if quick else (1, 2)
    else:
        base = (1, 4) if quick else (1, 2, 4, 8)
    return sorted({b for b in (*base, latency_batch) if b <= batch_max} or {1})


def design_samples(
    space, batch_max: int, *, quick: bool = False, batches: list[int] | None = None
) -> list[tuple[ViTSpec, int]]:
    """The (spec, batch) grid calibration measures at ``space``'s geometry: widths spread over the space
    (ends included; 6, quick 3), depths 1, 2, 4, 8, 12 and the space's maximum (quick: 1 and 4), batches
    ``batches`` (default: 1, 2, 4, 8 up to ``batch_max``; quick: 1, 4)."""
    widths = _spread(space.widths(), 3 if quick else 6)
    depths = (
        [1, min(4, space.max_depth)]
        if quick
        else sorted({1, 2, 4, 8, 12, space.max_depth} & set(range(1, space.max_depth + 1)))
    )
    if batches is None:
        batches = [b for b in ((1, 4) if quick else (1, 2, 4, 8)) if b <= batch_max] or [1]
    return [
        (space.spec(depth, width), batch)
        for width in widths
        for depth in sorted(set(depths))
        for batch in batches
    ]


def calibration_space(
    space, *, img_size=None, patch_size=None, in_chans=None, max_depth=None, max_width=None
):
    """``space`` (a bank's SearchSpace) at another geometry or size range: what ``calibrate`` measures when
    given --img-size/--patch-size/--in-chans/--max-depth/--max-embed-dim. Bad values raise InvalidInputError."""
    changes = {
        k: v
        for k, v in (
            ("img_size", img_size),
            ("patch_size", patch_size),
            ("in_chans", in_chans),
            ("max_depth", max_depth),
            ("max_embed_dim", max_width),
        )
        if v is not None
    }
    if "img_size" in changes or "patch_size" in changes:
        changes["img_sizes"] = ()
    new = dataclasses.replace(space, **changes)
    if new.img_size % new.patch_size:
        raise InvalidInputError(
            f"image size {new.img_size} is not a multiple of the patch size {new.patch_size}"
        )
    return new


def _prepare(spec: ViTSpec, runtime: str, variant: Variant, batch_max: int, workdir: Path) -> Path | None:
    """Export a randomly initialized timm model once (ONNX Runtime); torch models are rebuilt per pass.
    The model is timed as the target deploys it: ``variant`` is its ``Target.deployed``."""
    if runtime != "onnxruntime":
        return None
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.exporters.onnx import export_onnx
    from wave_deploy.exporters.quantize import make_variant

    torch.manual_seed(0)
    path = workdir / f"{spec.name}.onnx"
    export_onnx(VisionTransformer(**spec.timm_kwargs()).eval(), spec, path, batch_max=max(2, batch_max))
    if variant.precision == "fp32":
        return path
    out = workdir / f"{spec.name}.{variant.precision}.onnx"
    make_variant(variant, path, out)
    return out


def _open_runner(spec: ViTSpec, onnx_path: Path | None, threads: int):
    if onnx_path is not None:
        return OrtRunner(onnx_path, threads=threads)
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
    onnx_files: dict[ViTSpec, Path] | None = None,
) -> tuple[list[dict], str]:
    """Time (spec, batch) points with the local runtime: ``passes`` passes over all points in a shuffled order
    (a fresh session per model and pass); each point keeps the pass with the lowest median, so a burst of load
    from other processes during one pass does not bias it. Returns sample dicts and the runtime description.
    ``onnx_files``: ONNX files already made for some specs (ONNX Runtime only); the rest are exported here.
    """
    by_model: dict[ViTSpec, list[int]] = {}
    for spec, batch in points:
        by_model.setdefault(spec, []).append(batch)
    clock_fn = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    best: dict[tuple[ViTSpec, int], LatencyStats] = {}
    detail, rng = "", random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="wave-deploy-measure-") as tmp:
        given = onnx_files or {}
        files = {
            s: given.get(s) or _prepare(s, runtime, variant, max(b), Path(tmp)) for s, b in by_model.items()
        }
        for _ in range(passes):
            order = list(by_model)
            rng.shuffle(order)
            for spec in order:
                runner = _open_runner(spec, files[spec], threads)
                detail = runner.runtime
                for batch in by_model[spec]:
                    call = runner.timed_call(seeded_inputs(runner.sample_shape, batch), TIMED_HOST_TO_HOST)
                    samples = time_calls(
                        call,
                        warmup=3 if quick else 10,
                        iterations=10 if quick else 30,
                        min_duration_s=0.05 if quick else 0.3,
                        clock=clock_fn,
                    )
                    st = summarize(
                        samples,
                        batch=batch,
                        warmup=0,
                        timed=TIMED_HOST_TO_HOST,
                        runtime=runner.runtime,
                        hardware=runner.hardware,
                        threads=runner.threads,
                    )
                    if (spec, batch) not in best or st.p50_ms < best[(spec, batch)].p50_ms:
                        best[(spec, batch)] = st
                    log.debug("measured %s batch %d: p50 %.3f ms", spec.name, batch, st.p50_ms)
                del runner
    out = []
    for spec, batch in points:
        st = best[(spec, batch)]
        out.append(
            {
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
        )
    return out, detail


def default_calibration_path(profile: DeviceProfile) -> Path:
    base = Path(profile.source_file).parent if profile.source_file else Path.cwd()
    return base / f"{profile.name}.calibration.json"


def calibration_data(
    profile: DeviceProfile,
    samples: list[dict],
    *,
    runtime: str,
    detail: str,
    threads: int,
    clock: str,
    space,
) -> CalibrationFile:
    """Fit the calibrated model to measured ``samples`` (of ``space``'s geometry): the file's content."""
    target = Target.of(profile)  # torch calibrations time the fp32 model
    w_prec, a_prec = (
        (target.weight_dtype, target.activation_dtype) if runtime == "onnxruntime" else ("fp32",) * 2
    )
    rows = [
        (space.spec(s["depth"], s["embed_dim"], s["num_heads"]), s["batch"], s["p50_ms"]) for s in samples
    ]
    fit = fit_latency(rows, w_prec, a_prec)
    factors = {
        p: max(1.0, statistics.median(s[f"{p}_ms"] / s["p50_ms"] for s in samples))
        for p in ("p90", "p95", "p99")
    }
    content = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "profile": profile.name,
        "runtime": {
            "name": runtime,
            "version": detail.split()[1] if detail else "",
            "detail": detail,
            "precision": w_prec,
            "threads": threads,
            "clock": clock,
        },
        "machine": {
            "cpu": cpu_description(),
            "logical_cores": available_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "geometry": {
            k: getattr(space, k) for k in ("img_size", "patch_size", "in_chans", "num_classes", "mlp_ratio")
        },
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


def calibrate(
    profile: DeviceProfile,
    *,
    runtime: str = "onnxruntime",
    out: str | Path | None = None,
    space=None,
    quick: bool = False,
    threads: int | None = None,
    clock: str = "wall",
    passes: int = 3,
) -> Calibration:
    """Measure ``design_samples`` with the local runtime, fit the calibrated model, write the file.

    ``threads``: intra-op threads (default: the profile's, capped at this machine's cores). ``clock``:
    'wall' (default) or 'thread' (per-thread CPU time: equals wall time for a single-threaded runtime on an
    idle core, and is immune to other processes preempting it on a shared machine).
    """
    if runtime not in ("onnxruntime", "torch"):
        raise UsageError(f"calibration runtime must be 'onnxruntime' or 'torch', got {runtime!r}")
    if clock not in ("wall", "thread"):
        raise UsageError(f"clock must be 'wall' or 'thread', got {clock!r}")
    if space is None:
        from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE as space
    threads = threads or min(profile.runtime.intra_op_threads or available_threads(), available_threads())
    if clock == "thread" and threads != 1:
        raise UsageError("clock 'thread' measures one thread's CPU time: use it with threads=1")
    target = Target.of(profile)
    variant = target.deployed if runtime == "onnxruntime" else FP32
    if variant.precision != target.precision:
        log.warning("torch calibration measures fp32; the profile deploys %s", target.precision)
    batches = default_batches(
        space, profile.runtime.batch_max, quick=quick, latency_batch=profile.budgets.latency_batch
    )
    grid = design_samples(space, profile.runtime.batch_max, quick=quick, batches=batches)
    samples, detail = measure(
        grid,
        runtime=runtime,
        variant=variant,
        threads=threads,
        clock=clock,
        passes=1 if quick else passes,
        quick=quick,
    )
    data = calibration_data(
        profile,
        samples,
        runtime=runtime,
        detail=detail,
        threads=threads,
        clock=clock,
        space=space,
    )
    return write_calibration(data, Path(out) if out else default_calibration_path(profile))
