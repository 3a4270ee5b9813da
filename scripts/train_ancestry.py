"""Train the ancestry ViT for the default template bank on the built-in MNIST-5k train split (or, with
--data, a teacher on an ImageFolder's train split: docs/recipe-224.md's stand-in for a fine-tuned checkpoint).

    python scripts/train_ancestry.py --out artifacts/bank-recipe/ancestry.safetensors
    python scripts/train_ancestry.py --data recipe/photos --patch-size 16 --depth 6 --embed-dim 128 --heads 4 \
        --epochs 40 --batch-size 64 --warmup-steps 50 --out recipe/teacher.safetensors

The result is a folded timm checkpoint (safetensors, spec in its metadata) that
`wave-deploy templates build --teacher-checkpoint` reads. scripts/build_default_bank.sh runs both steps.
"""

from __future__ import annotations

import argparse
import logging

import torch

from wave_deploy.data import load, load_builtin
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import save_folded
from wave_deploy.training.loop import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=7)
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", help="comma-separated class indices to keep (default: all)")
    parser.add_argument("--data", help="an ImageFolder instead of the built-in MNIST-5k (its own image size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    torch.set_num_threads(args.threads)
    data = load_builtin(seed=args.seed) if args.data is None else load(args.data, seed=args.seed)
    if args.classes:
        data = data.select_classes([int(c) for c in args.classes.split(",")])
    spec = ViTSpec(
        depth=args.depth,
        embed_dim=args.embed_dim,
        num_heads=args.heads,
        patch_size=args.patch_size,
        img_size=data.info.img_size,
        in_chans=data.info.in_chans,
        num_classes=data.info.num_classes,
    )
    model = random_init(spec, seed=args.seed)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        label_smoothing=0.1,
        seed=args.seed,
        min_lr_ratio=0.01,
    )
    result = train(model, config, data.train_x, data.train_labels, data.val_x, data.val_labels)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    extra = {
        "val_accuracy": result.final_val_acc,
        "epochs": args.epochs,
        "steps": result.steps,
        "data": data.info.to_dict(),
        "seed": args.seed,
        "lr": args.lr,
    }
    save_folded(args.out, state, spec, extra)
    logging.getLogger("train_ancestry").info(
        "ancestry %s: val acc %.4f in %.0f s -> %s",
        spec.name,
        result.final_val_acc,
        result.wall_time_s,
        args.out,
    )


if __name__ == "__main__":
    main()
