"""Check WAVE's claims on the built-in MNIST-5k: compute (init + budget B vs random init at B, 5B, 15B and
weight selection at B), storage (bank bytes vs the models it initializes) and transfer (a task the bank never
saw, given as --transfer-classes: the bank's classes are the others).

    python benchmarks/paper_claims.py compute --ancestry artifacts/bank-recipe/ancestry.safetensors
    python benchmarks/paper_claims.py storage
    python benchmarks/paper_claims.py strategies     # stage-2 scaler start: aux slice vs random
    python benchmarks/paper_claims.py transfer --templates BANK_BUILT_ON_0_4 --ancestry ANCESTRY_0_4 \
        --classes 5,6,7,8,9

Budgets are optimizer steps at batch 128 (one epoch of the 4,500-image train split is 35 steps). Every method
trains the same timm VisionTransformer with the same dense recipe (AdamW, lr 5e-4, 10% warmup, cosine, label
smoothing 0.1); WAVE adds its scaler phase (reported separately, in steps). Output: markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from wave_deploy.baselines import random_init, weight_selection
from wave_deploy.data import load_builtin
from wave_deploy.folding import load_folded_file
from wave_deploy.training import TrainConfig, evaluate, train
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.init import DensePhase, ScalerPhase, initialize

SIZES = [(2, 64), (4, 96), (3, 128), (6, 64), (6, 128)]


def dense_config(steps: int, seed: int, eval_every: int | None = None) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=128,
        lr=5e-4,
        warmup_steps=max(1, steps // 10),
        min_lr_ratio=0.01,
        label_smoothing=0.1,
        seed=seed,
        eval_every=eval_every,
    )


def train_dense(model, data, steps: int, seed: int, eval_every: int | None = None):
    result = train(
        model,
        dense_config(steps, seed, eval_every),
        data.train_x,
        data.train_labels,
        data.val_x,
        data.val_labels,
    )
    return result


def val_acc(model, data) -> float:
    return evaluate(model, data.val_x, data.val_labels, 512, torch.device("cpu"))[1]


def compute(args) -> None:
    data = load_builtin(seed=args.seed)
    if args.classes:
        data = data.select_classes([int(c) for c in args.classes.split(",")])
    bank = TemplateBank.load(args.templates or default_bank_path())
    teacher, teacher_spec, _ = load_folded_file(args.ancestry) if args.ancestry else (None, None, None)
    B = args.budget
    print(
        f"data {data.info.name}: {data.info.train_count} train / {data.info.val_count} val; budget B = {B} steps "
        f"(batch 128); WAVE scaler phase {args.scaler_steps} steps; seed {args.seed}\n"
    )
    if args.only_wave:
        print("| size | WAVE@0 (sliced, no training) | WAVE@B |\n|---|---|---|")
    else:
        print(
            "| size | params | WAVE@0 (sliced, no training) | WAVE@B | weight sel.@B | random@B | random@5B | "
            "random@15B | random steps to reach WAVE@B |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
    for depth, dim in SIZES:
        spec = bank.geometry.make_spec(depth, dim, num_classes=data.info.num_classes)
        t0 = time.perf_counter()
        model, record = initialize(
            bank,
            spec,
            data,
            scaler=ScalerPhase(steps=args.scaler_steps, seed=args.seed),
            dense=DensePhase(steps=0, seed=args.seed),
        )
        wave_b = val_acc_after(model, data, B, args.seed)
        row = {"wave0": record["val_acc_at_init"], "wave": wave_b}
        if args.only_wave:  # ablations of the bank: the baselines do not depend on it
            print(f"| L{depth} D{dim} | {row['wave0']:.1%} | {row['wave']:.1%} |", flush=True)
            continue
        if teacher is not None and spec.num_classes == teacher_spec.num_classes:
            ws = weight_selection(teacher, teacher_spec, spec, seed=args.seed)
            row["ws"] = val_acc_after(ws, data, B, args.seed)
        else:
            row["ws"] = None
        for mult in (1, 5):
            row[f"r{mult}"] = val_acc_after(random_init(spec, seed=args.seed), data, mult * B, args.seed)
        curve = train_dense(
            random_init(spec, seed=args.seed), data, 15 * B, args.seed, eval_every=max(1, B // 2)
        )
        row["r15"] = curve.final_val_acc
        reach = next((r.step for r in curve.history if r.val_acc is not None and r.val_acc >= wave_b), None)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"| L{depth} D{dim} | {params / 1e6:.2f}M | {row['wave0']:.1%} | {row['wave']:.1%} | "
            f"{_pct(row['ws'])} | {row['r1']:.1%} | {row['r5']:.1%} | {row['r15']:.1%} | "
            f"{reach if reach is not None else f'> {15 * B}'} |  <!-- {time.perf_counter() - t0:.0f} s -->",
            flush=True,
        )


def strategies(args) -> None:
    """Stage-2 scaler start: slicing the bank's auxiliary scalers vs random scalers, same budgets."""
    data = load_builtin(seed=args.seed)
    bank = TemplateBank.load(args.templates or default_bank_path())
    B = args.budget
    print(f"scaler phase {args.scaler_steps} steps, then {B} dense steps (batch 128), seed {args.seed}\n")
    print(
        "| size | aux: at init | aux: after scalers | aux: after B | random: at init | random: after scalers "
        "| random: after B |"
    )
    print("|---|---|---|---|---|---|---|")
    for depth, dim in SIZES:
        spec = bank.geometry.make_spec(depth, dim)
        cells = []
        for strategy in ("aux", "random"):
            model, rec = initialize(
                bank,
                spec,
                data,
                strategy=strategy,
                scaler=ScalerPhase(steps=args.scaler_steps, seed=args.seed),
                dense=DensePhase(steps=0, seed=args.seed),
            )
            after = val_acc_after(model, data, B, args.seed)
            cells += [rec["val_acc_at_init"], rec["val_acc"], after]
        print(f"| L{depth} D{dim} | " + " | ".join(f"{c:.1%}" for c in cells) + " |", flush=True)


