"""Reading an ImageFolder's image files, with bounds checked before anything is decoded (DESIGN section 8).

The folder's listing (class folders, image files) is ``data_shape.list_image_folder``'s; ``read_images`` reads every file's header
(``Image.open`` reads only the header), refuses an image whose declared size exceeds ``MAX_IMAGE_PIXELS`` and a
set whose decoded pixels would not fit in this machine's memory, and only then decodes. An image that cannot be
read, or declares more pixels than the limit, is refused (``on_bad_image='error'``: InvalidInputError, exit 3,
naming the file) or skipped with a warning (``'skip'``); it is never decoded.
"""

from __future__ import annotations

import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

from wave_deploy import probe
from wave_deploy.data_shape import channels_of
from wave_deploy.errors import InvalidInputError

log = logging.getLogger(__name__)


# The most pixels one image may declare: 8192 x 8192 (64 Mi px, a 48 MP camera photo fits). Pillow's own
# limits are 89.5 M px (a warning) and 179 M px (an error): an image just under them would be decoded into
# 0.5 GiB of RGB (and converted, resized) before any size check. A ViT's input is at most a few hundred px.
MAX_IMAGE_PIXELS = 8192 * 8192
# Bytes per pixel value the loaded set holds: the uint8 images and their float32 normalised copy (train_x).
BYTES_PER_VALUE = 1 + 4


def _too_large(file: Path, size: tuple[int, int]) -> str | None:
    w, h = size
    if w * h <= MAX_IMAGE_PIXELS:
        return None
    return (
        f"image {file} declares {w} x {h} px ({w * h:,} px) in its header, more than the {MAX_IMAGE_PIXELS:,} px "
        "(8192 x 8192) an image may have; it was not decoded"
    )


def _check_memory(root: Path, n: int, img_size: int, in_chans: int) -> None:
    """InvalidInputError when the decoded set would not fit in this machine's memory (before allocating)."""
    need = n * img_size * img_size * in_chans * BYTES_PER_VALUE
    total_gib = probe.memory_gib()
    if total_gib is not None and need > total_gib * 2**30:
        raise InvalidInputError(
            f"the {n:,} images under {root} at {img_size} x {img_size} px x {in_chans} channel(s) need "
            f"{need / 2**30:,.1f} GiB in memory (uint8 and float32), more than this machine's {total_gib:g} GiB",
            hint="pass --img-size N to resize every image to N x N at load",
        )


def read_images(root: Path, files, img_size, in_chans, on_bad_image):
    """Decode [(path, label, is_train)] -> (N, C, H, W) uint8, (N,) labels, (N,) is_train, skipped paths."""
    from PIL import Image

    # What Pillow raises for unreadable files (UnidentifiedImageError and truncation are OSErrors).
    unreadable = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
    bad: list[str] = []

    def reject(file: Path, message: str) -> None:
        if on_bad_image == "error":
            raise InvalidInputError(message, hint="fix or delete that file")
        log.warning("skipping %s", message)
        bad.append(str(file))

    headers = []  # (path, label, is_train, (w, h), mode): Image.open reads the header only
    with warnings.catch_warnings():  # Pillow's bomb warning (> 89.5 M px): MAX_IMAGE_PIXELS is lower
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for file, label, is_train in files:
            try:
                with Image.open(file) as im:
                    size, mode = im.size, im.mode
            except unreadable as err:
                reject(file, f"cannot read image {file}: {err}")
                continue
            too_large = _too_large(file, size)
            if too_large:
                reject(file, too_large)
                continue
            headers.append((file, label, is_train, size, mode))
    sizes = sorted({h[3] for h in headers})
    if img_size is None:
        if len(sizes) > 1 or (sizes and sizes[0][0] != sizes[0][1]):
            found = ", ".join(f"{w}x{h}" for w, h in sizes[:4])
            raise InvalidInputError(
                f"images under {root} are not all the same square size (found {found})",
                hint="pass --img-size N to init or build to resize every image to N x N at load "
                "(from Python, load_image_folder(img_size=N))",
            )
        img_size = sizes[0][0] if sizes else 1
    if in_chans is None:
        in_chans = channels_of(h[4] for h in headers)  # the probe's rule too (data_shape)
    _check_memory(root, len(headers), img_size, in_chans)

    pixels = np.zeros((len(headers), img_size, img_size, in_chans), np.uint8)  # (N, H, W, C)
    kept: list[tuple[int, bool]] = []
    for file, label, is_train, _, _ in headers:
        try:
            with Image.open(file) as im:  # decoding happens here: truncated files fail now
                too_large = _too_large(file, im.size)  # (the file may have changed since its header was read)
                if too_large:
                    reject(file, too_large)
                    continue
                im = im.convert("L" if in_chans == 1 else "RGB")
                if im.size != (img_size, img_size):
                    im = im.resize((img_size, img_size), Image.Resampling.BILINEAR)
                pixels[len(kept)] = np.asarray(im, dtype=np.uint8).reshape(img_size, img_size, in_chans)
        except unreadable as err:
            reject(file, f"cannot read image {file}: {err}")
            continue
        kept.append((label, is_train))
    images = torch.from_numpy(pixels[: len(kept)]).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    labels = torch.tensor([k[0] for k in kept], dtype=torch.int64)
    return images, labels, torch.tensor([k[1] for k in kept], dtype=torch.bool), tuple(bad)
