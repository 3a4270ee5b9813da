"""Calibration on the device, proven on this machine: the x86 kit's fit and `calibrate`'s fit, side by side.

In one run, at 224 px (patch 16, RGB, 64-wide heads: DeiT's geometry):

1. make an x86-cpu bundle (``export_for_profile``, as a build does) of a random DeiT-style model (depth 4,
   width 192, 3 heads of 64);
2. run its kit: ``python3 run_on_device.py --calibrate --out SAMPLES`` in the bundle (a subprocess that
   imports neither wave-deploy nor torch), then ``wave-deploy calibrate --profile x86-cpu --from-device
   SAMPLES``;
3. run ``wave-deploy calibrate`` the usual way at the same geometry (``--img-size 224 --patch-size 16
   --in-chans 3 --head-dim 64 --max-depth 12 --max-embed-dim 384``);
4. measure the held-out shapes: every DeiT-style shape of depth 4-12 and width 128-384 (steps of 64) that
   is not a design point (depths 5, 6, 7, 9, 10, 11: 30 shapes, batch 1), timed the way calibrate times
   (``calibrate.measure``: 3 shuffled passes, best pass kept);
5. print each held-out shape's measurement and both fits' predictions, each fit's MAPE, share within +-10%
   and worst case, how far the two fits' predictions are apart, and how far the kit's and calibrate's own
   measurements of the same design points are apart (the noise between two runs).

All timing uses one thread and the thread clock (``--threads 1 --clock thread``: the calling thread's CPU
time, robust to the other processes of a shared machine). Results go to docs/latency.md.

    python benchmarks/kit_calibration.py               # about 20 minutes on this project's 2-core machine
    python benchmarks/kit_calibration.py --quick       # the quick designs and one pass: a dry run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wave_deploy.calibration.calibrate import measure
from wave_deploy.planning.latency import load_calibration
from wave_deploy.profiles import load_profile
from wave_deploy.spec import ViTSpec

GEOMETRY = {"img_size": 224, "patch_size": 16, "in_chans": 3, "num_classes": 10, "mlp_ratio": 4.0}
HEAD = 64
BUNDLE_SPEC = ViTSpec(depth=4, embed_dim=192, num_heads=3, **GEOMETRY)
HELD_DEPTHS = (5, 6, 7, 9, 10, 11)  # design depths are 1, 2, 4, 8, 12
HELD_WIDTHS = (128, 192, 256, 320, 384)
THREADS = ["--threads", "1", "--clock", "thread"]


def make_bundle(out: Path) -> Path:
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.exporters import export_for_profile

    torch.manual_seed(0)
    model = VisionTransformer(**BUNDLE_SPEC.timm_kwargs()).eval()
    export_for_profile(model, BUNDLE_SPEC, load_profile("x86-cpu"), out)
    return out / "bundle"


def run(cmd: list[str], cwd: Path | None = None) -> float:
    """Run a command, its stderr (estimates, progress) passed through; returns its wall seconds."""
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"exit {proc.returncode}: {proc.stdout}")
    return time.time() - started


def summary(errors: list[float]) -> str:
    a = [abs(e) for e in errors]
    within = sum(e <= 0.10 for e in a) / len(a)
    return (
        f"MAPE {100 * statistics.fmean(a):5.2f}%  within +-10%: {100 * within:5.1f}%  max {100 * max(a):5.1f}%  "
        f"mean signed {100 * statistics.fmean(errors):+5.2f}%"
    )


def design_noise(device: dict, local: dict) -> list[float]:
    """Relative difference of the kit's and calibrate's p50 on every design point both measured."""
    here = {(s["depth"], s["embed_dim"], s["batch"]): s["p50_ms"] for s in local["samples"]}
    return [
        s["p50_ms"] / here[k] - 1
        for s in device["samples"]
        if (k := (s["depth"], s["embed_dim"], s["batch"])) in here
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="quick designs, one pass: a dry run of this script")
    ap.add_argument("--out-dir", default="artifacts/benchmarks/kit_calibration")
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    quick = ["--quick"] * args.quick
    started, load = time.time(), os.getloadavg()[0]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {' '.join(sys.argv)}")
    with tempfile.TemporaryDirectory(prefix="kit-calibration-") as tmp:
        t = time.time()
        bundle = make_bundle(Path(tmp))
        size = (bundle / "calibration.zip").stat().st_size
        print(f"bundle made in {time.time() - t:.0f} s; calibration.zip {size} bytes", flush=True)
        samples = out / "device_samples.json"
        kit_s = run([sys.executable, "run_on_device.py", "--calibrate", *quick, *THREADS, "--out", str(samples)],
                    cwd=bundle)  # fmt: skip
    wd = [str(Path(sys.executable).parent / "wave-deploy"), "calibrate", "--profile", "x86-cpu"]
    run([*wd, "--from-device", str(samples), "--out", str(out / "device.calibration.json")])
    geometry = ["--img-size", "224", "--patch-size", "16", "--in-chans", "3", "--head-dim", str(HEAD)]
    local_s = run([*wd, *geometry, "--max-depth", "12", "--max-embed-dim", "384", *quick, *THREADS,
                   "--out", str(out / "local.calibration.json")])  # fmt: skip
    device, local = (load_calibration(out / f"{k}.calibration.json") for k in ("device", "local"))
    held = [
        ViTSpec(depth=d, embed_dim=w, num_heads=w // HEAD, **GEOMETRY)
        for d in HELD_DEPTHS
        for w in HELD_WIDTHS
    ]
    t = time.time()
    measured, detail = measure([(s, 1) for s in held], threads=1, clock="thread", passes=1 if args.quick else 3,
                               quick=args.quick, seed=11)  # fmt: skip
    held_s = time.time() - t
    profile = load_profile("x86-cpu")
    print(f"\nheld-out: {len(held)} shapes off the design, batch 1, {detail}, 1 thread, thread clock")
    print(" depth  dim  measured ms   kit fit ms    err  calibrate ms    err   fits apart")
    dev_err, loc_err, apart, rows = [], [], [], []
    for spec, m in zip(held, measured):
        d, c = (cal.predict(spec, 1, profile=profile) for cal in (device, local))
        if d.notes or c.notes:
            raise SystemExit(f"{spec.name} is outside a calibrated range: {d.notes} {c.notes}")
        dev_err.append(d.latency_ms / m["p50_ms"] - 1)
        loc_err.append(c.latency_ms / m["p50_ms"] - 1)
        apart.append(d.latency_ms / c.latency_ms - 1)
        rows.append({"depth": spec.depth, "embed_dim": spec.embed_dim, "measured_ms": m["p50_ms"],
                     "kit_fit_ms": d.latency_ms, "calibrate_fit_ms": c.latency_ms})  # fmt: skip
        print(f"{spec.depth:6d} {spec.embed_dim:4d} {m['p50_ms']:12.2f} {d.latency_ms:12.2f} {100 * dev_err[-1]:+6.1f}%"
              f" {c.latency_ms:13.2f} {100 * loc_err[-1]:+6.1f}% {100 * apart[-1]:+9.1f}%")  # fmt: skip
    noise = design_noise(device.data, local.data)
    print(f"\nkit fit (on-device samples) vs measured: {summary(dev_err)}")
    print(f"calibrate fit (local)       vs measured: {summary(loc_err)}")
    print(f"kit fit vs calibrate fit:                {summary(apart)}")
    print(f"the same {len(noise)} design points, kit vs calibrate measurement: {summary(noise)}")
    for name, cal in (("kit", device), ("calibrate", local)):
        fit = cal.data["fit"]
        print(
            f"{name} fit on its {fit['n_samples']} design samples: MAPE {fit['mape_pct']:.2f}%, max {fit['max_abs_pct']:.1f}%"
        )
    ok = statistics.fmean(abs(e) for e in loc_err) <= 0.05 and sum(
        abs(e) <= 0.10 for e in loc_err
    ) >= 0.95 * len(loc_err)
    print(
        f"bar for calibrate's fit (MAPE <= 5%, >= 95% within +-10%, >= 30 shapes): {'met' if ok and len(held) >= 30 else 'MISSED'}"
    )
    print(f"\ntimes: kit --calibrate {kit_s:.0f} s, calibrate {local_s:.0f} s, held-out {held_s:.0f} s; "
          f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; took {time.time() - started:.0f} s")  # fmt: skip
    (out / "heldout.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
