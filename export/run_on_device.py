#!/usr/bin/env python3
"""wave-deploy on-device kit: build, check and benchmark the bundled model on the device itself.

One command, run inside the bundle directory on the target device:

    python3 run_on_device.py                          # runtime from plan.json (TensorRT for Jetsons)
    python3 run_on_device.py --runtime onnxruntime    # ONNX Runtime instead (also works on any machine)
    python3 run_on_device.py --calibrate --out samples.json   # measure the latency calibration design

It needs only numpy plus TensorRT (trtexec, or the tensorrt Python package to build) or onnxruntime; it
does not import wave-deploy, torch or timm. Steps: check each model file's sha256 against plan.json;
(TensorRT) build the engine from the plan; run the reference inputs (reference.npz) and compare with the
reference outputs within the plan's tolerance (int8: reported, not gated); (ONNX Runtime) measure top-1 on
the labelled subset validation.npz, gated against the top-1 the build machine measured with the same file;
benchmark
(warmup + N timed iterations); record peak memory; write device_report.json with the same latency keys as
wave-deploy's report.json. Exit codes follow wave-deploy: 0 ok, 3 invalid bundle or a model file whose
sha256 does not match, 4 missing runtime or GPU, 6 a build step failed or ONNX Runtime refused or failed
the model, 7 parity or accuracy failed.

``--calibrate --out SAMPLES`` instead measures the bundle's calibration design (calibration.zip: the models
`wave-deploy calibrate` would measure, at this bundle's geometry and deployed precision) with the bundle's
runtime and writes SAMPLES for `wave-deploy calibrate --profile P --from-device SAMPLES` (kit_calibrate.py).
It prints an estimate of its time first and a progress line every 10 s on stderr. Exit codes as above, and
2 for options that do not go together.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the kit's sibling modules

import shutil
import subprocess

from kit_common import (
    EXIT_INVALID,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_PARITY,
    EXIT_STAGE,
    REPORT_SCHEMA_VERSION,
    KitError,
    accuracy_record,
    check_writable,
    compare,
    cpu_description,
    device_model,
    latency_stats,
    load_bundle,
    load_validation,
    log,
    model_inputs,
    one_line,
    onnxruntime_errors,
    peak_rss_mib,
    sha256,
    verify_models,
    write_json_atomic,
)
from kit_memory import session_memory

HERE = Path(__file__).resolve().parent


# --- ONNX Runtime path --------------------------------------------------------------------------------


def run_onnxruntime(bundle: Path, plan: dict, refs: dict, args) -> dict:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise KitError("onnxruntime is not installed: pip install onnxruntime", EXIT_MISSING) from exc
    precision = plan["precision"] if plan["precision"] in plan["models"] else "fp32"
    model_path = bundle / plan["models"][precision]
    if not model_path.is_file():
        raise KitError(f"{model_path} is missing", EXIT_INVALID)
    providers = args.provider or ["CPUExecutionProvider"]
    unknown = [p for p in providers if p not in ort.get_available_providers()]
    if unknown:
        raise KitError(f"ONNX Runtime provider(s) {unknown} not available here", EXIT_MISSING)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    with onnxruntime_errors(model_path.name):  # a model ONNX Runtime refuses or fails: one line, exit 6
        session = ort.InferenceSession(str(model_path), options, providers=providers)
        actual = session.get_providers()
        name = session.get_inputs()[0].name
    tol = plan["tolerances"][precision]
    run = lambda x: _run_session(session, name, x, model_path.name)
    checks = [compare(model_path.name, run(x), y, tol) for x, y in refs.values()]
    accuracy = None
    subset = load_validation(bundle, plan)
    if subset is not None:
        meta, images, labels = subset
        logits = np.concatenate(
            [run(model_inputs(meta, images[i : i + 32])) for i in range(0, len(images), 32)]
        )
        accuracy = accuracy_record(logits, labels, meta, model_path.name)
    result = {
        "runtime": "onnxruntime",
        "runtime_version": ort.__version__,
        "providers": actual,
        "precision": precision,
        "model_file": model_path.name,
        "model_sha256": sha256(model_path),
        "parity": {"tolerance": tol, "batches": checks, "gated": parity_gated(precision)},
        "accuracy": accuracy,
    }
    if parity_gated(precision) and not all(c["passed"] for c in checks):
        return result
    x = np.random.default_rng(0).standard_normal((args.batch, *plan["sample_shape"])).astype(np.float32)
    with onnxruntime_errors(f"{model_path.name} at batch {args.batch}"):
        for _ in range(args.warmup):
            session.run(None, {name: x})
        samples = []
        for _ in range(args.iterations):
            start = time.perf_counter_ns()
            session.run(None, {name: x})
            samples.append((time.perf_counter_ns() - start) / 1e6)
    on_gpu = actual[0] != "CPUExecutionProvider"
    hardware = device_model() or cpu_description()
    result["latency"] = latency_stats(
        samples, batch=args.batch, warmup=args.warmup, timed="host-to-host",
        runtime=f"onnxruntime {ort.__version__} [{', '.join(actual)}]",
        hardware=hardware if not on_gpu else f"{hardware} (GPU via {actual[0]})", threads=threads,
    )  # fmt: skip
    # the kit's own peak (it holds the bundle's data too) and the session's alone, in a fresh process
    result["memory"] = {
        "peak_rss_mib": peak_rss_mib(),
        **session_memory(model_path, args.batch, threads, actual),
    }
    return result


def _run_session(session, name: str, x: np.ndarray, model_file: str) -> np.ndarray:
    """The first output of one run; ONNX Runtime's errors as one line (exit 6)."""
    with onnxruntime_errors(f"{model_file} at batch {len(x)}"):
        return session.run(None, {name: x})[0]


