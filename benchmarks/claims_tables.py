"""Results file (JSON lines) and markdown tables of benchmarks/paper_claims.py."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

NAMES = {"wave": "WAVE", "ws": "weight selection", "random": "random init"}


def read_results(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def for_ancestry(results: list[dict], sha: str | None) -> list[dict]:
    """The rows that belong to the ancestry whose sha256 starts with ``sha``: every random-init and WAVE row,
    weight selection's rows made from that ancestry, and its meta row (weight selection *is* the ancestry at
    full size: cells made from different retrains are never mixed)."""
    if sha is None:
        return results
    return [r for r in results if r.get("kind") not in ("ws", "meta") or r.get("ancestry_sha256") == sha]


def latest_ancestry(results: list[dict]) -> str | None:
    """The ancestry of the newest meta row (None: a results file from before ancestries were recorded)."""
    metas = [r for r in results if r.get("kind") == "meta"]
    return metas[-1].get("ancestry_sha256") if metas else None


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def _size(spec) -> str:
    return f"L{spec.depth} D{spec.embed_dim}"


def key(cell) -> tuple:
    kind, arg, spec, m, seed = cell
    return (kind, "*" if arg is None else str(arg), _size(spec), m, seed)


def key_of(row: dict) -> tuple:
    return (row.get("kind"), str(row.get("arg")), row.get("size"), row.get("m"), row.get("seed"))


def is_done(cell, results: list[dict], seed0: int) -> bool:
    """A planned cell has a result; one whose arg is chosen from seed 0 (None) is judged with today's choice."""
    kind, arg, spec, m, seed = cell
    if arg is None:
        try:
            arg = best_arg(results, kind, _size(spec), m, seed0)
        except ValueError:
            return False
    k = key((kind, arg, spec, m, seed))
    return any(key_of(r) == k for r in results)


def best_arg(results: list[dict], kind: str, size: str, m: int, seed0: int):
    rows = [
        r for r in results if r.get("kind") == kind and (r["size"], r["m"], r["seed"]) == (size, m, seed0)
    ]
    if not rows:
        raise ValueError(f"no seed-{seed0} result for {kind} {size} {m}x to choose from")
    return max(rows, key=lambda r: r["acc"])["arg"]


def _cells(results, kind, size, m, seed0):
    """The chosen arg's rows over seeds for (kind, size, m): seed 0's best arg, then the other seeds' rows."""
    rows = [r for r in results if r.get("kind") == kind and r["size"] == size and r["m"] == m]
    if not rows or not any(r["seed"] == seed0 for r in rows):
        return None, []
    arg = best_arg(results, kind, size, m, seed0)
    picked = [r for r in rows if r["seed"] == seed0 and str(r["arg"]) == str(arg)]
    picked += [r for r in rows if r["seed"] != seed0 and str(r["arg"]) == str(arg)]
    return arg, picked


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "not measured"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:.1%} ± {sd:.1%} (n={len(values)})" if len(values) > 1 else f"{mean:.1%} (n=1)"


def _mean(values):
    return statistics.fmean(values) if values else None


