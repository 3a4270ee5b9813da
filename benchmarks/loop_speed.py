"""Images/s of the real training loop (``wave_deploy.training.loop.train``) under its speed options, side by side
in one run: mixed precision, where the training set lives (wave_deploy.training.batches), and torch.compile.

    python benchmarks/loop_speed.py --device cpu                       # the default build's model, 28 px
    python benchmarks/loop_speed.py --device cuda --shape 12x192@224   # DeiT-Tiny shape (scripts/gpu_check.sh)

Every configuration trains the same freshly initialised timm VisionTransformer on the same random images
(``--batches`` x ``--batch`` of them) for ``--steps`` optimizer steps, reporting every ``--every`` steps.
The rate is the median images/s over the report windows after the first: the first window holds the
warm-up and, with torch.compile, the compilation, whose seconds are printed apart. Configurations:
- cpu: fp32, eager / torch.compile.
- cuda: "before" = fp32, batches indexed in pageable host memory and copied synchronously, eager; then
  bf16 autocast; + pinned buffers with asynchronous copies; + the training set kept on the GPU
  (what ``data_placement="auto"`` picks when it fits); + torch.compile.
Prints a JSON object and a markdown table with each configuration's ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

CONFIGS = {
    "cpu": [
        ("fp32, eager", {"amp": "off", "data_placement": "host"}),
        ("fp32, torch.compile", {"amp": "off", "data_placement": "host", "compile": True}),
    ],
    "cuda": [
        ("fp32, pageable copies, eager (before)", {"amp": "off", "data_placement": "pageable"}),
        ("bf16 autocast, pageable copies", {"amp": "bf16", "data_placement": "pageable"}),
        ("bf16, pinned buffers + async copies", {"amp": "bf16", "data_placement": "pinned"}),
        ("bf16, training set on the GPU", {"amp": "bf16", "data_placement": "device"}),
        ("bf16, on the GPU, torch.compile", {"amp": "bf16", "data_placement": "device", "compile": True}),
    ],
}


def parse_shape(text: str) -> tuple[int, int, int]:
    """'DEPTHxWIDTH@IMG' -> (depth, width, img_size)."""
    size, _, img = text.partition("@")
    depth, _, width = size.partition("x")
    return int(depth), int(width), int(img or 28)


def measure(spec, config_kw: dict, args, x, y) -> dict:
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.training.loop import TrainConfig, train

    torch.manual_seed(0)
    model = VisionTransformer(**spec.timm_kwargs())
    windows: list[tuple[float, float]] = []  # (images/s, seconds) per report window
    last = [time.perf_counter()]

    def on_step(info) -> None:
        now = time.perf_counter()
        windows.append((info.images_per_s, now - last[0]))
        last[0] = now

    config = TrainConfig(
        steps=args.steps, batch_size=args.batch, lr=5e-4, warmup_steps=0, device=args.device,
        log_every=args.every, eval_every=args.steps, **config_kw,
    )  # fmt: skip
    result = train(model, config, x, y, on_step=on_step)
    rates = [r for r, _ in windows[1:]]
    return {
        "images_per_s": round(statistics.median(rates), 1),
        "first_window_s": round(windows[0][1], 1),  # warm-up (and compilation)
        "placement": result.data_placement,
        "amp": result.amp,
        "compiled": result.compiled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shape", default="6x128@28", help="DEPTHxWIDTH@IMG_SIZE (default 6x128@28)")
    parser.add_argument("--heads", type=int, default=0, help="0: head dim 32 below 112 px, 64 from 112 px")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=16, help="training set size in batches")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10, help="steps per report window")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", default="", help="comma-separated configuration numbers (1-based)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 2 * args.every:
        parser.error("--steps must cover at least two report windows (2 x --every)")

    from wave_deploy.spec import ViTSpec

    depth, width, img = parse_shape(args.shape)
    patch = 16 if img >= 112 else 7 if img % 7 == 0 else 4
    chans = 3 if img >= 112 else 1
    heads = args.heads or max(1, width // (64 if img >= 112 else 32))
    spec = ViTSpec(depth, width, heads, patch_size=patch, img_size=img, in_chans=chans)
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.batches
    x = torch.randn(n, chans, img, img, generator=g)
    y = torch.randint(0, spec.num_classes, (n,), generator=g)
    configs = CONFIGS[args.device]
    if args.only:
        configs = [configs[int(i) - 1] for i in args.only.split(",")]
    from wave_deploy.errors import MissingDependencyError

    results: dict[str, dict] = {}
    for name, kw in configs:
        try:
            results[name] = measure(spec, kw, args, x, y)
        except MissingDependencyError as e:  # e.g. torch.compile without a compiler: say so, time the rest
            results[name] = {"error": e.one_line()}
        print(f"{name}: {results[name]}", flush=True)
    first = next(iter(results.values())).get("images_per_s")
    for r in results.values():
        if "images_per_s" in r and first:
            r["ratio"] = round(r["images_per_s"] / first, 2)
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    )
    out = {"shape": spec.name, "batch": args.batch, "steps": args.steps, "device": device, "results": results}
    print(json.dumps(out, indent=2))
    print(f"\n{spec.name}, batch {args.batch}, {device}\n")
    print("| configuration | images/s | ratio to the first | first window s (warm-up, compilation) |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | |")
        else:
            print(f"| {name} | {r['images_per_s']} | {r.get('ratio', '-')}x | {r['first_window_s']} |")


if __name__ == "__main__":
    main()
