"""Does folding cost anything at inference, and what does int8 buy? Latency of exported ViTs in ONNX Runtime.

Default mode: folded WAVE models vs plain timm ViTs, exported the same way.

For each size: a WaveViT built from a (random) template bank is folded, written as a folded checkpoint
(safetensors) and loaded back as a timm VisionTransformer; a plain timm VisionTransformer of the same spec
(timm's own init) is the baseline. Both are exported with the same exporter and opset, checked against
PyTorch in ONNX Runtime (fp32 max abs error <= 1e-4), and timed in ONNX Runtime and in PyTorch eager on
the same CPU threads. Latency rounds alternate between the models; the table reports medians of the
per-round p50 latencies, the folded/plain ratio, and ONNX Runtime vs PyTorch eager side by side.

    python benchmarks/export_latency.py [--rounds 5] [--iterations 50] [--threads 2] [--batch 1]

--int8 mode: fp32 vs the int8 variants wave-deploy makes (static QDQ with each KEEP_FLOAT set, and dynamic)
in ONNX Runtime on this CPU, at batch 1 and 32, rounds rotating between the files, plus accuracy: for
``--checkpoint`` (a build's model.safetensors, default data MNIST-5k) the top-1 on the validation split
and its drop vs ONNX fp32; for the DeiT-Tiny-shaped model (timm's random init, 224 px, depth 12, width
192, 3 channels) only the top-1 agreement with fp32 on seeded synthetic images (it has no trained weights).

    python benchmarks/export_latency.py --int8 --checkpoint OUT/x86-cpu/model.safetensors --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.bench.runners import OrtRunner, TorchRunner, benchmark
from wave_deploy.exporters import onnx as ox
from wave_deploy.training.folding import fold, load_folded_file, save_folded
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.model import WaveViT

GEOM_28 = {"img_size": 28, "patch_size": 4, "in_chans": 1, "w": 32, "head_dim": 32}
GEOM_224 = {"img_size": 224, "patch_size": 16, "in_chans": 3, "w": 64, "head_dim": 64}
# (label, geometry fields, depth, embed_dim): the MNIST-sized defaults and a DeiT-Tiny-shaped 224 px model.
SIZES = [
    ("28px d64 L4", GEOM_28, 4, 64),
    ("28px d128 L6", GEOM_28, 6, 128),
    ("28px d192 L6", GEOM_28, 6, 192),
    ("224px d192 L12", GEOM_224, 12, 192),
]


def folded_and_plain(geom_fields: dict, depth: int, width: int, workdir: Path):
    geom = BankGeometry.create(num_classes=10, mlp_ratio=4.0, max_depth=12, max_embed_dim=192, **geom_fields)
    bank = TemplateBank.init_random(geom, seed=0)
    spec = geom.make_spec(depth, width)
    state, spec = fold(WaveViT(bank, spec, seed=1))
    save_folded(workdir / "folded.safetensors", state, spec)
    folded, spec, _ = load_folded_file(workdir / "folded.safetensors")
    torch.manual_seed(0)
    plain = VisionTransformer(**spec.timm_kwargs()).eval()
    return spec, folded, plain


def measure(label: str, geom_fields: dict, depth: int, width: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        spec, folded, plain = folded_and_plain(geom_fields, depth, width, workdir)
        runners, parity, ops = {}, {}, {}
        for name, model in (("folded", folded), ("plain", plain)):
            path = workdir / f"{name}.onnx"
            ox.export_onnx(
                model, spec, path, exporter=args.exporter, batch_min=1, batch_max=max(8, args.batch)
            )
            inputs = [ox.seeded_inputs(spec, 1), ox.seeded_inputs(spec, max(8, args.batch), seed=1)]
            parity[name] = ox.check_parity(path, model, inputs).max_abs_err
            import onnx

            ops[name] = [n.op_type for n in onnx.load(str(path)).graph.node]
            runners[f"ort_{name}"] = OrtRunner(path, threads=args.threads)
            runners[f"torch_{name}"] = TorchRunner(
                model, runners[f"ort_{name}"].sample_shape, threads=args.threads
            )
        p50s = {key: [] for key in runners}
        keys = list(runners)
        for r in range(args.rounds):  # rotate the order every round so drift and contention hit all alike
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                runner = runners[key]
                stats = benchmark(runner, batch=args.batch, warmup=args.warmup, iterations=args.iterations)
                p50s[key].append(stats.p50_ms)
    med = {key: statistics.median(values) for key, values in p50s.items()}
    return {
        "label": label,
        "params_m": sum(p.numel() for p in plain.parameters()) / 1e6,
        "same_graph": ops["folded"] == ops["plain"],
        "parity": max(parity.values()),
        **med,
    }


def int8_rows(label: str, model, spec, workdir: Path, images, labels, calibration, args) -> list[dict]:
    """One row per file: fp32 and each int8 variant, with latency at each batch and accuracy."""
    from wave_deploy.exporters import quantize as qz

    fp32 = workdir / f"{label}.onnx"
    ox.export_onnx(model, spec, fp32, exporter=args.exporter, batch_min=1, batch_max=max(args.int8_batches))
    files = {"fp32": fp32}
    for keep in qz.KEEP_FLOAT:
        files[f"static s8 {keep}"] = workdir / f"{label}.int8.{keep}.onnx"
        qz.make_int8_static(fp32, files[f"static s8 {keep}"], calibration, keep_float=keep)
    files["static u8 norms"] = workdir / f"{label}.int8.u8.onnx"
    qz.make_int8_static(fp32, files["static u8 norms"], calibration, activations="uint8-asymmetric")
    files["dynamic"] = workdir / f"{label}.int8.dynamic.onnx"
    qz.make_int8_dynamic(fp32, files["dynamic"])
    if args.variants:  # keep fp32 and the variants named
        files = {k: v for k, v in files.items() if k == "fp32" or k in args.variants}
    ref = qz.ort_logits(fp32, images)
    rows = {name: {"model": label, "variant": name} for name in files}
    for name, path in files.items():
        logits = ref if name == "fp32" else qz.ort_logits(path, images)
        rows[name]["agreement"] = float((logits.argmax(1) == ref.argmax(1)).mean())
        rows[name]["top1"] = qz.top1(logits, labels) if labels is not None else None
    for batch in args.int8_batches:
        runners = {name: OrtRunner(path, threads=args.threads) for name, path in files.items()}
        p50s = {name: [] for name in runners}
        keys = list(runners)
        for r in range(args.rounds):  # rotate the order every round so drift and contention hit all alike
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                iterations = max(3, args.iterations // batch) if batch > 1 else args.iterations
                stats = benchmark(runners[key], batch=batch, warmup=2, iterations=iterations)
                p50s[key].append(stats.p50_ms)
        for name in files:
            rows[name][f"b{batch}"] = statistics.median(p50s[name])
            rows[name][f"b{batch}_spread"] = (min(p50s[name]), max(p50s[name]))
    return list(rows.values())


def int8_main(args) -> None:
    import numpy as np

    from wave_deploy import data as datasets
    from wave_deploy.exporters.base import data_inputs
    from wave_deploy.spec import ViTSpec

    print(f"{args.threads} intra-op thread(s), {args.rounds} rounds, rotating order; medians of per-round p50 "
          f"latency (ms) at batch {' and '.join(map(str, args.int8_batches))}; ratio = fp32 / variant")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.checkpoint:
            model, spec, _ = load_folded_file(args.checkpoint)
            inputs = data_inputs(datasets.load(args.data, seed=0), seed=0)
            rows += int8_rows("build model", model, spec, workdir, inputs["validation"],
                              inputs["validation_labels"], inputs["calibration"], args)  # fmt: skip
        if not args.only or args.only in "deit-tiny":
            spec = ViTSpec(depth=12, embed_dim=192, num_heads=3, patch_size=16, img_size=224, in_chans=3,
                           num_classes=1000)  # fmt: skip
            torch.manual_seed(0)
            model = VisionTransformer(**spec.timm_kwargs()).eval()
            rng = np.random.default_rng(0)
            synthetic = rng.standard_normal((args.deit_images, 3, 224, 224)).astype(np.float32)
            calibration = rng.standard_normal((32, 3, 224, 224)).astype(np.float32)
            rows += int8_rows("deit-tiny", model, spec, workdir, synthetic, None, calibration, args)
    batches = args.int8_batches
    head = ["model", "variant", *(f"b{b} ms" for b in batches), *(f"b{b} ratio" for b in batches),
            "top-1", "drop pts", "agreement"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        fp32 = next(r for r in rows if r["model"] == row["model"] and r["variant"] == "fp32")
        cells = [row["model"], row["variant"], *(f"{row[f'b{b}']:.2f}" for b in batches),
                 *(f"{fp32[f'b{b}'] / row[f'b{b}']:.2f}" for b in batches)]  # fmt: skip
        if row["top1"] is None:
            cells += ["n/a", "n/a"]
        else:
            cells += [f"{row['top1']:.2%}", f"{(fp32['top1'] - row['top1']) * 100:.2f}"]
        cells.append(f"{row['agreement']:.3f}")
        print("| " + " | ".join(cells) + " |", flush=True)
    print("per-round p50 spread (min..max ms): " + "; ".join(
        f"{r['model']} {r['variant']} b{b} {r[f'b{b}_spread'][0]:.2f}..{r[f'b{b}_spread'][1]:.2f}"
        for r in rows for b in batches))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--exporter", choices=["dynamo", "legacy"], default="dynamo")
    parser.add_argument("--only", default="", help="run only the sizes whose label contains this text")
    parser.add_argument(
        "--int8", action="store_true", help="fp32 vs int8 variants instead of folded vs plain"
    )
    parser.add_argument("--checkpoint", type=Path, help="--int8: a build's model.safetensors to measure too")
    parser.add_argument("--data", default=None, help="--int8: the checkpoint's data (default: MNIST-5k)")
    parser.add_argument("--int8-batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--variants", nargs="+", help="--int8: time only these (e.g. 'static s8 norms' dynamic)"
    )
    parser.add_argument("--deit-images", type=int, default=64, help="--int8: synthetic images for agreement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.int8:
        int8_main(args)
        return
    print(f"batch {args.batch}, {args.threads} threads, {args.rounds} rounds x {args.iterations} iterations, "
          f"exporter {args.exporter}; medians of per-round p50 latency (ms)")  # fmt: skip
    header = (f"| {'model':<15} | params M | same graph | max err | ORT folded | ORT plain | folded/plain "
              f"| torch folded | torch plain | folded/plain | ORT/torch |")  # fmt: skip
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, geom_fields, depth, width in SIZES:
        if args.only and args.only not in label:
            continue
        r = measure(label, geom_fields, depth, width, args)
        print(
            f"| {r['label']:<15} | {r['params_m']:8.2f} | {'yes' if r['same_graph'] else 'NO':<10} "
            f"| {r['parity']:7.1e} | {r['ort_folded']:10.3f} | {r['ort_plain']:9.3f} "
            f"| {r['ort_folded'] / r['ort_plain']:12.3f} | {r['torch_folded']:12.3f} | {r['torch_plain']:11.3f} "
            f"| {r['torch_folded'] / r['torch_plain']:12.3f} | {r['ort_plain'] / r['torch_plain']:9.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
