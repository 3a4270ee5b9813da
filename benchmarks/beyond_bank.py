"""Sizes beyond the bank (issue 11): WAVE-initialized models deeper or wider than the bank's auxiliary model
against random init, at matched training compute (the rules of benchmarks/matched_compute.py), several seeds.

    python benchmarks/beyond_bank.py --sizes 8x160,6x192 --seeds 0,1,2 --multiples 1,5 --budget 20

Random init sweeps its learning rate on the first seed (the best rate per size and level is reused for the
other seeds); WAVE runs the build's recipe (a distilled scaler phase taking 20% of the FLOPs, then dense steps).
Weight selection is not in this table: it cuts a smaller model out of a larger one, and these targets are
larger than the ancestry. Prints one JSON line per cell to --out and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import matched_compute as mc

from wave_deploy.data import load_builtin
from wave_deploy.wave.bank import TemplateBank, default_bank_path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="8x160,6x192", help="DEPTHxWIDTH,... (beyond the bank's 6x128)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--multiples", default="1,5", help="compute levels m (x B)")
    parser.add_argument("--budget", type=int, default=20, help="B in dense steps at batch 128")
    parser.add_argument("--rates", default="5e-4,1e-3,2e-3", help="random init's learning-rate sweep")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/beyond_bank.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    bank = TemplateBank.load(default_bank_path())
    data = load_builtin(seed=0)
    specs = [
        bank.geometry.make_spec(*map(int, s.split("x")), num_classes=data.info.num_classes)
        for s in args.sizes.split(",")
    ]
    ctx = SimpleNamespace(bank=bank, recipe=mc.Recipe(), budget=args.budget, new_task=False, data=data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for m in (int(x) for x in args.multiples.split(",")):
        for spec in specs:
            sweep = [mc.cell("random", lr, spec, m, seeds[0], ctx) for lr in rates]
            best = max(sweep, key=lambda r: r["acc"])
            rows += sweep + [mc.cell("wave", "distill", spec, m, seeds[0], ctx)]
            for seed in seeds[1:]:
                rows += [mc.cell("random", best["arg"], spec, m, seed, ctx),
                         mc.cell("wave", "distill", spec, m, seed, ctx)]  # fmt: skip
            with args.out.open("w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)
            print(f"{spec.name} {m}x done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(table(rows, seeds, args.budget))


def table(rows: list[dict], seeds: list[int], budget: int) -> str:
    out = [
        (
            f"| size | level (matched FLOPs) | training GFLOPs | WAVE (build recipe) | random init (best rate of "
            f"the sweep) | rate sweep at seed {seeds[0]} |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for size in dict.fromkeys(r["size"] for r in rows):
        for m in sorted({r["m"] for r in rows if r["size"] == size}):
            cell = [r for r in rows if r["size"] == size and r["m"] == m]
            sweep = [r for r in cell if r["kind"] == "random" and r["seed"] == seeds[0]]
            best = max(sweep, key=lambda r: r["acc"])["arg"]
            rand = [r["acc"] for r in cell if r["kind"] == "random" and r["arg"] == best]
            wave = [r["acc"] for r in cell if r["kind"] == "wave"]
            gflops = max(r["flops"] for r in cell) / 1e9
            sweep_text = ", ".join(f"{r['arg']:g}: {100 * r['acc']:.1f}" for r in sweep)
            out.append(f"| {size} | {m}x ({m * budget} dense steps) | {gflops:,.0f} | {_ms(wave)} | "
                       f"{_ms(rand)} (lr {best:g}) | {sweep_text} |")  # fmt: skip
    return "\n".join(out)


def _ms(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f} (n={len(values)})"


if __name__ == "__main__":
    main()
