"""Shared pieces of the on-device kit: exit codes, errors, bundle loading and hashes, parity, accuracy,
memory and latency statistics.

The statistics use the definitions of wave_deploy.bench.stats (numpy's linear percentiles) and write the
same keys, without importing wave-deploy.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_INVALID, EXIT_MISSING, EXIT_STAGE, EXIT_PARITY = 0, 3, 4, 6, 7
REPORT_SCHEMA_VERSION = 1


class KitError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"[run_on_device] {message}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(bundle: Path) -> tuple[dict, dict]:
    """plan.json and the reference batches {batch: (inputs, outputs)}."""
    plan_path, ref_path = bundle / "plan.json", bundle / "reference.npz"
    for path in (plan_path, ref_path):
        if not path.is_file():
            raise KitError(f"{path} is missing: is this a wave-deploy bundle?", EXIT_INVALID)
    try:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        with np.load(ref_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise KitError(f"cannot read the bundle: {exc}", EXIT_INVALID) from exc
    required = ("profile", "runtime", "precision", "models", "tolerances", "reference_batches", "bench_batch",
                "sample_shape", "output_name", "build_plan")  # fmt: skip
    missing = [key for key in required if key not in plan]
    if missing:
        raise KitError(f"plan.json lacks {', '.join(missing)}: is this a wave-deploy bundle?", EXIT_INVALID)
    refs = {}
    for batch in plan["reference_batches"]:
        try:
            refs[int(batch)] = (arrays[f"inputs_b{batch}"], arrays[f"outputs_b{batch}"])
        except KeyError as exc:
            raise KitError(f"reference.npz lacks {exc} for batch {batch}", EXIT_INVALID) from exc
    return plan, refs


def verify_models(bundle: Path, plan: dict) -> dict:
    """sha256 of every model file plan.json lists, checked against its record: {file name: sha256}."""
    recorded = plan.get("sha256") or {}
    found = {}
    for name in sorted(set(plan["models"].values())):
        path = bundle / name
        if not path.is_file():
            raise KitError(f"{path} is missing", EXIT_INVALID)
        if name not in recorded:
            raise KitError(f"plan.json records no sha256 for {name}", EXIT_INVALID)
        found[name] = sha256(path)
        if found[name] != recorded[name]:
            raise KitError(
                f"{name}: sha256 {found[name][:16]}... does not match the bundle's record "
                f"{recorded[name][:16]}... (the file was changed or damaged; copy the bundle again)",
                EXIT_INVALID,
            )
    return found


def load_validation(bundle: Path, plan: dict) -> tuple[dict, np.ndarray, np.ndarray] | None:
    """The labelled subset plan.json names: (its plan.json record, images, labels), or None."""
    meta = plan.get("validation")
    if not meta:
        return None
    path = bundle / meta["file"]
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"].astype(np.float32), data["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise KitError(f"cannot read {path}: {exc}", EXIT_INVALID) from exc
    if len(images) != len(labels) or len(images) != meta["n_images"]:
        raise KitError(f"{path}: {len(images)} images, {len(labels)} labels, plan.json says "
                       f"{meta['n_images']}", EXIT_INVALID)  # fmt: skip
    return meta, images, labels


def accuracy_record(logits: np.ndarray, labels: np.ndarray, meta: dict, model_file: str) -> dict:
    """Top-1 on the bundle's labelled subset, judged against the top-1 the build machine measured with the
    same file on the same images (the export already judged the file against fp32 on the whole split)."""
    top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
    expected = (meta.get("top1") or {}).get(model_file)
    if expected is None:  # a bundle without the per-file record: judge against ONNX fp32
        expected = float(meta["onnx_fp32_top1"])
    drop = round((float(expected) - top1) * 100.0, 6)
    return {
        "top1": top1,
        "n_images": len(labels),
        "source": meta["file"],
        "build_machine_top1": float(expected),
        "onnx_fp32_top1_build_machine": float(meta["onnx_fp32_top1"]),
        "drop_points": drop,  # vs build_machine_top1
        "max_drop_points": float(meta["max_drop_points"]),
        "passed": drop <= float(meta["max_drop_points"]),
    }


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far (MiB), or None where the platform cannot tell."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


# --- statistics: the same definitions as wave_deploy.bench.stats (numpy's linear percentiles) -----------


def latency_stats(samples_ms, *, batch, warmup, timed, runtime, hardware, threads) -> dict:
    samples = np.sort(np.asarray(samples_ms, dtype=np.float64))
    p50, p90, p95, p99 = (float(np.percentile(samples, q)) for q in (50, 90, 95, 99))
    mean = float(np.mean(samples))
    return {
        "batch": int(batch),
        "iterations": int(samples.size),
        "warmup": int(warmup),
        "p50_ms": p50,
        "p90_ms": p90,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_ms": mean,
        "min_ms": float(samples[0]),
        "max_ms": float(samples[-1]),
        "throughput_img_per_s": batch / (mean / 1000.0) if mean > 0 else float("inf"),
        "timed": timed,
        "runtime": runtime,
        "hardware": hardware,
        "threads": threads,
    }


def time_calls(
    fn, *, warmup: int, iterations: int, min_duration_s: float, clock=time.perf_counter_ns
) -> list:
    """wave_deploy.bench.stats.time_calls: ``warmup`` untimed calls, then timed calls (ms) until both
    ``iterations`` calls and ``min_duration_s`` of timed time are reached."""
    for _ in range(warmup):
        fn()
    samples, total_ns, min_ns = [], 0, int(min_duration_s * 1e9)
    while len(samples) < iterations or total_ns < min_ns:
        start = clock()
        fn()
        elapsed = clock() - start
        total_ns += elapsed
        samples.append(elapsed / 1e6)
    return samples


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` beside ``path`` and rename it into place: never a half-written file."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine() -> dict:
    """The machine a calibration ran on (the keys of a wave-deploy calibration file's ``machine``)."""
    return {
        "cpu": device_model() or cpu_description(),
        "logical_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def available_mib() -> float | None:
    """MemAvailable (Linux), or None where the platform cannot tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def compare(name: str, got: np.ndarray, ref: np.ndarray, tol: dict) -> dict:
    if got.shape != ref.shape:
        raise KitError(f"{name}: output shape {got.shape} != reference {ref.shape}", EXIT_PARITY)
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    limit = float(tol["atol"]) + float(tol.get("rtol", 0.0)) * float(np.max(np.abs(ref)))
    return {"batch": int(ref.shape[0]), "max_abs_err": err, "limit": limit, "passed": err <= limit}


def cpu_description() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} logical cores)"


def device_model() -> str | None:
    """The board name on Jetsons and other device-tree machines."""
    try:
        return Path("/proc/device-tree/model").read_text(encoding="utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return None
