"""The on-device kit's memory measurement against the memory model, at 224 px RGB.

For DeiT-Tiny- and DeiT-Small-shaped ViTs (depth 12, width 192 and 384, patch 16, 224 px, 3 channels) at
batch 1 and 4: the peak RSS of a fresh ONNX Runtime process as the kit measures it
(``export/kit_memory.session_memory``: import, one session, three inferences; one thread) next to the x86-cpu
profile's predicted runtime memory (``wave_deploy.planning.memory.predict_memory``). Results: docs/reports.md,
"Evidence".

    python benchmarks/session_memory.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from wave_deploy._kit.kit_memory import session_memory

from wave_deploy.exporters.onnx import export_onnx
from wave_deploy.planning.memory import predict_memory
from wave_deploy.profiles import load_profile
from wave_deploy.spec import ViTSpec


def main() -> None:
    t0 = time.time()
    profile = load_profile("x86-cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for depth, dim, heads in ((12, 192, 3), (12, 384, 6)):
            spec = ViTSpec(depth=depth, embed_dim=dim, num_heads=heads, patch_size=16, img_size=224, in_chans=3,
                           num_classes=8)  # fmt: skip
            path = Path(tmp) / f"{spec.name}.onnx"
            torch.manual_seed(0)
            export_onnx(
                VisionTransformer(**spec.timm_kwargs()).eval(), spec, path, exporter="legacy", batch_max=4
            )
            for batch in (1, 4):
                got = session_memory(path, batch, 1, ["CPUExecutionProvider"])
                predicted = predict_memory(spec, profile, batch).total_mib
                peak = got["session_peak_rss_mib"]
                print(f"{spec.name:26s} batch {batch}: predicted {predicted:6.1f} MiB, session peak RSS "
                      f"{peak:6.1f} MiB ({peak / predicted:.2f}x; python + numpy + onnxruntime import "
                      f"{got['import_rss_mib']:.1f} MiB)")  # fmt: skip
    print(f"took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
