"""How well does the accuracy proxy (each size sliced from the bank, no training) rank the sizes by their accuracy
after the build's training (stage 2: 60 scaler + 150 dense steps, the build's defaults)? Spearman rank
correlation over every size of the bank, trained with several seeds.

    python benchmarks/proxy_rank.py --seeds 0,1,2 --device cuda --out benchmarks/results/proxy_rank.json
    python benchmarks/proxy_rank.py --from benchmarks/results/proxy_rank.json      # statistics only

The results file maps "L{depth}_D{width}_s{seed}" to [sliced accuracy, accuracy after training].
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties get their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den


def measure(seeds: list[int], device: str, out: str) -> dict:
    from wave_deploy.data import load_builtin
    from wave_deploy.wave.bank import TemplateBank, default_bank_path
    from wave_deploy.wave.init import DensePhase, ScalerPhase, initialize

    bank, data = TemplateBank.load(default_bank_path()), load_builtin(seed=0)
    g, results, t0 = bank.geometry, {}, time.time()
    for depth in range(1, g.max_depth + 1):
        for dim in g.valid_embed_dims():
            for seed in seeds:
                _, rec = initialize(
                    bank, g.make_spec(depth, dim), data, scaler=ScalerPhase(steps=60, seed=seed),
                    dense=DensePhase(steps=150, seed=seed), device=device,
                )  # fmt: skip
                results[f"L{depth}_D{dim}_s{seed}"] = [rec["val_acc_at_init"], rec["val_acc"]]
                print(depth, dim, seed, results[f"L{depth}_D{dim}_s{seed}"], f"{time.time() - t0:.0f} s")
            with open(out, "w") as f:
                json.dump(results, f, indent=0)
    return results


def report(results: dict) -> None:
    sizes = sorted({k.rsplit("_s", 1)[0] for k in results})
    seeds = sorted({int(k.rsplit("_s", 1)[1]) for k in results})
    proxy = [results[f"{s}_s{seeds[0]}"][0] for s in sizes]
    trained = [statistics.fmean(results[f"{s}_s{i}"][1] for i in seeds) for s in sizes]
    print(
        f"{len(sizes)} sizes, seeds {seeds}: Spearman(proxy, mean trained accuracy) = {spearman(proxy, trained):.3f}"
    )
    for i in seeds:
        print(f"  seed {i} alone: {spearman(proxy, [results[f'{s}_s{i}'][1] for s in sizes]):.3f}")
    top_p = max(range(len(sizes)), key=lambda i: proxy[i])
    top_t = max(range(len(sizes)), key=lambda i: trained[i])
    print(f"proxy's top size {sizes[top_p]}: trained {trained[top_p]:.1%}; best trained {sizes[top_t]}: "
          f"{trained[top_t]:.1%}")  # fmt: skip
    print("| size | sliced (proxy) | after the build's training, mean |\n|---|---|---|")
    for s, p, t in sorted(zip(sizes, proxy, trained), key=lambda x: -x[1]):
        print(f"| {s.replace('_', ' ')} | {p:.1%} | {t:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench_out/proxy_rank.json")
    parser.add_argument("--from", dest="source", help="a results file: print its statistics, train nothing")
    args = parser.parse_args()
    if args.source:
        with open(args.source) as f:
            results = json.load(f)
    else:
        results = measure([int(s) for s in args.seeds.split(",")], args.device, args.out)
    report(results)


if __name__ == "__main__":
    main()
