"""How well do the latency and memory models predict ONNX Runtime on this machine?

1. Draw held-out specs (depth 1-12, any width of the default search space, batch 1-8) that are not points of
   the calibration design (``wave_deploy.planning.calibrate.design_samples``).
2. Measure the design and the held-out points together (``wave_deploy.planning.calibrate.measure``: shuffled passes,
   so both see the same machine conditions), calibrate the profile (default x86-cpu) from the design points
   only, and compare the held-out measurements with the calibrated and the analytic predictions: mean
   absolute percentage error (MAPE) and the share within +-10%. One more wall-clock pass over the held-out
   points shows how a plain wall-clock measurement compares.
3. Memory: predicted runtime memory vs the peak RSS of a fresh process that creates an ONNX Runtime session
   and runs it (VmHWM from /proc: on Linux ru_maxrss of an exec'd child still holds the parent's peak).

4. ``--img-size 224 --patch-size 16``: real shapes. 224 px RGB ViTs from DeiT-Tiny to DeiT-Small size: a
   grid (depths 4, 6, 8, 10, 12 x widths 128, 192, 256, 320, 384, plus depths 1 and 2 at widths 128, 256, 384)
   calibrates the profile; at least 30 held-out specs (depth 4-12, width a multiple of 32 in 128-384, not grid
   points; separate models timed in the same shuffled passes) check it: MAPE, share within +-10%, worst case.
   To keep it affordable on a small machine, each width is exported once at depth 12 (export_onnx, as
   deployment exports) and cut to the other depths (``truncate_depth``: the same ops in the same order and the
   same weight shapes as a fresh export of that depth; checked on one cut against a real export).
   The measurements are saved (``--save-samples``); ``--samples FILE`` refits and checks from a saved run
   without timing again (the fit is cheap, the timing is not: about 20 CPU-minutes at 224 px).

Usage (results land in docs/latency.md):
    python benchmarks/latency_model.py --threads 1 --clock thread --heldout 40
    python benchmarks/latency_model.py --memory-only      # step 3 alone
    python benchmarks/latency_model.py --img-size 224 --patch-size 16 --threads 1 --clock thread
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

from wave_deploy.planning.calibrate import calibration_data, design_samples, measure, write_calibration
from wave_deploy.planning.latency import FEATURES, predict
from wave_deploy.planning.memory import predict_memory
from wave_deploy.planning.selection import DEFAULT_SEARCH_SPACE as SPACE
from wave_deploy.planning.selection import SearchSpace
from wave_deploy.profiles import load_profile

REAL_WIDTHS = (128, 192, 256, 320, 384)  # DeiT-Tiny (192) to DeiT-Small (384) and either side
REAL_DEPTHS = (4, 6, 8, 10, 12)

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


def truncate_depth(src, dst, depth: int) -> None:
    """Write ``src`` (a ViT exported by export_onnx) cut to its first ``depth`` blocks: the residual stream after
    block ``depth`` feeds the final norm, and every node and weight no longer reachable is dropped. The graph
    left is block for block the one export_onnx writes for that depth (checked by ``same_structure``)."""
    import onnx

    model = onnx.load(str(src))
    g = model.graph
    consumers = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pos_add = next(n for n in g.node if n.op_type == "Add" and "pos_embed" in n.input)
    stream = pos_add.output[0]
    for _ in range(2 * depth):  # two residual adds per block: attention, MLP
        nxt = [n for n in consumers[stream] if n.op_type == "Add" and n.input[0] == stream]
        if len(nxt) != 1:
            raise ValueError(f"cannot follow the residual stream past {stream}")
        stream = nxt[0].output[0]
    final_norm = [n for n in g.node if n.op_type == "LayerNormalization"][-1]
    final_norm.input[0] = stream
    needed, keep = {o.name for o in g.output}, []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del g.node[:]
    g.node.extend(reversed(keep))
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    vis = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(vis)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))


def structure(path) -> tuple:
    """Op types in order and weight shapes: what decides how ONNX Runtime runs a graph."""
    import onnx

    g = onnx.load(str(path)).graph
    return (
        [n.op_type for n in g.node],
        sorted(tuple(i.dims) for i in g.initializer),
    )


def real_shape_files(space, keys: list[tuple[int, int]], tmp: Path) -> dict:
    """ONNX files of every (depth, width) in ``keys``: one depth-12 export per width (export_onnx, as
    deployment exports), cut to each depth by ``truncate_depth``; one cut is checked against a real export."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.exporters.onnx import export_onnx

    def export(spec) -> Path:
        torch.manual_seed(0)
        path = tmp / f"{spec.name}.export.onnx"
        export_onnx(VisionTransformer(**spec.timm_kwargs()).eval(), spec, path, batch_max=2)
        return path

    deep = {w: export(space.spec(12, w)) for w in sorted({w for _, w in keys})}
    files = {}
    for d, w in keys:
        spec = space.spec(d, w)
        files[spec] = deep[w] if d == 12 else tmp / f"{spec.name}.onnx"
        if d != 12:
            truncate_depth(deep[w], files[spec], d)
    probe = space.spec(4, 192)
    cut = tmp / "probe.cut.onnx"
    truncate_depth(deep[192], cut, 4)
    if structure(cut) != structure(export(probe)):
        raise SystemExit("a depth-4 cut of the depth-12 export differs from a depth-4 export")
    return files


