"""How well do the latency and memory models predict ONNX Runtime on this machine?

1. Draw held-out specs (depth 1-12, any width of the default search space, batch 1-8) that are not points of
   the calibration design (``wave_deploy.calibration.calibrate.design_samples``).
2. Measure the design and the held-out points together (``wave_deploy.calibration.calibrate.measure``: shuffled passes,
   so both see the same machine conditions), calibrate the profile (default x86-cpu) from the design points
   only, and compare the held-out measurements with the calibrated and the analytic predictions: mean
   absolute percentage error (MAPE) and the share within +-10%. One more wall-clock pass over the held-out
   points shows how a plain wall-clock measurement compares.
3. Memory: predicted runtime memory vs the peak RSS of a fresh process that creates an ONNX Runtime session
   and runs it (VmHWM from /proc: on Linux ru_maxrss of an exec'd child still holds the parent's peak).

4. Real shapes (224 px, 64-wide heads) and calibration on the device: ``benchmarks/kit_calibration.py``.

Usage (results land in docs/latency.md):
    python benchmarks/latency_model.py --threads 1 --clock thread --heldout 40
    python benchmarks/latency_model.py --memory-only      # step 3 alone
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wave_deploy.calibration.calibrate import calibration_data, design_samples, measure, write_calibration
from wave_deploy.planning.latency import FEATURES, predict
from wave_deploy.planning.memory import predict_memory
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE as SPACE
from wave_deploy.profiles import load_profile

RSS_PROBE = r"""
import json, sys
def hwm_kib():  # peak resident set of this process image (VmHWM; ru_maxrss would carry the parent's peak)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
import numpy as np, onnxruntime as ort
base = hwm_kib()
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[3])
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((int(sys.argv[2]), *s.get_inputs()[0].shape[1:])).astype(np.float32)
for _ in range(3):
    s.run(None, {s.get_inputs()[0].name: x})
print(json.dumps({"import_kib": base, "peak_kib": hwm_kib()}))
"""


def heldout_points(n: int, seed: int, design: set) -> list:
    rng = random.Random(seed)
    points, seen = [], set(design)
    while len(points) < n:
        key = (rng.randint(1, SPACE.max_depth), rng.choice(SPACE.widths()), rng.randint(1, 8))
        if key not in seen:
            seen.add(key)
            points.append((SPACE.spec(key[0], key[1]), key[2]))
    return sorted(points, key=lambda p: (p[0].depth, p[0].embed_dim, p[1]))


def fit_and_write(profile, samples, detail, args, space, path: Path):
    """Fit the profile's latency model on the design ``samples`` (ONNX Runtime, the profile's precision, this
    run's threads and clock) and write the calibration file to ``path``."""
    data = calibration_data(
        profile,
        samples,
        runtime="onnxruntime",
        detail=detail,
        threads=args.threads,
        clock=args.clock,
        space=space,
    )
    return write_calibration(data, path)


def summary(errors: list[float]) -> str:
    errors = [abs(e) for e in errors]
    within = sum(e <= 0.10 for e in errors) / len(errors)
    return f"MAPE {100 * statistics.fmean(errors):5.2f}%  within +-10%: {100 * within:5.1f}%  max {100 * max(errors):5.1f}%"


def memory_check(profile, threads: int) -> list[str]:
    """Predicted runtime memory vs measured peak RSS, on specs other than those that set RUNTIME_FACTORS.

    The fixed overhead here is measured too (the smallest model's peak RSS minus its predicted weights and
    activations), and predictions are shown with the profile's runtime_overhead_mib and with that measurement.
    """
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.exporters.onnx import export_onnx

    def peak_rss_mib(spec, batch, tmp):
        path = Path(tmp) / f"{spec.name}.onnx"
        if not path.exists():
            torch.manual_seed(0)
            export_onnx(VisionTransformer(**spec.timm_kwargs()).eval(), spec, path, batch_max=8)
        cmd = [sys.executable, "-c", RSS_PROBE, str(path), str(batch), str(threads)]
        rss = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        return rss["peak_kib"] / 1024, rss["import_kib"] / 1024

    with tempfile.TemporaryDirectory() as tmp:
        smallest = SPACE.spec(1, 32)
        peak, base = peak_rss_mib(smallest, 1, tmp)
        m = predict_memory(smallest, profile, 1)
        overhead_here = peak - (m.total_mib - m.runtime_overhead_mib)
        lines = [
            (
                f"fixed overhead measured here: {overhead_here:.1f} MiB (python + numpy + onnxruntime import "
                f"{base:.1f} MiB, the rest the session); profile runtime_overhead_mib: {m.runtime_overhead_mib:g}"
            ),
            "spec                     batch  pred MiB  RSS MiB  RSS/pred  pred(measured overhead)  RSS/pred",
        ]
        for depth, width in ((3, 96), (8, 256), (10, 320)):
            spec = SPACE.spec(depth, width)
            for batch in (1, 4, 8):
                peak, _ = peak_rss_mib(spec, batch, tmp)
                m = predict_memory(spec, profile, batch)
                here = m.total_mib - m.runtime_overhead_mib + overhead_here
                lines.append(
                    f"{spec.name:25s}{batch:5d}  {m.total_mib:8.1f}  {peak:7.1f}  {peak / m.total_mib:8.2f}"
                    f"  {here:23.1f}  {peak / here:8.2f}"
                )
    return lines