def parity_gated(precision: str) -> bool:
    """int8 models are judged by accuracy on validation.npz; their logit error is reported, not gated."""
    return precision != "int8"


# --- report -------------------------------------------------------------------------------------------


def power_mode() -> str | None:
    """`nvpmodel -q` on Jetsons: latency without the power mode is meaningless."""

    if not shutil.which("nvpmodel"):
        return None
    try:
        out = subprocess.run(
            ["nvpmodel", "-q"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.split()) or None


def _finite(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_report(path: Path, report: dict) -> dict:
    """device_report.json, strict JSON (no NaN or infinity: the build machine's reader refuses them); a
    non-finite number that got this far is written as null and the report fails, saying so. Returns the
    report as written."""
    try:
        text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        report = {**_finite(report), "passed": False}
        report["error"] = report.get("error") or "the report held a non-finite number (written as null)"
        text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", choices=["auto", "tensorrt", "onnxruntime"], default="auto",
                        help="auto: the runtime named in plan.json")  # fmt: skip
    parser.add_argument("--bundle", type=Path, default=HERE, help="bundle directory (default: this script's)")
    parser.add_argument(
        "--batch", type=int, default=None, help="benchmark batch (default: the budget's batch)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations before timing")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--provider", action="append", help="ONNX Runtime execution provider (repeatable)")
    parser.add_argument(
        "--trtexec", default=None, help="path to trtexec (default: PATH, then /usr/src/tensorrt)"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="output file (default: BUNDLE/device_report.json)"
    )
    calibration = parser.add_argument_group("calibration (--calibrate)")
    calibration.add_argument("--calibrate", action="store_true",
                             help="measure the latency calibration design instead; needs --out")  # fmt: skip
    calibration.add_argument("--out", type=Path, default=None, help="samples file to write")
    calibration.add_argument("--quick", action="store_true", help="the design's quick subset, short timing")
    calibration.add_argument("--clock", choices=["wall", "thread"], default="wall",
                             help="ONNX Runtime: 'thread' times one thread's CPU time (needs --threads 1)")  # fmt: skip
    calibration.add_argument("--workdir", type=Path, default=None,
                             help="where each model's weights are written while it is timed (default: the "
                             "system's temporary directory)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.calibrate:
        benchmark = [name for name, given in (("--warmup", args.warmup != 20), ("--iterations", args.iterations != 200),
                     ("--batch", args.batch is not None), ("--report", args.report is not None)) if given]  # fmt: skip
        if benchmark:
            parser.error(
                f"{', '.join(benchmark)} do not go with --calibrate (the design sets its own timing)"
            )
        return calibrate_main(args)
    if args.out or args.quick or args.clock != "wall" or args.workdir is not None:
        parser.error("--out, --quick, --clock and --workdir go with --calibrate")
    bundle = args.bundle.resolve()
    report_path = args.report or bundle / "device_report.json"
    report: dict = {"schema_version": REPORT_SCHEMA_VERSION, "kind": "device_report", "passed": False}
    code = EXIT_OK
    try:
        check_writable(report_path, "--report")
    except KitError as exc:
        log(f"error: {exc}")
        return exc.code
    try:
        if args.warmup < 0 or args.iterations < 1:
            raise KitError("need --warmup >= 0 and --iterations >= 1", EXIT_INVALID)
        plan, refs = load_bundle(bundle)
        args.batch = args.batch or int(plan["bench_batch"])
        runtime = plan["runtime"] if args.runtime == "auto" else args.runtime
        report.update(profile=plan["profile"], bundle=str(bundle), power_mode=power_mode(), batch=args.batch)
        report["model_sha256_checked"] = verify_models(bundle, plan)
        if runtime == "tensorrt":
            import trt_device

            result = trt_device.run_tensorrt(bundle, plan, refs, args)
        else:
            result = run_onnxruntime(bundle, plan, refs, args)
        report.update(result)
        parity = report["parity"]
        errors = [c["max_abs_err"] for c in parity["batches"]]
        parity["max_abs_err"] = None if None in errors else max(errors)
        parity["passed"] = all(c["passed"] for c in parity["batches"])
        broken = [c["error"] for c in parity["batches"] if c.get("error")]
        if broken:  # NaN or infinity out of the model: a failure whether or not parity is gated
            parity["error"] = broken[0]
            raise KitError(f"parity failed: {broken[0]}", EXIT_PARITY)
        report["hardware"] = report.get("latency", {}).get("hardware") or device_model() or cpu_description()
        gated = parity.setdefault("gated", True)
        accuracy = report.setdefault("accuracy", None)
        report.setdefault("memory", None)
        report["passed"] = (parity["passed"] or not gated) and (accuracy is None or accuracy["passed"])
        if gated and not parity["passed"]:
            worst = max(parity["batches"], key=lambda c: c["max_abs_err"] - c["limit"])
            raise KitError(
                f"parity failed: max abs error {worst['max_abs_err']:.3g} > {worst['limit']:.3g} "
                f"at batch {worst['batch']}", EXIT_PARITY,
            )  # fmt: skip
        if accuracy is not None and not accuracy["passed"]:
            why = (accuracy.get("gate") or {}).get("reason") or (
                f"{accuracy['drop_points']:.2f} points below the {accuracy['build_machine_top1']:.2%} the build "
                f"machine measured with the same file (allowed: {accuracy['max_drop_points']:g})")  # fmt: skip
            raise KitError(
                f"accuracy gate failed: top-1 {accuracy['top1']:.2%} on {accuracy['n_images']} images: {why}",
                EXIT_PARITY,
            )
    except KitError as exc:
        report["passed"] = False
        report["error"] = str(exc)
        code = exc.code
        log(f"error: {exc}")
    report = write_report(report_path, report)
    if not report["passed"] and code == EXIT_OK:  # failed only as it was written (a non-finite number)
        code = EXIT_STAGE
        log(f"error: {report['error']}")
    lat = report.get("latency")
    if lat:
        log(f"{lat['runtime']} batch {lat['batch']}: p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, "
            f"{lat['throughput_img_per_s']:.1f} img/s ({lat['timed']})")  # fmt: skip
    acc = report.get("accuracy")
    if acc:
        log(f"top-1 {acc['top1']:.2%} on {acc['n_images']} labelled images ({acc['source']})")
    log(f"{'PASS' if report['passed'] else 'FAIL'}: report written to {report_path}")
    return code


def calibrate_main(args) -> int:
    """--calibrate: write the samples file, or exit with the kit's code and one line (no file written)."""
    import kit_calibrate

    if args.out is None:
        log("error: --calibrate needs --out SAMPLES")
        return kit_calibrate.EXIT_USAGE
    try:
        check_writable(args.out, "--out")  # before a measurement that can take an hour
        plan, _ = load_bundle(args.bundle.resolve())
        samples = kit_calibrate.samples_file(args.bundle.resolve(), plan, args)
    except KitError as exc:
        log(f"error: {exc}")
        return exc.code
    try:
        write_json_atomic(args.out, samples)
    except (OSError, ValueError) as exc:  # ValueError: a non-finite number (validated before: a bug)
        log(f"error: cannot write {args.out}: {one_line(exc)}")
        return EXIT_INVALID
    log(f"wrote {len(samples['samples'])} calibration samples to {args.out}; on the build machine: "
        f"wave-deploy calibrate --profile {plan['profile']} --from-device {args.out.name}")  # fmt: skip
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