def real_shape_points(n: int, seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(depth, width) of the real-shape grid and of ``n`` held-out specs drawn off the grid."""
    grid = [(d, w) for d in (1, 2, *REAL_DEPTHS) for w in REAL_WIDTHS if d >= 4 or w in (128, 256, 384)]
    rng, held = random.Random(seed), []
    while len(held) < n:
        key = (rng.randint(4, 12), rng.choice(range(128, 385, 32)))
        if key not in grid and key not in held:
            held.append(key)
    return grid, held


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


def real_shapes(args, profile) -> None:
    """Step 4: calibrate on the real-shape grid, check on held-out specs, print MAPE / within 10% / worst."""
    space = SearchSpace(
        img_size=args.img_size,
        patch_size=args.patch_size,
        in_chans=args.in_chans,
        num_classes=1000,
        mlp_ratio=4.0,
        w=32,
        head_dim=32,  # the shipped bank's head size: DeiT-Tiny's width 192 runs as 6 heads of 32
        max_depth=12,
        max_embed_dim=384,
    )
    grid, held = real_shape_points(args.heldout, args.seed)
    points = [(space.spec(d, w), 1) for d, w in grid + held]
    if args.samples:
        saved = json.loads(Path(args.samples).read_text())
        if [tuple(p) for p in saved["grid"]] != grid or [tuple(p) for p in saved["held"]] != held:
            raise SystemExit(
                f"{args.samples} holds other points than --heldout {args.heldout} --seed {args.seed}"
            )
        samples, detail = saved["samples"], saved["detail"]
        print(
            f"refit from {args.samples} (measured {saved.get('measured', '?')}, {saved.get('settings', '')})"
        )
    else:
        load_before = os.getloadavg()[0]
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="latency-model-") as tmp:
            files = real_shape_files(space, grid + held, Path(tmp))
            print(f"exported and cut {len(files)} models in {time.time() - started:.0f} s")
            samples, detail = measure(
                points,
                threads=args.threads,
                clock=args.clock,
                passes=args.passes,
                seed=7,
                quick=args.short_timing,
                onnx_files=files,
            )
        timing = (
            "3 warm-up + 10 timed runs" if args.short_timing else "10 warm-up + >= 30 timed runs, >= 0.3 s"
        )
        settings = f"{args.threads} thread(s), clock {args.clock}, {args.passes} passes of {timing} per point"
        print(
            f"measured {len(grid)} grid + {len(held)} held-out specs with {detail}, {settings} in"
            f" {time.time() - started:.0f} s (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})"
        )
        Path(args.save_samples).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save_samples).write_text(
            json.dumps(
                {
                    "grid": grid,
                    "held": held,
                    "samples": samples,
                    "detail": detail,
                    "settings": settings,
                    "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                },
                indent=1,
            )
        )
    if [(s["depth"], s["embed_dim"]) for s in samples] != grid + held:
        raise SystemExit("the samples are not in the order of the points")
    out = Path(args.out_dir) / f"{profile.name}.{args.img_size}px.calibration.json"
    cal = fit_and_write(profile, samples[: len(grid)], detail, args, space, out)
    info = cal.data
    print(
        f"geometry {args.img_size} px, patch {args.patch_size}, {args.in_chans} channels; fit on {len(grid)} grid"
        f" points: MAPE {info['fit']['mape_pct']:.2f}%, max {info['fit']['max_abs_pct']:.1f}%"
    )
    coefficients = info["model"]["coefficients_ms"]
    print("  coefficients (ms per unit): " + ", ".join(f"{k}={coefficients[k]:.4g}" for k in FEATURES))
    print(f"\nheld-out: {len(held)} specs off the grid, batch 1")
    print(" depth  dim  measured ms  calibrated ms    err   analytic ms     err")
    cal_err, ana_err = [], []
    for (spec, batch), m in zip(points[len(grid) :], samples[len(grid) :]):
        c = predict(spec, profile, batch, calibration=cal)
        a = predict(spec, profile, batch).latency_ms
        if c.notes:
            raise SystemExit(f"held-out {spec.name} is outside the calibrated range: {c.notes}")
        cal_err.append((c.latency_ms - m["p50_ms"]) / m["p50_ms"])
        ana_err.append((a - m["p50_ms"]) / m["p50_ms"])
        print(
            f"{spec.depth:6d} {spec.embed_dim:4d} {m['p50_ms']:12.2f} {c.latency_ms:14.2f} {100 * cal_err[-1]:+6.1f}%"
            f" {a:12.2f} {100 * ana_err[-1]:+7.1f}%"
        )
    worst = max(range(len(cal_err)), key=lambda i: abs(cal_err[i]))
    print(f"\ncalibrated vs measured ({args.clock} clock): {summary(cal_err)}")
    print(f"  worst: depth {held[worst][0]} x width {held[worst][1]}, {100 * cal_err[worst]:+.1f}%")
    print(f"analytic   vs measured ({args.clock} clock): {summary(ana_err)}")
    ok = statistics.fmean(abs(e) for e in cal_err) <= 0.05 and sum(
        abs(e) <= 0.10 for e in cal_err
    ) >= 0.95 * len(cal_err)
    print(
        f"target (MAPE <= 5%, >= 95% within +-10%, >= 30 specs): {'met' if ok and len(held) >= 30 else 'MISSED'}"
    )


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
    ap.add_argument("--img-size", type=int, default=None, help="step 4: real shapes at this image size")
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--in-chans", type=int, default=3)
    ap.add_argument(
        "--short-timing", action="store_true", help="step 4: 3 warm-up + 10 timed runs per point and pass"
    )
    ap.add_argument("--samples", default=None, help="step 4: refit from measurements saved by an earlier run")
    ap.add_argument("--save-samples", default="artifacts/benchmarks/latency_model/samples_real.json")
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
    if args.img_size:
        if args.img_size % args.patch_size:
            raise SystemExit(
                f"--img-size {args.img_size} is not a multiple of --patch-size {args.patch_size}"
            )
        if args.heldout < 30:
            raise SystemExit("--img-size mode checks at least 30 held-out specs (--heldout)")
        real_shapes(args, profile)
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
