"""WAVE vs tuned random init vs weight selection at matched training compute, several seeds, on the built-in
MNIST-5k or any ImageFolder (--data; a new task: WAVE and weight selection get fresh heads).

    python benchmarks/paper_claims.py compute --sizes 2x64,4x64,6x128 --seeds 0,1,2 --budget 20 \
        --out bench_out/matched.jsonl                       # runs (resumable), then prints the tables
    python benchmarks/paper_claims.py table --out bench_out/matched.jsonl   # the tables from a results file
    python benchmarks/paper_claims.py storage               # bank bytes vs the models it initializes

Compute: every method gets m x B dense steps' worth of training FLOPs (3 x forward FLOPs per image, from the
spec; WAVE's scaler steps also pay the bank's auxiliary-model forward when they distil), m in --multiples.
Random init sweeps --rates at seed 0 and keeps the best rate per size and m for the other seeds; WAVE's
stage-2 recipes (--recipes) are compared the same way, and weight selection's dense rates (--lr; a second run
with another --lr adds a rate, the seed-0 best is kept).
Weight selection needs the bank's ancestry: --ancestry, else it is retrained from the bank's provenance recipe
(bench_out/ancestry.safetensors). Output: one JSON line per cell in --out, progress on stderr, markdown
tables on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claims_tables
import matched_compute as mc

from wave_deploy.data import load_builtin, load_for_bank
from wave_deploy.fileio import sha256_file
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import load_folded_file
from wave_deploy.wave.bank import TemplateBank, default_bank_path


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        depth, _, dim = part.strip().lower().lstrip("l").partition("x")
        sizes.append((int(depth), int(dim.lstrip("d"))))
    return sizes


def load_data(args, bank: TemplateBank, seed: int):
    if args.data:
        g = bank.geometry
        return load_for_bank(args.data, in_chans=g.in_chans, img_size=g.img_size, seed=seed)
    return load_builtin(seed=seed)


def ancestry_path(args) -> Path:
    """Where the bank's ancestry is (--ancestry) or will be rebuilt (next to the results file)."""
    return Path(args.ancestry) if args.ancestry else Path(args.out).parent / "ancestry.safetensors"


def ensure_ancestry(args, bank: TemplateBank) -> Path:
    """The bank's ancestry: --ancestry, a cached rebuild, or a rebuild now with the provenance's recipe."""
    path = ancestry_path(args)
    if args.ancestry or path.is_file():
        return path
    import runpy

    anc = bank.provenance.get("ancestry", {})
    spec = anc.get("spec") or bank.aux_spec.to_dict()
    argv = ["--out", str(path), "--depth", str(spec["depth"]), "--embed-dim", str(spec["embed_dim"])]
    argv += ["--heads", str(spec["num_heads"]), "--patch-size", str(spec["patch_size"])]
    argv += ["--epochs", str(anc.get("epochs", 30)), "--lr", str(anc.get("lr", 1e-3)), "--seed", "0"]
    print(f"rebuilding the ancestry: train_ancestry.py {' '.join(argv)}", file=sys.stderr, flush=True)
    script = Path(__file__).resolve().parent.parent / "scripts" / "train_ancestry.py"
    old, sys.argv = sys.argv, ["train_ancestry.py", *argv]
    try:
        runpy.run_path(str(script), run_name="ancestry")["main"]()
    finally:
        sys.argv = old
    return path


def plan_cells(args, specs) -> list[tuple]:
    """(kind, arg, spec, m, seed) in run order: m ascending, then size, seed 0's sweeps before other seeds.
    For seeds > 0 the arg is None: chosen from seed 0's results when the cell runs."""
    cells = []
    for m in args.multiples:
        for spec in specs:
            s0 = args.seeds[0]
            cells += [("random", lr, spec, m, s0) for lr in args.rates]
            cells += [("wave", r, spec, m, s0) for r in args.recipes]
            cells.append(("ws", args.lr, spec, m, s0))
            for seed in args.seeds[1:]:
                cells += [("random", None, spec, m, seed), ("wave", None, spec, m, seed)]
                cells.append(("ws", None, spec, m, seed))
    return cells


def step_seconds(spec, data, batch: int) -> float:
    """Seconds per dense step of ``spec`` on this machine now (3 timed steps after 1 warm-up)."""
    model = random_init(spec, 0)
    mc.dense_train(model, data, 1, 5e-4, 0, batch)
    t0 = time.perf_counter()
    mc.dense_train(model, data, 3, 5e-4, 0, batch)
    return (time.perf_counter() - t0) / 3


