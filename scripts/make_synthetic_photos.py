"""Write an ImageFolder of random RGB JPEGs: the shape of the issue-18 example (884 images, 224 px, 8 classes)
for timing stage 1 (docs/wave.md, docs/recipe-224.md). Pixels are noise around one colour per class; a step's
time depends on the image count and geometry, not on the pixels. Deterministic for the same arguments.

    python scripts/make_synthetic_photos.py --out photos            # 884 JPEGs: 8 classes of 110 or 111
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
    parser.add_argument("--images", type=int, default=884)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=False)
    colours = rng.integers(40, 216, (args.classes, 3))
    for i in range(args.images):
        c = i % args.classes
        folder = args.out / f"class{c}"
        folder.mkdir(exist_ok=True)
        noise = rng.normal(0, 40, (args.size, args.size, 3))
        pixels = np.clip(colours[c][None, None] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:04d}.jpg", quality=90)


if __name__ == "__main__":
    main()