def print_memory_check(profile, threads: int) -> None:
    print("\nmemory: predicted runtime memory vs peak RSS of a fresh ONNX Runtime process")
    for line in memory_check(profile, threads):
        print("  " + line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="x86-cpu")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (pinned)")
    ap.add_argument("--clock", choices=["wall", "thread"], default="thread")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--out-dir", default="artifacts/benchmarks/latency_model")
    ap.add_argument("--quick", action="store_true", help="small calibration design: a dry run of this script")
    ap.add_argument("--memory-only", action="store_true", help="only step 3, the memory check (about 15 s)")
    args = ap.parse_args()

    profile = load_profile(args.profile)
    # The analytic model is judged at the thread count actually used here.
    runtime = profile.runtime.model_copy(update={"intra_op_threads": args.threads})
    profile = profile.model_copy(update={"runtime": runtime})
    out_dir = Path(args.out_dir)
    started = time.time()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {' '.join(sys.argv)}")
    if args.memory_only:
        print_memory_check(profile, args.threads)
        print(f"\ntook {time.time() - started:.0f} s")
        return
    design = design_samples(SPACE, profile.runtime.batch_max, quick=args.quick)
    points = heldout_points(args.heldout, args.seed, {(s.depth, s.embed_dim, b) for s, b in design})
    load_before = os.getloadavg()[0]
    samples, detail = measure(
        design + points, threads=args.threads, clock=args.clock, passes=args.passes, seed=args.seed
    )
    cal = fit_and_write(
        profile, samples[: len(design)], detail, args, SPACE, out_dir / f"{profile.name}.calibration.json"
    )
    measured = samples[len(design) :]
    info = cal.data
    print(
        f"measured {len(design)} design + {len(points)} held-out points with {detail}, {args.threads} thread(s),"
        f" clock {args.clock}, {args.passes} passes, on {info['machine']['cpu']}"
        f" (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})"
    )
    print(
        f"calibration fit on the design points: MAPE {info['fit']['mape_pct']:.2f}%, within +-10% "
        f"{100 * info['fit']['within_10pct']:.1f}%, cache {info['model']['cache_mb']:.2f} MB"
    )
    coefficients = info["model"]["coefficients_ms"]
    print("  coefficients (ms per unit): " + ", ".join(f"{k}={coefficients[k]:.4g}" for k in FEATURES))
    factors = info["model"]["percentile_factors"]
    print("  percentile factors: " + ", ".join(f"{k}={v:.3f}" for k, v in factors.items()))

    wall, _ = measure(points, threads=args.threads, clock="wall", passes=1, seed=args.seed + 1)
    print(f"\nheld-out: {len(points)} specs not in the design")
    print(" depth  dim  batch  measured ms  calibrated ms   err   analytic ms    err   wall ms")
    cal_err, ana_err, wall_err, rows = [], [], [], []
    for (spec, batch), m, w in zip(points, measured, wall):
        c = predict(spec, profile, batch, calibration=cal).latency_ms
        a = predict(spec, profile, batch).latency_ms
        cal_err.append((c - m["p50_ms"]) / m["p50_ms"])
        ana_err.append((a - m["p50_ms"]) / m["p50_ms"])
        wall_err.append((c - w["p50_ms"]) / w["p50_ms"])
        rows.append(
            {
                "depth": spec.depth,
                "embed_dim": spec.embed_dim,
                "batch": batch,
                "measured_ms": m["p50_ms"],
                "calibrated_ms": c,
                "analytic_ms": a,
                "wall_ms": w["p50_ms"],
            }
        )
        print(
            f"{spec.depth:6d} {spec.embed_dim:4d} {batch:6d} {m['p50_ms']:12.3f} {c:14.3f} {100 * cal_err[-1]:+6.1f}%"
            f" {a:12.3f} {100 * ana_err[-1]:+7.1f}% {w['p50_ms']:9.3f}"
        )
    print(f"\ncalibrated vs measured ({args.clock} clock): {summary(cal_err)}")
    print(f"analytic   vs measured ({args.clock} clock): {summary(ana_err)}")
    print(f"calibrated vs one wall-clock pass:        {summary(wall_err)}")
    ratio = statistics.median(w["p50_ms"] / m["p50_ms"] for m, w in zip(measured, wall))
    print(
        f"median wall / {args.clock} time over held-out specs: {ratio:.3f} (load average {os.getloadavg()[0]:.1f})"
    )

    print_memory_check(profile, args.threads)
    print(f"\ntook {time.time() - started:.0f} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "heldout.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
