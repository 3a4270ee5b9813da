"""Write a 224 px RGB ImageFolder made from the built-in MNIST-5k: the stand-in for a user's photos in
docs/recipe-224.md (nothing can be downloaded on the machine the recipe was measured on).

Each image is one MNIST digit, coloured (a random dark ink colour on a random light background per image, so
colour says nothing about the class) and resized to 224 x 224 (bicubic): a task of shapes, not colours, with
real handwriting. Classes are digit folders; per class the first ``--per-class`` images of that digit in the
asset's order. Deterministic: the same arguments write the same PNG files.

    python scripts/make_rgb_digits.py --out recipe/photos --classes 0,1,2,3,4,5,6,7 --per-class 80
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the ImageFolder to write (must not exist)")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7", help="digits to keep (one folder each)")
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from importlib import resources

    asset = resources.files("wave_deploy.assets") / "mnist_5k.npz"
    with resources.as_file(asset) as path, np.load(path, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]  # (5000, 28, 28) uint8, (5000,)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=False)
    for digit in (int(c) for c in args.classes.split(",")):
        folder = args.out / f"digit{digit}"
        folder.mkdir()
        for i, index in enumerate(np.flatnonzero(labels == digit)[: args.per_class]):
            fg, bg = rng.integers(0, 110, 3), rng.integers(150, 256, 3)  # dark ink, light background
            ink = images[index].astype(np.float32)[..., None] / 255.0  # (28, 28, 1)
            rgb = (ink * fg + (1.0 - ink) * bg).round().astype(np.uint8)
            Image.fromarray(rgb, "RGB").resize((args.size, args.size), Image.Resampling.BICUBIC).save(
                folder / f"{i:04d}.png"
            )
    print(
        f"wrote {args.out}: {len(args.classes.split(','))} classes x {args.per_class} images, {args.size} px RGB"
    )


if __name__ == "__main__":
    main()