def val_acc_after(model, data, steps: int, seed: int) -> float:
    if steps:
        train_dense(model, data, steps, seed)
    return val_acc(model, data)


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def storage(args) -> None:
    from wave_deploy.spec import param_count

    path = args.templates or default_bank_path()
    bank = TemplateBank.load(path)
    g = bank.geometry
    tmpl = sum(t.numel() * t.element_size() for t in bank.templates.values())
    aux = sum(t.numel() * t.element_size() for t in bank.aux_scalers.values())
    specs = [g.make_spec(d, e) for d, e in SIZES]
    models = sum(4 * param_count(s) for s in specs)
    path = Path(path)
    print(
        f"bank {path}: templates {tmpl:,} B + auxiliary scalers {aux:,} B = {tmpl + aux:,} B "
        f"(file {path.stat().st_size:,} B)\n"
    )
    print("| what | bytes (fp32) |\n|---|---|")
    for s in specs:
        print(f"| L{s.depth} D{s.embed_dim} model | {4 * param_count(s):,} |")
    print(f"| the {len(specs)} models above | {models:,} |")
    print(f"| the bank | {tmpl + aux:,} |")
    print(f"| ratio models / bank | {models / (tmpl + aux):.1f}x |")
    every = [g.make_spec(d, e) for d in range(1, g.max_depth + 1) for e in g.valid_embed_dims()]
    total = sum(4 * param_count(s) for s in every)
    print(f"| all {len(every)} sizes the bank serves / bank | {total / (tmpl + aux):.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["compute", "storage", "transfer", "strategies"])
    parser.add_argument("--templates", type=str, help="bank (default: the shipped one)")
    parser.add_argument("--ancestry", type=str, help="folded ancestry checkpoint (for weight selection)")
    parser.add_argument(
        "--classes", type=str, help="comma-separated class subset (transfer: classes unseen by the bank)"
    )
    parser.add_argument("--budget", type=int, default=35, help="B in optimizer steps (35 = one epoch)")
    parser.add_argument("--scaler-steps", type=int, default=35)
    parser.add_argument(
        "--only-wave", action="store_true", help="compute: WAVE columns only (bank ablations)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "storage":
        storage(args)
    elif args.what == "strategies":
        strategies(args)
    else:
        if args.what == "transfer" and not args.classes:
            parser.error("transfer needs --classes (the classes the bank was not built on)")
        compute(args)


if __name__ == "__main__":
    main()
