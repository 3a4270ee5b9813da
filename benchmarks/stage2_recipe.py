"""The build's stage-2 recipe, ablated: scaler phase (60 distilled steps, or none and the same FLOPs spent on
dense steps) x dense learning rate (5e-4 or 1e-4), and a cheaper teacher-free recipe (210 dense steps, the
default's step count), over sizes and seeds, on the built-in MNIST-5k.

    python benchmarks/stage2_recipe.py --sizes 2x64,4x96,6x128 --seeds 0,1,2 --out bench_out/stage2_recipe.jsonl
    python benchmarks/stage2_recipe.py --table --out benchmarks/results/stage2_recipe.jsonl   # table only

Every run is ``wave_deploy.wave.init.initialize`` (the build's own stage 2: slice the bank, scaler phase,
fold, dense phase) with the build's phase settings except the two ablated. Compute per recipe is counted in
analytic training FLOPs: a dense step is 3 x the target's forward per image, a distilled scaler step adds
the bank's auxiliary model's forward; the "same FLOPs" recipes get 150 + round(60 x that ratio) dense steps,
so they cost what the default costs; "210 steps" costs less (its TFLOP is in the table). One JSON line per run in --out (the run resumes from it); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

RECIPES = {  # name: (distilled scaler steps, dense lr, dense steps: None = the same FLOPs as the default)
    "default (60 distilled + 150 dense, lr 5e-4)": (60, 5e-4, 150),
    "60 distilled + 150 dense, lr 1e-4": (60, 1e-4, 150),
    "dense only, same FLOPs, lr 5e-4": (0, 5e-4, None),
    "dense only, same FLOPs, lr 1e-4": (0, 1e-4, None),
    "dense only, 210 steps, lr 5e-4": (0, 5e-4, 210),
}
SCALER_STEPS, DENSE_STEPS, BATCH = 60, 150, 128


def same_flops_dense_steps(spec, aux_spec) -> int:
    """Dense steps costing what the default's 60 distilled + 150 dense steps cost."""
    from wave_deploy.spec import flops

    ratio = (3 * flops(spec) + flops(aux_spec)) / (3 * flops(spec))  # a distilled step in dense steps
    return DENSE_STEPS + round(SCALER_STEPS * ratio)


def train_flops(spec, aux_spec, scaler_steps: int, dense_steps: int) -> int:
    from wave_deploy.spec import flops

    return BATCH * (scaler_steps * (3 * flops(spec) + flops(aux_spec)) + dense_steps * 3 * flops(spec))


def run(sizes: list[tuple[int, int]], seeds: list[int], out: Path) -> None:
    import torch

    from wave_deploy.data import load_builtin
    from wave_deploy.wave.bank import TemplateBank, default_bank_path
    from wave_deploy.wave.init import DensePhase, ScalerPhase, initialize

    done = {(r["size"], r["recipe"], r["seed"]) for r in load(out)}
    bank, data = TemplateBank.load(default_bank_path()), load_builtin(seed=0)
    g = bank.geometry
    todo = [
        (d, w, name, s)
        for s in seeds
        for d, w in sizes
        for name in RECIPES
        if (f"L{d} D{w}", name, s) not in done
    ]
    print(
        f"{len(todo)} runs ({len(done)} already in {out}); threads {torch.get_num_threads()}", file=sys.stderr
    )
    t0 = time.perf_counter()
    for i, (depth, width, name, seed) in enumerate(todo, 1):
        spec = g.make_spec(depth, width)
        scaler_steps, lr, dense_steps = RECIPES[name]
        dense_steps = dense_steps or same_flops_dense_steps(spec, bank.aux_spec)
        t1 = time.perf_counter()
        _, rec = initialize(
            bank, spec, data, scaler=ScalerPhase(steps=scaler_steps, seed=seed),
            dense=DensePhase(steps=dense_steps, lr=lr, seed=seed), device="cpu",
        )  # fmt: skip
        row = {
            "size": f"L{depth} D{width}", "recipe": name, "seed": seed, "acc": rec["val_acc"],
            "acc_at_init": rec["val_acc_at_init"], "scaler_steps": scaler_steps, "dense_steps": dense_steps,
            "tflop": round(train_flops(spec, bank.aux_spec, scaler_steps, dense_steps) / 1e12, 4),
            "wall_s": round(time.perf_counter() - t1, 1),
        }  # fmt: skip
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        elapsed = time.perf_counter() - t0
        print(f"[{i}/{len(todo)}] {row['size']} seed {seed} {name}: {row['acc']:.1%} ({row['wall_s']} s; "
              f"about {elapsed / i * (len(todo) - i) / 60:.0f} min left)", file=sys.stderr)  # fmt: skip


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> None:
    sizes = sorted({r["size"] for r in rows}, key=lambda s: tuple(int(p[1:]) for p in s.split()))
    seeds = sorted({r["seed"] for r in rows})
    print(f"Stage-2 recipes at the default's training FLOPs unless a cost is given, mean ± std over seeds {seeds} "
          "(n = seeds measured); val accuracy on the content-fixed 500-image split; TFLOP per run\n")  # fmt: skip
    print("| size | sliced | TFLOP (default) | " + " | ".join(RECIPES) + " |")
    print("|---|---|---|" + "---|" * len(RECIPES))
    for size in sizes:
        mine = {name: [r for r in rows if r["size"] == size and r["recipe"] == name] for name in RECIPES}
        first = next(runs[0] for runs in mine.values() if runs)
        base_tflop = mine[next(iter(RECIPES))][0]["tflop"] if mine[next(iter(RECIPES))] else None
        cells = []
        for runs in mine.values():
            if not runs:
                cells.append("-")
                continue
            accs = [r["acc"] for r in runs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cost = "" if runs[0]["tflop"] == base_tflop else f" at {runs[0]['tflop']:.3f} TFLOP"
            cells.append(f"{statistics.fmean(accs):.1%} ± {sd:.1%} (n={len(accs)}){cost}")
        print(f"| {size} | {first['acc_at_init']:.1%} | {base_tflop} | " + " | ".join(cells) + " |")
    names = list(RECIPES)
    print(
        "\nPaired difference to the default recipe (same size and seed), mean ± std over all sizes and seeds:"
    )
    for name in names[1:]:
        diffs = []
        for r in rows:
            if r["recipe"] != name:
                continue
            base = [
                b["acc"]
                for b in rows
                if b["recipe"] == names[0] and (b["size"], b["seed"]) == (r["size"], r["seed"])
            ]
            if base:
                diffs.append(100 * (r["acc"] - base[0]))
        if len(diffs) > 1:
            print(
                f"- {name}: {statistics.fmean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} pt (n={len(diffs)})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2x64,4x96,6x128", help="DEPTHxWIDTH,...")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="bench_out/stage2_recipe.jsonl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the table of --out, train nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.table:
        import torch

        torch.set_num_threads(args.threads)
        out.parent.mkdir(parents=True, exist_ok=True)
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        run(sizes, [int(s) for s in args.seeds.split(",")], out)  # type: ignore[arg-type]
    table(load(out))


if __name__ == "__main__":
    main()
