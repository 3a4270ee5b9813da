"""What does WAVE cost per step? Expansion time and scaler-phase training vs dense training, side by side.

One run, on one machine, measures (interleaved: the methods alternate inside every round, and the order flips
every round, so slow drift and neighbours' load hit both alike; medians over all rounds):

1. expansion of every weight of the model (``WaveViT.expanded_state_dict``): under ``torch.no_grad`` (what
   folding does), with autograd recording (what a training forward does), and with autograd plus the backward
   pass through the expansion (given fixed upstream gradients for every dense weight);
2. one training step (forward + cross-entropy + backward + AdamW step) on a fixed random batch for
   - the scaler phase: ``WaveViT``, templates frozen buffers, only the weight scalers trainable;
   - dense: timm ``VisionTransformer`` of the same spec, every parameter trainable;
   timed per phase (forward, backward, optimizer), reported as images/s and the ratio scaler/dense.

Before timing, the WaveViT is folded into a plain timm VisionTransformer and both forwards are compared, which
shows that the two timed models are the same architecture.

Usage (results land in docs/benchmarks.md, section "WAVE costs"):
    python benchmarks/wave_costs.py --quick --threads 1      # img 32, patch 4, D192, L6: under a minute
    python benchmarks/wave_costs.py --batch 4 --threads 1    # DeiT-S-sized: img 224, patch 16, D384, L12

On a machine whose cores other jobs share, one thread per process gives far steadier (and faster) timings than
one thread per core: intra-op threads wait for each other at every barrier while a neighbour holds a core.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import fold, load_folded
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.model import WaveViT

# name -> (img_size, patch_size, depth, embed_dim, num_heads, num_classes, batch, rounds, steps per round)
PRESETS = {
    "deit-s": (224, 16, 12, 384, 6, 1000, 8, 10, 1),
    "quick": (32, 4, 6, 192, 3, 10, 16, 12, 1),
}
PRESET_FIELDS = (
    "img_size",
    "patch_size",
    "depth",
    "embed_dim",
    "heads",
    "num_classes",
    "batch",
    "rounds",
    "steps",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small config: img 32, patch 4, D192, L6, 10 classes")
    p.add_argument("--img-size", type=int, help="default 224 (quick: 32)")
    p.add_argument("--patch-size", type=int, help="default 16 (quick: 4)")
    p.add_argument("--depth", type=int, help="default 12 (quick: 6)")
    p.add_argument("--embed-dim", type=int, help="default 384 (quick: 192)")
    p.add_argument("--heads", type=int, help="default 6 (quick: 3)")
    p.add_argument("--num-classes", type=int, help="default 1000 (quick: 10)")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--mlp-ratio", type=float, default=4.0)
    p.add_argument("--w", type=int, default=64, help="template size")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--n-matrix", type=int, default=16, help="templates per matrix kind")
    p.add_argument("--n-vector", type=int, default=4, help="templates per vector kind")
    p.add_argument("--batch", type=int, help="training batch size (default 8; quick: 16)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 10; quick: 12)")
    p.add_argument("--steps", type=int, help="timed steps per method per round (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per method before the rounds")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "deit-s"]
    for name, value in zip(PRESET_FIELDS, preset):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import timm

    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
    }


def timed_step(model, optimizer, x, y) -> tuple[float, float, float]:
    """One training step; seconds spent in forward (incl. loss), backward and the optimizer step."""
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def iqr(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    geom = BankGeometry.create(
        n_matrix=args.n_matrix,
        n_vector=args.n_vector,
        img_size=args.img_size,
        patch_size=args.patch_size,
        in_chans=args.in_chans,
        num_classes=args.num_classes,
        w=args.w,
        head_dim=args.head_dim,
        mlp_ratio=args.mlp_ratio,
        max_depth=args.depth,
        max_embed_dim=args.embed_dim,
    )
    spec = geom.make_spec(args.depth, args.embed_dim, args.heads)
    bank = TemplateBank.init_random(geom, seed=args.seed)
    wave = WaveViT(bank, spec, seed=args.seed).train()
    dense = random_init(spec, seed=args.seed).train()
    wave_params = [p for p in wave.parameters() if p.requires_grad]
    dense_params = [p for p in dense.parameters() if p.requires_grad]
    opt = {
        "scaler": torch.optim.AdamW(wave_params, lr=1e-4),
        "dense": torch.optim.AdamW(dense_params, lr=1e-4),
    }
    models = {"scaler": wave, "dense": dense}
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.in_chans, args.img_size, args.img_size, generator=gen)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=gen)

    info = machine()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  python {' '.join(sys.argv)}")
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), "
          f"torch threads {info['torch_threads']}, torch {info['torch']}, timm {info['timm']}, "
          f"python {info['python']}, load avg {info['load_avg_1m']:.2f}")  # fmt: skip
    n_templates = sum(t.numel() for t in wave.templates.buffers())
    dense_numel = sum(p.numel() for p in dense_params)
    print(f"spec: {spec.name} (depth {spec.depth}, embed_dim {spec.embed_dim}, heads {spec.num_heads}, "
          f"classes {spec.num_classes}); bank w={geom.w}, {args.n_matrix} matrix / {args.n_vector} vector "
          f"templates per kind ({n_templates:,} template numbers, frozen)")  # fmt: skip
    print(f"trainable: scaler phase {sum(p.numel() for p in wave_params):,} scalers; "
          f"dense {dense_numel:,} parameters; batch {args.batch}, {args.rounds} rounds x {args.steps} steps")  # fmt: skip

    # Same architecture: the folded WaveViT is a plain timm VisionTransformer computing the same logits.
    with torch.no_grad():
        wave.eval()
        folded = load_folded(*fold(wave))
        err = (wave(x[:2]) - folded(x[:2])).abs().max().item()
        wave.train()
    print(f"check: folded WaveViT vs WaveViT forward, max abs error {err:.2e}")
    del folded

    # Fixed upstream gradients for the expansion's backward (one per dense weight).
    with torch.no_grad():
        upstream = {k: torch.randn(v.shape, generator=gen) for k, v in wave.expanded_state_dict().items()}

    def expand_no_grad() -> None:
        with torch.no_grad():
            wave.expanded_state_dict()

    def expand_grad() -> None:
        wave.expanded_state_dict()

    def expand_fwd_bwd() -> None:
        sd = wave.expanded_state_dict()
        keys = list(sd)
        torch.autograd.backward([sd[k] for k in keys], [upstream[k] for k in keys])
        for p in wave_params:
            p.grad = None

    expansions = {
        "expand, no_grad": expand_no_grad,
        "expand, grad": expand_grad,
        "expand fwd+bwd": expand_fwd_bwd,
    }
    exp_times: dict[str, list[float]] = {k: [] for k in expansions}
    step_times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in models}
    pair_ratios: list[float] = []

    for fn in expansions.values():
        fn()
    for name, model in models.items():
        for _ in range(args.warmup):
            timed_step(model, opt[name], x, y)

    t_start = time.perf_counter()
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            for _ in range(args.steps):
                step_times[name].append(timed_step(models[name], opt[name], x, y))
        round_total = {n: sum(map(sum, step_times[n][-args.steps :])) for n in models}
        pair_ratios.append(round_total["scaler"] / round_total["dense"])
        exp_order = list(expansions) if r % 2 == 0 else list(reversed(expansions))
        for name in exp_order:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                expansions[name]()
                exp_times[name].append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start

    print(f"\nexpansion of every weight ({len(upstream)} tensors, {sum(u.numel() for u in upstream.values()):,} "
          f"numbers), {len(next(iter(exp_times.values())))} timings each")  # fmt: skip
    print("| expansion | median ms | IQR ms |")
    print("| --- | ---: | ---: |")
    for name, ts in exp_times.items():
        lo, hi = iqr(ts)
        print(f"| {name} | {1e3 * median(ts):.1f} | {1e3 * lo:.1f}-{1e3 * hi:.1f} |")

    print(
        f"\ntraining step, batch {args.batch} at {args.img_size} px ({len(step_times['dense'])} timed steps each)"
    )
    print(
        "| method | trainable | step ms (median) | IQR ms | img/s | forward ms | backward ms | optimizer ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    med = {}
    for name in models:
        totals = [sum(t) for t in step_times[name]]
        med[name] = median(totals)
        lo, hi = iqr(totals)
        fwd, bwd, optim = (median([t[i] for t in step_times[name]]) for i in range(3))
        n_train = sum(p.numel() for p in (wave_params if name == "scaler" else dense_params))
        print(f"| {name} | {n_train:,} | {1e3 * med[name]:.1f} | {1e3 * lo:.1f}-{1e3 * hi:.1f} | "
              f"{args.batch / med[name]:.2f} | {1e3 * fwd:.1f} | {1e3 * bwd:.1f} | {1e3 * optim:.2f} |")  # fmt: skip
    ratio = med["scaler"] / med["dense"]
    lo, hi = min(pair_ratios), max(pair_ratios)
    paired = median(pair_ratios)
    verdict = {True: "met", False: "NOT met"}
    print(f"\nratio scaler/dense step time: {ratio:.3f} (ratio of medians), {paired:.3f} (median of per-round "
          f"paired ratios, range {lo:.3f}-{hi:.3f}); target <= 1.5: {verdict[ratio <= 1.5]} by the ratio of "
          f"medians, {verdict[paired <= 1.5]} by the paired ratio")  # fmt: skip
    print(f"timed section {wall:.1f} s, load avg now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
