"""Headroom (issue 18, point 5): what does a build lose or gain when the search goes past the bank's sizes?

Sizes within the bank (the largest it serves: its auxiliary model) against sizes beyond it (scalers grown by
wave.slicing.grow_scalers), each trained with the SAME training schedule a build gives it (the build's own
stage 2, ``wave.init.initialize``: 60 distilled scaler steps + 150 dense steps at batch 128, exactly what
``build`` runs on the built-in MNIST-5k), several seeds, on the content-fixed validation split.
"Same training budget" means the same steps and images; a larger size costs more FLOPs per step, which the
table states beside each accuracy (analytic, wave_deploy.training.compute: a dense step is 3 x forward x
batch, a distilled scaler step adds the teacher's forward).

    python benchmarks/headroom.py --sizes 6x128,8x160,9x192,12x256 --seeds 0,1,2 --threads 1
    python benchmarks/headroom.py --table            # the table of what --out holds

One JSON line per run in --out (the run resumes from it); progress on stderr; the markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

SCALER_STEPS, DENSE_STEPS, BATCH = 60, 150, 128


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def run(sizes: list[tuple[int, int]], seeds: list[int], out: Path) -> None:
    import torch

    from wave_deploy.data import load_builtin
    from wave_deploy.training.compute import wave_training_flops
    from wave_deploy.wave.bank import TemplateBank, default_bank_path
    from wave_deploy.wave.init import DensePhase, ScalerPhase, initialize

    bank, data = TemplateBank.load(default_bank_path()), load_builtin(seed=0)
    aux = bank.aux_spec
    assert aux is not None
    done = {(r["size"], r["seed"]) for r in load(out)}
    todo = [(d, w, s) for s in seeds for d, w in sizes if (f"L{d} D{w}", s) not in done]
    print(f"{len(todo)} runs ({len(done)} in {out}); threads {torch.get_num_threads()}", file=sys.stderr)
    t0 = time.perf_counter()
    for i, (depth, width, seed) in enumerate(todo, 1):
        spec = bank.geometry.make_spec(depth, width)
        t1 = time.perf_counter()
        _, rec = initialize(
            bank, spec, data, scaler=ScalerPhase(steps=SCALER_STEPS, batch_size=BATCH, seed=seed),
            dense=DensePhase(steps=DENSE_STEPS, batch_size=BATCH, seed=seed), device="cpu",
        )  # fmt: skip
        row = {
            "size": f"L{depth} D{width}",
            "depth": depth,
            "embed_dim": width,
            "beyond_bank": depth > aux.depth or width > aux.embed_dim,
            "factor": round(max(depth / aux.depth, width / aux.embed_dim), 3),
            "seed": seed,
            "acc": rec["val_acc"],
            "acc_at_init": rec["val_acc_at_init"],
            "scaler_steps": SCALER_STEPS,
            "dense_steps": DENSE_STEPS,
            "flops": wave_training_flops(spec, BATCH, SCALER_STEPS, DENSE_STEPS, teacher=aux),
            "wall_s": round(time.perf_counter() - t1, 1),
        }
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"[{i}/{len(todo)}] {row['size']} seed {seed}: {row['acc']:.3f} ({row['wall_s']} s, "
              f"{time.perf_counter() - t0:.0f} s total)", file=sys.stderr, flush=True)  # fmt: skip


def table(rows: list[dict]) -> str:
    within = [r for r in rows if not r["beyond_bank"]]
    base = statistics.mean(r["acc"] for r in within) if within else None
    out = [
        (
            "| size | beyond the bank by | params M | training TFLOP | val accuracy (mean ± std) | vs within | "
            "at init | wall s / run |"
        ),
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    from wave_deploy.spec import ViTSpec, param_count

    for size in dict.fromkeys(r["size"] for r in sorted(rows, key=lambda r: r["flops"])):
        cell = [r for r in rows if r["size"] == size]
        accs = [r["acc"] for r in cell]
        mean, std = statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        first = cell[0]
        spec = ViTSpec(first["depth"], first["embed_dim"], first["embed_dim"] // 32, patch_size=7)
        delta = "—" if base is None or not first["beyond_bank"] else f"{100 * (mean - base):+.1f}"
        factor = f"{first['factor']:g}x" if first["beyond_bank"] else "within"
        out.append(
            f"| {size} | {factor} | {param_count(spec) / 1e6:.2f} | {first['flops'] / 1e12:.2f} | "
            f"{100 * mean:.1f} ± {100 * std:.1f} (n={len(accs)}) | {delta} | "
            f"{100 * statistics.mean(r['acc_at_init'] for r in cell):.1f} | "
            f"{statistics.median(r['wall_s'] for r in cell):.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="6x128,8x160,9x192,12x256", help="DEPTHxWIDTH,...")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/headroom.jsonl"))
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if not args.table:
        import torch

        torch.set_num_threads(args.threads)
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        run(sizes, [int(s) for s in args.seeds.split(",")], args.out)  # type: ignore[arg-type]
    print(table(load(args.out)))


if __name__ == "__main__":
    main()
