"""Do dynamo graphs run as fast as legacy (TorchScript) graphs of the same models in ONNX Runtime?

For three ViTs at 224 px RGB with 64-wide heads (L4 D128, L6 D192, L12 D384; timm's random init, seed 0), each
exported with both exporters (opset 18, dynamic batch, as wave-deploy exports), one ONNX Runtime session per
file on one thread, batch 1. Rounds alternate between the two files of a model; each round times 20 runs after
3 warm-up runs on the thread clock; the table shows the best round's median of each and the dynamo/legacy
ratio. Results: docs/latency.md ("the exporter matters").

    python benchmarks/exporter_speed.py [--rounds 3] [--iterations 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.bench.stats import time_calls
from wave_deploy.exporters.onnx import export_onnx, seeded_inputs
from wave_deploy.spec import ViTSpec

SIZES = ((4, 128, 2), (6, 192, 3), (12, 384, 6))  # depth, width, heads (64-wide)
EXPORTERS = ("dynamo", "legacy")


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    t0 = time.time()
    print(
        f"ViT at 224 px, batch 1, one thread, best of {args.rounds} alternating rounds of {args.iterations} runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for depth, dim, heads in SIZES:
            spec = ViTSpec(depth=depth, embed_dim=dim, num_heads=heads, patch_size=16, img_size=224, in_chans=3,
                           num_classes=8)  # fmt: skip
            torch.manual_seed(0)
            model = VisionTransformer(**spec.timm_kwargs()).eval()
            sessions = {}
            for exporter in EXPORTERS:
                path = Path(tmp) / f"{spec.name}.{exporter}.onnx"
                export_onnx(model, spec, path, exporter=exporter)
                sessions[exporter] = session(path)
            x = seeded_inputs(spec, 1)
            name = {e: s.get_inputs()[0].name for e, s in sessions.items()}
            outs = {e: s.run(None, {name[e]: x})[0] for e, s in sessions.items()}
            assert np.abs(outs["dynamo"] - outs["legacy"]).max() < 1e-4  # the same model either way
            best = dict.fromkeys(EXPORTERS, float("inf"))
            for _ in range(args.rounds):
                for e, s in sessions.items():
                    feed = {name[e]: x}
                    ms = time_calls(lambda s=s, feed=feed: s.run(None, feed), warmup=3,
                                    iterations=args.iterations, clock=time.thread_time_ns)  # fmt: skip
                    best[e] = min(best[e], statistics.median(ms))
            print(f"L{depth} D{dim}: dynamo {best['dynamo']:.2f} ms, legacy {best['legacy']:.2f} ms, "
                  f"dynamo/legacy {best['dynamo'] / best['legacy']:.3f}")  # fmt: skip
    print(f"took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
