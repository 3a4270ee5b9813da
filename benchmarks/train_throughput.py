"""Training throughput at 224 px (DeiT-Tiny shape): images/s of stage 2 and of a templates-build step,
before and after the speed changes, side by side in one run (the machine is shared: only ratios from one
run mean anything).

    python benchmarks/train_throughput.py [--batch 8] [--steps 3] [--threads N]

Configurations, each timed as the median of ``--steps`` optimizer steps after one warm-up step:
- scaler phase, before: student WaveViT distilled from the bank's auxiliary WaveViT, which re-expands its
  frozen weights at every forward; AdamW (torch's default implementation).
- scaler phase, after: the same student, the teacher folded once into a plain timm model
  (``wave.init.frozen_teacher``); fused AdamW (``training.run.make_optimizer``).
- dense phase, before / after: timm VisionTransformer, AdamW default / fused.
- templates build step, before / after: the auxiliary WaveViT with trainable templates and scalers,
  AdamW default / fused.
- bf16 autocast variants of the dense step, for information: only useful where the CPU has native bf16
  (avx512_bf16 / AMX); the flags found are printed.
Prints a JSON object and a markdown table of images/s and after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return []
    return sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in text})


def _time_steps(step, steps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from wave_deploy.training.folding import fold, load_folded
    from wave_deploy.training.run import make_optimizer
    from wave_deploy.wave.bank import TemplateBank
    from wave_deploy.wave.geometry import BankGeometry
    from wave_deploy.wave.init import Distiller, aux_model, frozen_teacher
    from wave_deploy.wave.model import WaveViT

    geom = BankGeometry.create(img_size=224, patch_size=16, in_chans=3, num_classes=10, w=64, head_dim=64,
                               mlp_ratio=4.0, max_depth=12, max_embed_dim=192)  # fmt: skip
    spec = geom.make_spec(12, 192)  # DeiT-Tiny: depth 12, width 192, 3 heads, patch 16, 224 px
    bank = WaveViT(TemplateBank.init_random(geom), spec, seed=1).export_bank({"benchmark": True})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 224, 224, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)

    def stepper(model, loss, params, optimizer, bf16=False):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                value = loss(model)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()

        return step

    def default_adamw(params):
        return torch.optim.AdamW(params, lr=1e-4)

    def fast_adamw(params):
        return make_optimizer(params, lr=1e-4, weight_decay=0.05, device=torch.device("cpu"))

    results = {}
    # stage 2, scaler phase
    for name, teacher, opt in (
        ("scaler phase", aux_model(bank), default_adamw),
        ("scaler phase", frozen_teacher(bank), fast_adamw),
    ):
        student = WaveViT(bank, spec, seed=2)
        runner = Distiller(student, teacher)
        params = list(student.parameters())
        sec = _time_steps(stepper(runner, lambda m: m(x, y), params, opt(params)), args.steps)
        results.setdefault(name, []).append(args.batch / sec)
    # stage 2, dense phase
    for opt in (default_adamw, fast_adamw):
        model = load_folded(*fold(WaveViT(bank, spec, seed=2)))
        params = list(model.parameters())
        step = stepper(model, lambda m: F.cross_entropy(m(x), y), params, opt(params))
        results.setdefault("dense phase", []).append(args.batch / _time_steps(step, args.steps))
    # templates build: the auxiliary model with trainable templates and scalers
    for opt in (default_adamw, fast_adamw):
        aux = WaveViT(bank, spec, seed=2, train_templates=True)
        params = list(aux.parameters())
        step = stepper(aux, lambda m: F.cross_entropy(m(x), y), params, opt(params))
        results.setdefault("templates build step", []).append(args.batch / _time_steps(step, args.steps))
    # bf16 autocast (information only)
    model = load_folded(*fold(WaveViT(bank, spec, seed=2)))
    params = list(model.parameters())
    step = stepper(model, lambda m: F.cross_entropy(m(x), y), params, fast_adamw(params), bf16=True)
    bf16 = args.batch / _time_steps(step, args.steps)

    out = {
        "shape": spec.name,
        "batch": args.batch,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "cpu_flags": _cpu_flags(),
        "images_per_s": {
            k: {"before": round(v[0], 2), "after": round(v[1], 2), "ratio": round(v[1] / v[0], 2)}
            for k, v in results.items()
        },
        "dense_phase_bf16_autocast_images_per_s": round(bf16, 2),
        "dense_phase_bf16_over_fp32": round(bf16 / results["dense phase"][1], 2),
    }
    print(json.dumps(out, indent=2))
    print("\n| phase | before img/s | after img/s | after / before |\n|---|---:|---:|---:|")
    for k, v in out["images_per_s"].items():
        print(f"| {k} | {v['before']} | {v['after']} | {v['ratio']}x |")


if __name__ == "__main__":
    main()
