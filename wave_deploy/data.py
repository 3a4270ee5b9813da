"""Datasets: the built-in MNIST subset and ImageFolder trees, held in memory as tensors (DESIGN section 8).

A ``Dataset`` keeps uint8 images (N, C, H, W) and int64 labels for a train and a val split, plus a
``DatasetInfo`` record: classes, sizes, the normalisation (per-channel mean/std on the 0..1 scale, computed
on the train split) and a content fingerprint (sha256 over class names and the split tensors) for caching.
``Dataset.train_x`` / ``val_x`` are the normalised float32 tensors the training code indexes.

Splits are fixed by content, never by the seed (the seed only orders training batches): the built-in data's
validation split is exactly the 500 images listed in assets/mnist_5k_val_sha256.json (the ones the shipped bank
and its ancestry never trained on); an ImageFolder without train/ and val/ puts, per class, the
round(n * val_fraction) images (at least 1, at most n - 1) with the smallest sha256 of their pixel bytes into
val. Both splits keep file order.
Derived views (``subset``, ``select_classes``) keep the source's normalisation, so a model trained on a view
sees inputs on the same scale as one trained on the whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wave_deploy.data_shape import BUILTIN_SOURCE, DataShape, list_image_folder, probe_data
from wave_deploy.errors import InvalidInputError
from wave_deploy.image_files import read_images

log = logging.getLogger(__name__)

BUILTIN_VAL_FRACTION = 0.1  # the fixed validation split (500 images) is this fraction


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str  # a directory path, or BUILTIN_SOURCE
    class_names: tuple[str, ...]
    img_size: int  # images are img_size x img_size
    in_chans: int  # 1 (L) or 3 (RGB)
    mean: tuple[float, ...]  # per channel, 0..1 scale, from the train split
    std: tuple[float, ...]
    split: Literal[
        "content", "seeded", "explicit"
    ]  # content: by image hash here (seeded: older releases); explicit: folders
    seed: int
    val_fraction: float | None  # None for an explicit split
    train_per_class: tuple[int, ...]
    val_per_class: tuple[int, ...]
    fingerprint: str  # sha256 of class names + split tensors
    skipped: tuple[str, ...] = ()  # unreadable images skipped (on_bad_image='skip')
    derived_from: str | None = None  # fingerprint of the dataset this view was cut from

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_count(self) -> int:
        return sum(self.train_per_class)

    @property
    def val_count(self) -> int:
        return sum(self.val_per_class)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(num_classes=self.num_classes, train_count=self.train_count, val_count=self.val_count)
        return out


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    train_images: torch.Tensor  # (N, C, H, W) uint8
    train_labels: torch.Tensor  # (N,) int64
    val_images: torch.Tensor  # (M, C, H, W) uint8
    val_labels: torch.Tensor  # (M,) int64
    info: DatasetInfo

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Dataset({i.name}: {i.train_count} train / {i.val_count} val, {i.num_classes} classes, "
            f"{i.in_chans}x{i.img_size}x{i.img_size}, fingerprint {i.fingerprint[:12]})"
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 -> float32 with this dataset's mean/std."""
        mean = torch.tensor(self.info.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.to(torch.float32) / 255.0 - mean) / std

    @cached_property
    def train_x(self) -> torch.Tensor:
        return self.normalize(self.train_images)  # (N, C, H, W) float32

    @cached_property
    def val_x(self) -> torch.Tensor:
        return self.normalize(self.val_images)  # (M, C, H, W) float32

    def subset(
        self, n_per_class: int | None = None, *, fraction: float | None = None, seed: int = 0
    ) -> Dataset:
        """A deterministic per-class sample of the train split (val is kept whole), for small-budget phases.

        Exactly one of ``n_per_class`` (capped at each class's count) or ``fraction`` (at least 1 per class).
        """
        if (n_per_class is None) == (fraction is None):
            raise InvalidInputError("subset() takes exactly one of n_per_class or fraction")
        if n_per_class is not None and (isinstance(n_per_class, bool) or n_per_class < 1):
            raise InvalidInputError(f"subset n_per_class must be a positive integer, got {n_per_class!r}")
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise InvalidInputError(f"subset fraction must be in (0, 1], got {fraction!r}")
        keep = []
        for c in range(self.info.num_classes):
            idx = torch.nonzero(self.train_labels == c).flatten().numpy()
            if n_per_class is not None:
                k = min(n_per_class, len(idx))
            else:
                k = max(1, round(len(idx) * (fraction or 0.0)))  # fraction is set: checked above
            keep.append(np.sort(np.random.default_rng([seed, c]).permutation(idx)[:k]))
        keep_t = torch.from_numpy(np.sort(np.concatenate(keep)))
        tag = f"n{n_per_class}" if n_per_class is not None else f"f{fraction:g}"
        return self._derive(
            f"{self.info.name}[subset {tag} seed {seed}]",
            self.train_images[keep_t], self.train_labels[keep_t], self.val_images, self.val_labels,
            self.info.class_names,
        )  # fmt: skip

    def select_classes(self, classes: Sequence[int | str]) -> Dataset:
        """Keep only ``classes`` (indices or names), relabelled 0..k-1 in the order given."""
        names = self.info.class_names
        picked = []
        for c in classes:
            index = names.index(c) if isinstance(c, str) and c in names else c
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(names):
                raise InvalidInputError(f"unknown class {c!r}; classes are {list(names)}")
            picked.append(index)
        if len(set(picked)) != len(picked) or len(picked) < 2:
            raise InvalidInputError(f"select_classes needs at least 2 distinct classes, got {list(classes)}")
        remap = torch.full((len(names),), -1, dtype=torch.int64)
        remap[torch.tensor(picked)] = torch.arange(len(picked))
        tr, va = remap[self.train_labels], remap[self.val_labels]
        return self._derive(
            f"{self.info.name}[classes {','.join(names[i] for i in picked)}]",
            self.train_images[tr >= 0], tr[tr >= 0], self.val_images[va >= 0], va[va >= 0],
            tuple(names[i] for i in picked),
        )  # fmt: skip

    def resized(self, img_size: int) -> Dataset:
        """Both splits resized to ``img_size`` x ``img_size`` (bilinear, antialiased when shrinking, rounded
        back to uint8), keeping the source's normalisation; done once, so every epoch reads cached pixels."""
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise InvalidInputError(f"img_size must be a positive integer, got {img_size!r}")

        def resize(images: torch.Tensor) -> torch.Tensor:
            out = torch.nn.functional.interpolate(
                images.float(),
                size=(img_size, img_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            return out.round_().clamp_(0, 255).to(torch.uint8)

        return self._derive(
            f"{self.info.name}[{img_size}px]",
            resize(self.train_images), self.train_labels, resize(self.val_images), self.val_labels,
            self.info.class_names,
        )  # fmt: skip

    def _derive(self, name, train_images, train_labels, val_images, val_labels, class_names) -> Dataset:
        return _make(
            name, self.info.source, class_names, train_images, train_labels, val_images, val_labels,
            split=self.info.split, seed=self.info.seed, val_fraction=self.info.val_fraction,
            skipped=self.info.skipped, stats=(self.info.mean, self.info.std),
            derived_from=self.info.fingerprint,
        )  # fmt: skip


def load(source: str | Path | None = None, **options) -> Dataset:
    """``None`` or ``'builtin:mnist_5k'`` -> the built-in set; anything else is an ImageFolder path."""
    if source is None or str(source) == BUILTIN_SOURCE:
        folder_only = sorted(
            k for k in ("img_size", "in_chans", "on_bad_image") if options.get(k) is not None
        )
        if folder_only:
            raise InvalidInputError(f"{', '.join(folder_only)} apply to image folders, not {BUILTIN_SOURCE}")
        return load_builtin(val_fraction=options.get("val_fraction", 0.1), seed=options.get("seed", 0))
    return load_image_folder(source, **options)


def load_for_bank(
    source: str | Path | None, *, in_chans: int, img_size: int, seed: int = 0, resize: bool = False
) -> Dataset:
    """``load(source, seed=seed)``, checked against what a template bank's models take (``in_chans`` x
    ``img_size`` x ``img_size``). The one data check that init, build and templates build share: any problem
    with the data raises ``InvalidInputError`` (exit 3) before training starts.

    ``resize``: the target's image size was chosen explicitly (``--img-size``), so images of any size are
    resized to ``img_size`` once, at load: an ImageFolder is decoded straight to that size (bilinear, PIL),
    the built-in set is resized as tensors (``Dataset.resized``). Channels must still match.

    Without ``resize`` the images must already be ``img_size`` px: the build resizes only with ``--img-size``
    (docs/decisions.md). Channels and the size are checked from the headers (``probe_data``) before anything
    is decoded, and the refusal names ``--img-size <img_size>``; the check after decoding has the last word
    (a tree whose later images differ from the first)."""
    check_probed_shape(probe_data(source), in_chans=in_chans, img_size=img_size, resize=resize)
    if resize and source is not None and str(source) != BUILTIN_SOURCE:
        data = load(source, seed=seed, img_size=img_size)
    else:
        data = load(source, seed=seed)
        if resize and data.info.img_size != img_size:
            data = data.resized(img_size)
    check_image_shape(data, in_chans=in_chans, img_size=img_size)
    return data


def check_probed_shape(shape: DataShape, *, in_chans: int, img_size: int, resize: bool) -> None:
    """Raise ``InvalidInputError`` unless the data ``probe_data`` read from a listing and image headers is
    ``in_chans`` channels at ``img_size`` px (any size when ``resize``): load_for_bank's check before it
    decodes, and build --dry-run's (pipeline.resolve.check_inputs)."""
    found = (shape.in_chans, img_size if resize else shape.img_size)
    if found != (in_chans, img_size):
        _refuse_shape(shape.source, found, (in_chans, img_size))


def check_image_shape(data: Dataset, *, in_chans: int, img_size: int) -> None:
    """Raise ``InvalidInputError`` unless ``data``'s images are ``in_chans`` x ``img_size`` x ``img_size``."""
    info = data.info
    if (info.in_chans, info.img_size) != (in_chans, img_size):
        _refuse_shape(info.source, (info.in_chans, info.img_size), (in_chans, img_size))


def _refuse_shape(source: str, found: tuple[int, int | None], wanted: tuple[int, int]) -> None:
    """The one refusal of data whose (channels, image size) are not a bank's (size None: not square)."""
    kind = {1: "grayscale", 3: "RGB"}

    def describe(c: int, s: int | None) -> str:
        return f"{f'{s}x{s} px' if s else 'non-square'} {kind.get(c, f'{c}-channel')}"

    (chans, _), (in_chans, img_size) = found, wanted
    bank = f"--templates a bank built for these images (wave-deploy templates build --data {source} ...)"
    hint = (
        f"pass --img-size {img_size} to resize the images to {img_size} px at load, or give {bank}"
        if chans == in_chans
        else f"give --data images of {describe(in_chans, img_size)}, or {bank}"
    )
    raise InvalidInputError(
        f"data {source}: images are {describe(*found)} but the template bank takes {describe(*wanted)}",
        hint=hint,
    )


def load_builtin(val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """The 5,000 MNIST digits shipped in the package, 500 per class, 28x28 (assets/MNIST_5K_SOURCE.md)."""
    _check_split_args(val_fraction, seed)
    asset = resources.files("wave_deploy.assets") / "mnist_5k.npz"
    with resources.as_file(asset) as path, np.load(path, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]  # (5000, 28, 28) uint8, (5000,) uint8
    images_t = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    if val_fraction == BUILTIN_VAL_FRACTION:
        train_idx, val_idx = _builtin_split(images_t)
    else:  # another size of split cannot avoid the bank's training images
        log.warning(
            "val_fraction %s: the validation split overlaps the shipped bank's training data", val_fraction
        )
        train_idx, val_idx = _content_split(images_t, labels_t, 10, val_fraction)
    return _make(
        "mnist_5k", BUILTIN_SOURCE, tuple(str(d) for d in range(10)),
        images_t[train_idx], labels_t[train_idx], images_t[val_idx], labels_t[val_idx],
        split="content", seed=seed, val_fraction=val_fraction,
    )  # fmt: skip


def load_image_folder(
    path: str | Path,
    img_size: int | None = None,
    in_chans: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    on_bad_image: Literal["error", "skip"] = "error",
) -> Dataset:
    """Load ``path/<class>/**/<image>`` (or ``path/train/<class>/...`` + ``path/val/<class>/...``).

    Classes are the sorted sub-folder names. Images are converted to ``in_chans`` (default: 1 if every
    image is grayscale, else 3) and resized (bilinear) to ``img_size`` x ``img_size`` (default: the images'
    own size when they are all equal and square).
    """
    root = Path(path)
    _check_split_args(val_fraction, seed)
    if on_bad_image not in ("error", "skip"):
        raise InvalidInputError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1):
        raise InvalidInputError(f"img_size must be a positive integer, got {img_size!r}")
    if in_chans not in (None, 1, 3):
        raise InvalidInputError(f"in_chans must be 1 or 3, got {in_chans!r}")
    listing = list_image_folder(root)  # the layout rules, shared with data_shape.probe_data
    explicit, class_names, files = listing.explicit, listing.class_names, listing.files

    images, labels, is_train, bad = read_images(root, files, img_size, in_chans, on_bad_image)
    if explicit:
        train_idx, val_idx = torch.nonzero(is_train).flatten(), torch.nonzero(~is_train).flatten()
    else:
        train_idx, val_idx = _content_split(images, labels, len(class_names), val_fraction)
    counts = torch.bincount(labels[train_idx], minlength=len(class_names))
    if (counts == 0).any() or len(val_idx) == 0:
        empty = [class_names[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        raise InvalidInputError(
            f"{root}: no readable training images for class(es) {empty}" if empty
            else f"{root}: no readable validation images"
        )  # fmt: skip
    return _make(
        root.resolve().name, str(root.resolve()), class_names,
        images[train_idx], labels[train_idx], images[val_idx], labels[val_idx],
        split="explicit" if explicit else "content", seed=seed,
        val_fraction=None if explicit else val_fraction, skipped=bad,
    )  # fmt: skip


def _check_split_args(val_fraction: float, seed: int) -> None:
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise InvalidInputError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")


def image_sha256(images: torch.Tensor) -> list[str]:
    """sha256 hex digest of each image's uint8 bytes ((N, C, H, W) -> N digests, C order): its identity."""
    arr = images.contiguous().numpy()
    return [hashlib.sha256(arr[i].tobytes()).hexdigest() for i in range(arr.shape[0])]


def builtin_val_hashes() -> frozenset[str]:
    """The sha256 of the built-in validation images (assets/mnist_5k_val_sha256.json)."""
    asset = resources.files("wave_deploy.assets") / "mnist_5k_val_sha256.json"
    return frozenset(json.loads(asset.read_text())["sha256"])


def _builtin_split(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    val_set = builtin_val_hashes()
    is_val = torch.tensor([h in val_set for h in image_sha256(images)])
    if int(is_val.sum()) != len(val_set):
        raise InvalidInputError("the built-in MNIST-5k asset does not hold its listed validation images")
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def _content_split(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, val_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the round(n * val_fraction) images (>= 1, <= n - 1) with the smallest content hash -> val."""
    hashes = image_sha256(images)
    train, val = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten().tolist()
        n_val = min(max(round(len(idx) * val_fraction), 1), len(idx) - 1) if len(idx) > 1 else 0
        ranked = sorted(idx, key=lambda i: (hashes[i], i))
        val += ranked[:n_val]
        train += ranked[n_val:]
    return torch.tensor(sorted(train), dtype=torch.long), torch.tensor(sorted(val), dtype=torch.long)


def _fingerprint(class_names, train_images, train_labels, val_images, val_labels) -> str:
    digest = hashlib.sha256(json.dumps({"classes": list(class_names)}).encode())
    for t in (train_images, train_labels, val_images, val_labels):
        digest.update(json.dumps([str(t.dtype), list(t.shape)]).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _make(
    name, source, class_names, train_images, train_labels, val_images, val_labels, *,
    split, seed, val_fraction, skipped=(), stats=None, derived_from=None,
) -> Dataset:  # fmt: skip
    if stats is None:
        pixels = train_images.to(torch.float64) / 255.0  # (N, C, H, W)
        mean = pixels.mean(dim=(0, 2, 3))
        std = pixels.std(dim=(0, 2, 3), unbiased=False)
        if (std == 0).any():
            log.warning("a channel of %s is constant on the train split; using std 1 for it", name)
            std = torch.where(std == 0, torch.ones_like(std), std)
        stats = (tuple(mean.tolist()), tuple(std.tolist()))
    k = len(class_names)
    info = DatasetInfo(
        name=name, source=source, class_names=tuple(class_names),
        img_size=int(train_images.shape[-1]), in_chans=int(train_images.shape[1]),
        mean=stats[0], std=stats[1], split=split, seed=seed, val_fraction=val_fraction,
        train_per_class=tuple(torch.bincount(train_labels, minlength=k).tolist()),
        val_per_class=tuple(torch.bincount(val_labels, minlength=k).tolist()),
        fingerprint=_fingerprint(class_names, train_images, train_labels, val_images, val_labels),
        skipped=tuple(skipped), derived_from=derived_from,
    )  # fmt: skip
    log.info("dataset %s: %d train / %d val, %d classes", name, info.train_count, info.val_count, k)
    return Dataset(train_images, train_labels, val_images, val_labels, info)