def render(results: list[dict], seeds: list[int]) -> str:
    results = for_ancestry(results, latest_ancestry(results))
    meta = next((r for r in results if r.get("kind") == "meta"), {})
    rows = [r for r in results if r.get("kind") != "meta"]
    seed0 = seeds[0]
    budget, batch = meta.get("budget"), meta.get("batch")
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    mults = sorted({r["m"] for r in rows})
    lines = [f"data {meta.get('data')}; B = {budget} dense steps at batch {batch}; seeds {seeds}"]
    if meta.get("ancestry_sha256"):
        acc = meta.get("ancestry_acc")
        lines.append(
            f"weight selection's ancestry: sha256 {meta['ancestry_sha256']}..., val accuracy "
            f"{'unknown' if acc is None else f'{acc:.1%}'}"
        )
    lines[-1] += "\n"
    for m in mults:
        lines.append(
            f"Matched compute {m}x B = {m * (budget or 0)} dense-step equivalents at batch {batch}: at matched compute every "
            f"method gets the same training FLOPs (3 x forward per image, teacher forwards included); mean ± std over "
            f"seeds {seeds} (n = seeds measured). WAVE: slice of the shipped bank, then its seed-{seed0}-best "
            "stage-2 recipe (see the recipe table); weight selection: the ancestry's first N layers and uniform "
            f"channels, fresh head on a new task, its seed-{seed0}-best dense rate; random init: timm init, the "
            f"seed-{seed0}-best rate of the sweep. All: AdamW, 10% warmup, cosine, label smoothing 0.1.\n"
        )
        lines.append(
            "| size | TFLOP per method | WAVE (recipe) | weight selection (lr) | random init (lr) | WAVE - w.s. | "
            "WAVE - random | wall s: WAVE / w.s. / random |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for size in sizes:
            got = {k: _cells(rows, k, size, m, seed0) for k in ("wave", "ws", "random")}
            if not any(v[1] for v in got.values()):
                continue
            accs = {k: [r["acc"] for r in v[1]] for k, v in got.items()}
            flops = max((r["flops"] for v in got.values() for r in v[1]), default=0)
            diff = [
                f"{(_mean(accs['wave']) - _mean(accs[o])) * 100:+.1f} pt"
                if accs["wave"] and accs[o] else "n/a" for o in ("ws", "random")
            ]  # fmt: skip
            walls = " / ".join(
                f"{_mean([r['wall_s'] for r in got[k][1]]):.0f}" if got[k][1] else "-"
                for k in ("wave", "ws", "random")
            )
            lines.append(
                f"| {size} | {flops / 1e12:.3f} | {_mean_sd(accs['wave'])} ({got['wave'][0]}) | "
                f"{_mean_sd(accs['ws'])} (lr {got['ws'][0]}) | {_mean_sd(accs['random'])} (lr {got['random'][0]}) | "
                f"{diff[0]} | {diff[1]} | {walls} |"
            )
        lines.append("")
    lines += _sweeps(rows, sizes, mults, seed0)
    lines += _bank(meta, rows, sizes, seed0)
    return "\n".join(lines)


def _sweeps(rows, sizes, mults, seed0) -> list[str]:
    out = []
    for kind, title in (
        ("random", "Random init learning-rate sweep"),
        ("ws", "Weight selection dense rates"),
        ("wave", "WAVE stage-2 recipes"),
    ):
        args = list(dict.fromkeys(str(r["arg"]) for r in rows if r["kind"] == kind and r["seed"] == seed0))
        if not args:
            continue
        out.append(f"{title} (seed {seed0}, matched compute; val accuracy" +
                   ("; scaler steps / dense steps" if kind == "wave" else "") + ")\n")  # fmt: skip
        out.append("| size | m | " + " | ".join(args) + " |")
        out.append("|---|---|" + "---|" * len(args))
        for size in sizes:
            for m in mults:
                cells = []
                for a in args:
                    r = next((r for r in rows if (r["kind"], str(r["arg"]), r["size"], r["m"], r["seed"])
                              == (kind, a, size, m, seed0)), None)  # fmt: skip
                    if r is None:
                        cells.append("-")
                    elif kind == "wave":
                        cells.append(f"{r['acc']:.1%} ({r['scaler_steps']} / {r['dense_steps']})")
                    else:
                        cells.append(f"{r['acc']:.1%}")
                if any(c != "-" for c in cells):
                    out.append(f"| {size} | {m}x | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _bank(meta, rows, sizes, seed0) -> list[str]:
    cost = meta.get("bank_cost")
    if not cost:
        return []
    total = cost["ancestry_flops"] + cost["stage1_flops"]
    n = cost["sizes_served"]
    out = [
        "The bank's one-time cost (from its provenance; analytic FLOPs at the schedule's batch)\n",
        "| part | steps | TFLOP |",
        "|---|---|---|",
        f"| ancestry | {cost['ancestry_steps']} | {cost['ancestry_flops'] / 1e12:.2f} |",
        f"| elastic stage 1 | {cost['stage1_steps']} | {cost['stage1_flops'] / 1e12:.2f} |",
        f"| total | | {total / 1e12:.2f} |",
        f"| amortized over the {n} sizes it serves | | {total / n / 1e12:.3f} per size |",
        "",
    ]
    out += _break_even(rows, sizes, seed0, total)
    wave0 = {}
    for r in rows:
        if r["kind"] == "wave" and "acc_at_init" in r:
            wave0.setdefault(r["size"], r["acc_at_init"])
    if wave0:
        out.append("WAVE@0 (the sliced model, no stage-2 training): " +
                   ", ".join(f"{s} {a:.1%}" for s, a in wave0.items()) + "\n")  # fmt: skip
    return out


def _break_even(rows, sizes, seed0, bank_flops) -> list[str]:
    """Per size: the FLOPs random init needs beyond WAVE's 1x to reach WAVE@1x (mean over seeds), hence the
    number of sizes after which the bank has paid for itself."""
    savings, lines = [], []
    for size in sizes:
        wave = [r["acc"] for r in _cells(rows, "wave", size, 1, seed0)[1]]
        if not wave:
            continue
        one = max(r["flops"] for r in rows if r["size"] == size and r["m"] == 1)
        mults = sorted({r["m"] for r in rows if r["size"] == size and r["kind"] == "random"})
        reach = next((m for m in mults if (acc := _mean([r["acc"] for r in _cells(rows, "random", size, m,
                     seed0)[1]])) is not None and acc >= _mean(wave)), None)  # fmt: skip
        if reach is None:
            saved, text = (mults[-1] - 1) * one, f"not reached by {mults[-1]}x: saves > {mults[-1] - 1}x B"
        else:
            saved, text = (reach - 1) * one, f"reached at {reach}x: saves {reach - 1}x B"
        savings.append(saved)
        lines.append(f"| {size} | {_mean(wave):.1%} | {text} = {saved / 1e12:.3f} TFLOP |")
    if not savings or not _mean(savings):
        return []
    n = bank_flops / _mean(savings)
    return [
        "Break-even: random init's compute to reach WAVE@1x (means over seeds, measured multiples only)\n",
        "| size | WAVE@1x | random init |",
        "|---|---|---|",
        *lines,
        "",
        (
            f"Break-even n = bank FLOPs / mean saving per size = {n:.0f} sizes (an upper bound where a "
            "saving is a lower bound).\n"
        ),
    ]


def storage(path, sizes) -> None:
    from wave_deploy.spec import param_count
    from wave_deploy.wave.bank import TemplateBank

    bank = TemplateBank.load(path)
    g = bank.geometry
    tmpl = sum(t.numel() * t.element_size() for t in bank.templates.values())
    aux = sum(t.numel() * t.element_size() for t in bank.aux_scalers.values())
    specs = [g.make_spec(d, e) for d, e in sizes]
    models = sum(4 * param_count(s) for s in specs)
    print(
        f"bank {path}: templates {tmpl:,} B + auxiliary scalers {aux:,} B = {tmpl + aux:,} B "
        f"(file {Path(path).stat().st_size:,} B)\n"
    )
    print("| what | bytes (fp32) |\n|---|---|")
    for s in specs:
        print(f"| L{s.depth} D{s.embed_dim} model | {4 * param_count(s):,} |")
    print(f"| the {len(specs)} models above | {models:,} |\n| the bank | {tmpl + aux:,} |")
    print(f"| ratio models / bank | {models / (tmpl + aux):.1f}x |")
    every = [g.make_spec(d, e) for d in range(1, g.max_depth + 1) for e in g.valid_embed_dims()]
    total = sum(4 * param_count(s) for s in every)
    print(f"| all {len(every)} sizes the bank serves / bank | {total / (tmpl + aux):.1f}x |")
