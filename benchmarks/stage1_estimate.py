"""How close stage 1's time estimate comes to the run it estimates: ``templates build`` on synthetic data, its
estimate's seconds per step against the run's measured ``train_time_s / steps``.

    python benchmarks/stage1_estimate.py                             # 28 px grey, 20 steps: about a minute
    python benchmarks/stage1_estimate.py --img-size 224 --in-chans 3 --patch-size 16 --steps 10

Builds an ImageFolder of random images (``--classes`` x ``--per-class``) and a random folded teacher checkpoint
(depth 2, width 64, the data's geometry) in a temporary directory, runs ``wave-deploy templates build ... --json``
once in a fresh process (``--allow-weak-teacher``: an untrained teacher), and prints a JSON object with the
estimate, the run's steps and training time, and their ratio. ``train_time_s`` is the loop's time in training
steps, while the estimate's ``seconds_per_step`` is the mean of its few timed steps at the mean-cost elastic
sub-size, so the ratio moves with the load of a shared machine and with how far the sampled sub-sizes' mean
is from that one. Timing is printed, never asserted (tests check only the estimate's accounting:
tests/test_stage1_estimate.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import save_folded


def make_inputs(root: Path, args) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    data = root / "data"
    shape = (args.img_size, args.img_size) + ((3,) if args.in_chans == 3 else ())
    for c in range(args.classes):
        (data / f"c{c}").mkdir(parents=True)
        for i in range(args.per_class):
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(data / f"c{c}" / f"{i}.png")
    spec = ViTSpec(depth=2, embed_dim=64, num_heads=2, patch_size=args.patch_size, img_size=args.img_size,
                   in_chans=args.in_chans, num_classes=args.classes)  # fmt: skip
    teacher = root / "teacher.safetensors"
    save_folded(teacher, random_init(spec, seed=1).state_dict(), spec, {})
    return data, teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--in-chans", type=int, default=1, choices=(1, 3))
    parser.add_argument("--patch-size", type=int, default=7)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--aux-depth", type=int, default=2)
    parser.add_argument("--aux-embed-dim", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, teacher = make_inputs(Path(tmp), args)
        cmd = [sys.executable, "-m", "wave_deploy.cli.main", "templates", "build", "--teacher-checkpoint",
               str(teacher), "--data", str(data), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--aux-depth", str(args.aux_depth), "--aux-embed-dim", str(args.aux_embed_dim),
               "--device", args.device, "--allow-weak-teacher", "--out", str(Path(tmp) / "bank.safetensors"),
               "--json"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"templates build failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        summary = json.loads(proc.stdout)
    est, steps, train_s = summary["estimate"], summary["steps"], summary["train_time_s"]
    measured = train_s / steps
    out = {
        "command": " ".join(sys.argv),
        "estimate": {k: est[k] for k in ("seconds_per_step", "steps", "device", "peak_memory_mib", "memory")},
        "run": {"steps": steps, "train_time_s": train_s, "seconds_per_step": round(measured, 4)},
        "ratio_estimate_to_measured": round(est["seconds_per_step"] / measured, 3),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
