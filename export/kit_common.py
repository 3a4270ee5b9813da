"""Shared pieces of the on-device kit: exit codes, errors, bundle loading and hashes, parity, accuracy,
memory and latency statistics.

The latency statistics are kit_stats.py's, the one definition wave-deploy's benchmark and report schema
use too (no wave-deploy import on the device).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
from kit_accuracy import MIN_IMAGES, judge_drop, normalize_uint8, paired_counts
from kit_stats import StatsError, summarize

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
    """The labelled subset plan.json names: (its plan.json record, images as stored, labels), or None. uint8
    images become model inputs batch by batch (``model_inputs``), never all at once."""
    meta = plan.get("validation")
    if not meta:
        return None
    path = bundle / meta["file"]
    dtype = np.uint8 if meta.get("dtype") == "uint8" else np.float32
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"].astype(dtype, copy=False), data["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise KitError(f"cannot read {path}: {exc}", EXIT_INVALID) from exc
    if len(images) != len(labels) or len(images) != meta["n_images"]:
        raise KitError(f"{path}: {len(images)} images, {len(labels)} labels, plan.json says "
                       f"{meta['n_images']}", EXIT_INVALID)  # fmt: skip
    if dtype == np.uint8 and not (meta.get("normalization") or {}).get("mean"):
        raise KitError(f"{path}: uint8 images but plan.json records no normalization", EXIT_INVALID)
    return meta, images, labels


def model_inputs(meta: dict, images: np.ndarray) -> np.ndarray:
    """float32 model inputs from stored images: uint8 pixels normalised as plan.json records (the build
    machine normalised them with the same function), float32 images as they are."""
    norm = meta.get("normalization")
    if meta.get("dtype") == "uint8" and norm:
        return normalize_uint8(images, norm["mean"], norm["std"])
    return np.ascontiguousarray(images, dtype=np.float32)


def accuracy_record(logits: np.ndarray, labels: np.ndarray, meta: dict, model_file: str) -> dict:
    """Top-1 on the bundle's labelled subset, judged against what the build machine measured with the same
    file on the same images (the export already judged the file against fp32 on the whole split): image by
    image where plan.json records the build machine's predictions (kit_accuracy.judge_drop: fails only when
    the drop exceeds the allowance with 95% confidence, "not enough data" below its minimum), else on the
    difference of the two top-1 figures (bundles written before the predictions were recorded)."""
    pred = np.argmax(logits, axis=1)
    top1 = float(np.mean(pred == labels))
    expected = (meta.get("top1") or {}).get(model_file)
    if expected is None:  # a bundle without the per-file record: judge against ONNX fp32
        expected = float(meta["onnx_fp32_top1"])
    allowed = float(meta["max_drop_points"])
    reference = (meta.get("predictions") or {}).get(model_file)
    record = {
        "top1": top1,
        "n_images": len(labels),
        "source": meta["file"],
        "per_class": meta.get("per_class"),
        "build_machine_top1": float(expected),
        "onnx_fp32_top1_build_machine": float(meta["onnx_fp32_top1"]),
        "max_drop_points": allowed,
    }
    if reference is not None and len(reference) == len(labels):
        losses, gains = paired_counts(reference, pred.tolist(), labels.tolist())
        gate = judge_drop(losses, gains, len(labels), allowed, min_images=int(meta.get("min_images", MIN_IMAGES)),
                          what="device top-1")  # fmt: skip
        record.update(drop_points=gate.drop_points, gate=gate.to_dict(), passed=gate.passed)
    else:
        drop = round((float(expected) - top1) * 100.0, 6)
        record.update(drop_points=drop, gate=None, passed=drop <= allowed)
    return record


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far (MiB), or None where the platform cannot tell."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def latency_stats(samples_ms, *, batch, warmup, timed, runtime, hardware, threads) -> dict:
    """The latency block of device_report.json: kit_stats.summarize, the one definition wave-deploy uses.
    Timings that are not a measurement (none, a zero, NaN; ``LatencyStats.problems``) raise KitError (exit 6)."""
    try:
        stats = summarize(samples_ms, batch=int(batch), warmup=int(warmup), timed=timed, runtime=runtime,
                          hardware=hardware, threads=threads)  # fmt: skip
    except (StatsError, ValueError, TypeError) as exc:
        raise KitError(f"the timings cannot be summarized: {one_line(exc)}", EXIT_STAGE) from None
    problems = stats.problems()
    if problems:
        raise KitError(f"the timings at batch {batch} are not a measurement: {problems[0]} (a clock too coarse "
                       "for this model? --clock wall)", EXIT_STAGE)  # fmt: skip
    return stats.to_dict()


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type where the message is empty."""
    text = " ".join(str(exc).split())[:300]
    return text or type(exc).__name__


@contextlib.contextmanager
def onnxruntime_errors(what: str):
    """ONNX Runtime's own errors (``onnxruntime.capi.onnxruntime_pybind11_state.Fail``, ``InvalidGraph``,
    ``InvalidProtobuf``, ...: they derive from Exception only) inside the block as one line, KitError exit 6
    naming ``what``; a KitError raised inside passes through unchanged. The one mapping of both kit paths
    (``run_on_device.run_onnxruntime`` and ``kit_calibrate.run_onnxruntime``)."""
    try:
        yield
    except KitError:
        raise
    except Exception as exc:  # noqa: BLE001  (onnxruntime's own errors derive from Exception only)
        raise KitError(f"onnxruntime failed on {what}: {one_line(exc)}", EXIT_STAGE) from None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` beside ``path`` and rename it into place: never a half-written file."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_writable(path: Path, what: str) -> None:
    """Create and remove the file ``write_json_atomic`` writes beside ``path``: KitError (exit 3) before any
    work when it cannot be written there."""
    if path.exists() and not path.is_file():
        raise KitError(f"{what} {path} exists and is not a regular file", EXIT_INVALID)
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_text("", encoding="utf-8")
        tmp.unlink()
    except OSError as exc:
        raise KitError(f"cannot write {what} {path}: {one_line(exc)}", EXIT_INVALID) from None


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
    if not math.isfinite(err):  # NaN or infinity in the output: JSON has no such number, and it is a failure
        return {"batch": int(ref.shape[0]), "max_abs_err": None, "limit": limit, "passed": False,
                "error": f"{name}: the output holds NaN or infinity"}  # fmt: skip
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