def compute(args) -> None:
    bank = TemplateBank.load(args.templates or default_bank_path())
    data0 = load_data(args, bank, args.seeds[0])
    new_task = mc.new_task_for(bank, data0.info.class_names)
    specs = [
        bank.geometry.make_spec(d, e, num_classes=data0.info.num_classes) for d, e in parse_sizes(args.sizes)
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    anc_path = ancestry_path(args)
    rebuild = not anc_path.is_file()
    # weight selection's cells are only reused when they came from this very ancestry (none, before a rebuild)
    anc_sha = "" if rebuild else sha256_file(anc_path)[:16]
    done = claims_tables.for_ancestry(claims_tables.read_results(out), anc_sha)
    cells = plan_cells(args, specs)
    todo = [c for c in cells if not claims_tables.is_done(c, done, args.seeds[0])]
    per_step = {s.name: step_seconds(s, data0, args.batch) for s in specs}
    est = sum(per_step[c[2].name] * c[3] * args.budget for c in todo)
    if rebuild:  # the provenance's ancestry steps at the auxiliary model's step time
        anc_steps = bank.provenance.get("ancestry", {}).get("steps", 1050)
        est += anc_steps * step_seconds(bank.aux_spec, data0, args.batch)
    print(
        f"{len(cells)} cells ({len(cells) - len(todo)} already in {out}); estimated {est / 60:.1f} min"
        f"{' including the ancestry rebuild' if rebuild else ''} "
        f"(dense step: " + ", ".join(f"{k} {v:.2f} s" for k, v in per_step.items()) + ")",
        file=sys.stderr,
        flush=True,
    )
    anc_path = ensure_ancestry(args, bank)
    anc_sha = sha256_file(anc_path)[:16]
    ancestry, anc_spec, anc_meta = load_folded_file(anc_path)
    ctx = SimpleNamespace(
        bank=bank, recipe=mc.Recipe(batch=args.batch, lr=args.lr), budget=args.budget, new_task=new_task,
        ancestry=ancestry.state_dict(), ancestry_spec=anc_spec, data=data0,
    )  # fmt: skip
    header = {"kind": "meta", "data": data0.info.name, "fingerprint": data0.info.fingerprint,
              "budget": args.budget, "batch": args.batch, "lr": args.lr, "ancestry": str(anc_path),
              "bank_cost": mc.bank_cost(bank), "new_task": new_task, "threads": args.threads,
              "ancestry_sha256": anc_sha, "ancestry_acc": anc_meta.get("val_accuracy")}  # fmt: skip
    if not any(r.get("kind") == "meta" for r in done):
        claims_tables.append(out, header)
    t_start = time.perf_counter()
    for i, (kind, arg, spec, m, seed) in enumerate(todo):
        results = claims_tables.for_ancestry(claims_tables.read_results(out), anc_sha)
        if claims_tables.is_done((kind, arg, spec, m, seed), results, args.seeds[0]):
            continue  # decided by a seed-0 result that arrived after planning
        if arg is None:
            arg = claims_tables.best_arg(results, kind, f"L{spec.depth} D{spec.embed_dim}", m, args.seeds[0])
        if seed != ctx.data.info.seed:
            ctx.data = load_data(args, bank, seed)
        row = mc.cell(kind, arg, spec, m, seed, ctx)
        if kind == "ws":
            row["ancestry_sha256"] = anc_sha
        claims_tables.append(out, row)
        elapsed = time.perf_counter() - t_start
        print(
            f"[{i + 1}/{len(todo)}] {row['size']} {m}x seed {seed} {kind}({arg}): acc {row['acc']:.1%}, "
            f"{row['flops'] / 1e12:.3f} TFLOP, {row['wall_s']:.0f} s (elapsed {elapsed / 60:.1f} min)",
            file=sys.stderr,
            flush=True,
        )
    print(claims_tables.render(claims_tables.read_results(out), args.seeds))


def storage(args) -> None:
    claims_tables.storage(args.templates or default_bank_path(), parse_sizes(args.sizes))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )  # fmt: skip
    parser.add_argument("what", nargs="?", default="compute", choices=["compute", "table", "storage"])
    parser.add_argument("--data", help="ImageFolder directory (default: the built-in MNIST-5k)")
    parser.add_argument("--sizes", default="2x64,4x64,6x128", help="DEPTHxWIDTH,... (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; the first runs the sweeps")
    parser.add_argument("--budget", type=int, default=20, help="B in dense steps at --batch (default 20)")
    parser.add_argument("--multiples", default="1,5,15", help="compute levels m (x B), default %(default)s")
    parser.add_argument("--rates", default="5e-4,1e-3,2e-3", help="random init's learning-rate sweep")
    parser.add_argument("--recipes", default="dense,labels,distill", help="WAVE stage-2 recipes compared")
    parser.add_argument("--lr", type=float, default=5e-4, help="dense rate of WAVE and weight selection")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--templates", help="bank (default: the shipped one)")
    parser.add_argument("--ancestry", help="the bank's ancestry checkpoint (default: retrained, cached)")
    parser.add_argument("--out", default="bench_out/matched.jsonl", help="results file (JSON lines; resumes)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.multiples = [int(m) for m in args.multiples.split(",")]
    args.rates = [float(r) for r in args.rates.split(",")]
    args.recipes = [r.strip() for r in args.recipes.split(",")]
    unknown = [r for r in args.recipes if r not in mc.WAVE_RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {sorted(mc.WAVE_RECIPES)}")
    torch.set_num_threads(args.threads)
    if args.what == "storage":
        storage(args)
    elif args.what == "table":
        print(claims_tables.render(claims_tables.read_results(Path(args.out)), args.seeds))
    else:
        compute(args)


if __name__ == "__main__":
    main()
