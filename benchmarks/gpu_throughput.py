"""GPU vs CPU for the default build's model: training images/s (scaler phase, dense) and inference latency.

The GPU checks of issues #4 and #7 (scripts/gpu_check.sh runs this on a lent GPU machine). In one run, for
each device present (the CPU always, CUDA when torch sees a GPU), on the same spec, data and budget:

1. training images/s of the scaler phase (WaveViT from the shipped bank, templates frozen, distilled from the
   bank's auxiliary model: what `wave-deploy build` runs first) and of dense training of the same spec (timm
   VisionTransformer, every parameter trainable). The figure is the training loop's own
   (``TrainResult.images_per_s``: optimizer steps only, evaluation excluded), after an untimed warm-up run;
   CUDA uses the loop's default autocast (bf16 where supported);
2. inference latency of that model, batch 1 and batch 64: torch eager (compute only on CUDA: the input
   already on the GPU, the call synchronized), and ONNX Runtime with every execution provider this
   onnxruntime build has for the device (the PyPI ``onnxruntime`` wheel is CPU-only; ``onnxruntime-gpu``
   brings the CUDA provider). TensorRT is not measured here: it is not installed on these machines.

Ratios are printed side by side (GPU over CPU). On a CPU-only machine only the CPU rows are measured, and
the output says so.

Usage:
    python benchmarks/gpu_throughput.py --threads 1            # the default model (L6 D128), 60 steps
    python benchmarks/gpu_throughput.py --quick --threads 1    # 8 steps, 20 timed calls: a dry run
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from wave_deploy import data as datasets
from wave_deploy.bench.runners import OrtRunner, TorchRunner, benchmark
from wave_deploy.bench.stats import cpu_description
from wave_deploy.exporters.onnx import export_onnx
from wave_deploy.training.baselines import random_init
from wave_deploy.training.loop import TrainConfig, train
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.init import ScalerPhase, init_wave_model, train_scalers

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def training_rates(bank, spec, data, device: str, steps: int, batch: int) -> dict[str, float]:
    """images/s of the scaler phase and of dense training on ``device`` (each after an untimed warm-up)."""
    rates = {}
    for phase in ("scaler phase", "dense"):
        for run_steps in (max(2, steps // 4), steps):  # the first run warms up kernels, allocator, autotuning
            if phase == "scaler phase":
                model = init_wave_model(bank, spec, "aux", seed=0, same_task=True)
                result = train_scalers(
                    model, bank, data, ScalerPhase(steps=run_steps, batch_size=batch), device=device
                )
            else:
                config = TrainConfig(
                    steps=run_steps,
                    batch_size=batch,
                    lr=5e-4,
                    warmup_steps=0,
                    device=device,
                    eval_every=run_steps,
                )
                result = train(
                    random_init(spec, seed=0),
                    config,
                    data.train_x,
                    data.train_labels,
                    data.val_x,
                    data.val_labels,
                )
        rates[phase] = result.images_per_s
        rates[f"{phase} amp"] = result.amp
    return rates


def latency_rows(spec, onnx_path: Path, device: str, iterations: int) -> list[tuple[str, int, float]]:
    """(runtime, batch, p50 ms) for torch eager and each ONNX Runtime provider available for ``device``."""
    import onnxruntime as ort

    rows = []
    model = random_init(spec, seed=0).eval()
    runners = [
        ("torch eager", TorchRunner(model, (spec.in_chans, spec.img_size, spec.img_size), device=device))
    ]
    provider = ORT_PROVIDERS[device]
    if provider in ort.get_available_providers():
        runners.append((f"onnxruntime {provider}", OrtRunner(onnx_path, providers=[provider])))
    else:
        print(
            f"  note: this onnxruntime {ort.__version__} build has no {provider}; ONNX Runtime not timed on {device}"
        )
    for name, runner in runners:
        for batch in (1, 64):
            stats = benchmark(runner, batch=batch, warmup=10, iterations=iterations)
            rows.append((name, batch, stats.p50_ms))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=200, help="timed inference calls per row")
    ap.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime CPU threads")
    ap.add_argument("--quick", action="store_true", help="8 steps and 20 timed calls: a dry run")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.iterations = 8, 20
    if args.threads:
        torch.set_num_threads(args.threads)

    bank = TemplateBank.load(default_bank_path())
    spec = bank.geometry.make_spec(args.depth, args.embed_dim)
    data = datasets.load_builtin(seed=0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    started = time.time()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  torch {torch.__version__}"
    )
    print(
        f"model {spec.name}, batch {args.batch}, {args.steps} timed steps, CPU threads {torch.get_num_threads()}"
    )
    print(f"cpu:  {cpu_description()}")
    if "cuda" in devices:
        major, minor = torch.cuda.get_device_capability()
        print(
            f"cuda: {torch.cuda.get_device_name()} (compute capability {major}.{minor}), CUDA {torch.version.cuda}"
        )
    else:
        print("cuda: torch sees no CUDA GPU: only the CPU is measured")

    train_by_device, latency_by_device = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(random_init(spec, seed=0).eval(), spec, onnx_path, batch_max=64)
        for device in devices:
            train_by_device[device] = training_rates(bank, spec, data, device, args.steps, args.batch)
            latency_by_device[device] = latency_rows(spec, onnx_path, device, args.iterations)

    print("\ntraining images/s (optimizer steps only)")
    print(
        f"  {'phase':14s}"
        + "".join(f"{d:>16s}" for d in devices)
        + ("   cuda/cpu" if len(devices) > 1 else "")
    )
    for phase in ("scaler phase", "dense"):
        cells = "".join(
            f"{train_by_device[d][phase]:10.0f} ({train_by_device[d][phase + ' amp']:>4s})" for d in devices
        )
        ratio = (
            f"  {train_by_device['cuda'][phase] / train_by_device['cpu'][phase]:8.1f}x"
            if len(devices) > 1
            else ""
        )
        print(f"  {phase:14s}{cells}{ratio}")
    for d in devices:
        share = train_by_device[d]["scaler phase"] / train_by_device[d]["dense"]
        print(f"  {d}: a scaler-phase step (with the teacher's forward) costs {1 / share:.2f}x a dense step")

    print("\ninference latency, p50 ms (torch on cuda: compute only; CPU: host to host)")
    for d in devices:
        for name, batch, p50 in latency_by_device[d]:
            print(f"  {d:5s} {name:40s} batch {batch:3d}  {p50:9.3f} ms  {1000 * batch / p50:10.0f} img/s")
    if len(devices) > 1:
        cpu = {(n, b): p for n, b, p in latency_by_device["cpu"]}
        for name, batch, p50 in latency_by_device["cuda"]:
            if (name, batch) in cpu:
                print(f"  {name}, batch {batch}: cpu / cuda latency = {cpu[(name, batch)] / p50:.1f}x")
    print(f"\ntook {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
