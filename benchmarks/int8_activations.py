"""At which element type does ONNX Runtime's int8 model hold its activations? Measured, side by side.

wave_deploy.target says fp32: only the weight GEMMs of the deployed int8 model are quantized, and LayerNorm,
softmax, GELU, the attention products and the residual stream stay float32. This benchmark checks that claim
on the memory the runtime actually uses: for each shape it exports a random timm ViT, makes the fp32, static
Q/DQ (the default) and dynamic int8 files exactly as an export does (``quantize.make_variant``), and in a fresh
process per file and repeat measures the peak RSS that one inference at batch B adds over the warmed
session (the activations and their arena; the weights are resident before; Linux: the peak is reset through
/proc/self/clear_refs). If int8 activations were int8, the
int8 files would add about a quarter of fp32's; if they stay fp32, about as much.

    python benchmarks/int8_activations.py            # 3 shapes x 3 files x 3 repeats, about 2 minutes here

Prints each file's added MiB (median of the repeats), its ratio to fp32 of the same shape, and the estimate
``spec.activation_bytes`` at fp32 and int8 for comparison. Results: docs/latency.md ("int8 activations").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort

def status(key):  # kB -> MiB, from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
path, batch, size, chans = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.log_severity_level = 3
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((batch, chans, size, size)).astype(np.float32)
session.run(None, {session.get_inputs()[0].name: x[:1]})  # warm: kernels and pre-packed weights resident
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
    fh.write("5")
before = status("VmRSS")
session.run(None, {session.get_inputs()[0].name: x})
print(json.dumps({"added_mib": status("VmHWM") - before}))
"""

SHAPES = ((4, 192, 8), (2, 384, 8), (6, 128, 16))  # (depth, width, batch) at 224 px, 64-wide heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args()

    import numpy as np
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from wave_deploy.exporters.onnx import export_onnx
    from wave_deploy.exporters.quantize import make_variant
    from wave_deploy.spec import ViTSpec, activation_bytes
    from wave_deploy.target import INT8_ORT_DYNAMIC, INT8_ORT_STATIC

    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-activations-") as tmp:
        for depth, width, batch in SHAPES:
            spec = ViTSpec(depth=depth, embed_dim=width, num_heads=width // 64, img_size=args.img_size,
                           patch_size=16, in_chans=3, num_classes=1000)  # fmt: skip
            torch.manual_seed(0)
            fp32 = Path(tmp) / f"{spec.name}.onnx"
            export_onnx(VisionTransformer(**spec.timm_kwargs()).eval(), spec, fp32, batch_max=batch)
            calibration = np.random.default_rng(0).standard_normal((16, 3, args.img_size, args.img_size))
            files = {"fp32": fp32}
            for variant in (INT8_ORT_STATIC, INT8_ORT_DYNAMIC):
                files[f"int8 {variant.method}"] = Path(tmp) / f"{spec.name}.{variant.method}.onnx"
                make_variant(variant, fp32, files[f"int8 {variant.method}"], calibration.astype(np.float32))
            added = {}
            for name, path in files.items():
                runs = []
                for _ in range(args.repeats):
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(path), str(batch), str(args.img_size), "3"],
                        check=True, capture_output=True, text=True,
                    )  # fmt: skip
                    runs.append(json.loads(out.stdout)["added_mib"])
                added[name] = statistics.median(runs)
            est = {p: activation_bytes(spec, batch, p) / (1 << 20) for p in ("fp32", "int8")}
            for name, mib in added.items():
                rows.append((spec.name, batch, name, mib, mib / added["fp32"], est["fp32"], est["int8"]))
    print(f"{'shape':<24} {'batch':>5}  {'file':<16} {'added MiB':>9}  {'/ fp32':>6}  est fp32  est int8")
    for name, batch, file, mib, ratio, e32, e8 in rows:
        print(f"{name:<24} {batch:>5}  {file:<16} {mib:9.1f}  {ratio:6.2f}  {e32:8.1f}  {e8:8.1f}")


if __name__ == "__main__":
    main()
