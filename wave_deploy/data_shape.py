"""What a data set's models take, read cheaply: channels, classes and the image size, without decoding images.

``probe_data`` lists an ImageFolder tree (class folders, image files) and reads image headers
until one is in colour (``PIL.Image.open`` reads the header only: no pixel is decoded), or knows the built-in
MNIST-5k's shape. Plan uses it to plan for the data (``plan --data``) and build uses it to refuse a bank of other channels before
any image is decoded; both refuse with ``check_bank_channels``'s one message (exit 3).

The folder layout rules (class folders, or train/ and val/ holding the same class folders; which files are
images) live here too, so the loader (wave_deploy.data) and the probe read a tree the same way. No torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from wave_deploy.errors import InvalidInputError

BUILTIN_SOURCE = "builtin:mnist_5k"
BUILTIN_SHAPE = {"in_chans": 1, "num_classes": 10, "img_size": 28}  # wave_deploy/assets/mnist_5k.npz
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
CHANNEL_NAMES = {1: "grayscale", 3: "RGB"}


@dataclass(frozen=True)
class DataShape:
    """What models for a data set take and predict: channels, classes, and the first image's size."""

    source: str  # the directory as given, or BUILTIN_SOURCE
    in_chans: int  # 1 when every image is grayscale, else 3 (channels_of: the loader's rule)
    num_classes: int
    class_names: tuple[str, ...]
    img_size: int | None  # the first image's side when it is square, else None (the loader resizes)
    images: int  # image files listed (none decoded)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "img_size": self.img_size,
            "images": self.images,
        }


@dataclass(frozen=True)
class FolderListing:
    class_names: tuple[str, ...]
    files: list[tuple[Path, int, bool]]  # (path, label, is_train); is_train is True without an explicit split
    explicit: bool  # train/ and val/ folders


def is_builtin(source: str | Path | None) -> bool:
    return source is None or str(source) == BUILTIN_SOURCE


def list_image_folder(path: str | Path) -> FolderListing:
    """``path/<class>/**/<image>`` or ``path/train/<class>/...`` + ``path/val/<class>/...``, listed, not read."""
    root = Path(path)
    if not root.exists():
        raise InvalidInputError(f"data path {root} does not exist", hint="pass an ImageFolder directory")
    if not root.is_dir():
        raise InvalidInputError(f"data path {root} is not a directory", hint="pass an ImageFolder directory")
    explicit = (root / "train").is_dir() and (root / "val").is_dir()
    if not explicit and ((root / "train").is_dir() or (root / "val").is_dir()):
        one, other = ("train", "val") if (root / "train").is_dir() else ("val", "train")
        raise InvalidInputError(
            f"{root / one} exists but {root / other} does not",
            hint="give both train/ and val/ for an explicit split, or class folders directly under the path",
        )
    if not explicit:
        class_names, found = scan_classes(root)
        return FolderListing(class_names, [(p, y, True) for p, y in found], False)
    class_names, train_files = scan_classes(root / "train")
    val_names, val_files = scan_classes(root / "val")
    if class_names != val_names:
        raise InvalidInputError(
            f"{root / 'train'} and {root / 'val'} have different class folders: "
            f"only in train {sorted(set(class_names) - set(val_names))}, "
            f"only in val {sorted(set(val_names) - set(class_names))}"
        )
    files = [(p, y, True) for p, y in train_files] + [(p, y, False) for p, y in val_files]
    return FolderListing(class_names, files, True)


def scan_classes(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """Sorted class folders under ``root`` and their image files (recursive, sorted), as (path, label)."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        found = sorted(
            p for p in d.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )  # fmt: skip
        files += [(p, label) for p in found]
    kinds = ",".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    if not files:
        raise InvalidInputError(
            f"no images found under {root}", hint=f"expected <class>/*.{{{kinds}}} folders"
        )
    if len(class_dirs) < 2:
        raise InvalidInputError(
            f"{root} has a single class folder ({class_dirs[0].name}); classification needs at least 2"
        )
    return tuple(d.name for d in class_dirs), files


def channels_of(modes: Iterable[str]) -> int:
    """The channels a tree of images with these PIL modes is read as: 1 when EVERY mode is grayscale, else 3.

    The one rule of the loader (``image_files.read_images``, over all headers) and the probe (``probe_data``,
    over headers read lazily): ``all`` stops at the first colour mode, so the probe reads no further."""
    return 1 if all(mode in GRAY_MODES for mode in modes) else 3


def probe_data(source: str | Path | None) -> DataShape:
    """The shape of ``source`` (None or BUILTIN_SOURCE: the built-in MNIST-5k) from a listing and image headers.

    Headers only (``Image.open`` decodes no pixel). Channels follow the loader's rule (``channels_of``): the
    probe reads headers until a colour one turns up (one header for an RGB tree whose first image is colour;
    every header of an all-grayscale tree, as the loader does). Unreadable files are skipped here (the loader
    reports them by path). ``img_size`` is the first readable image's side when it is square.
    """
    if is_builtin(source):
        return DataShape(BUILTIN_SOURCE, BUILTIN_SHAPE["in_chans"], BUILTIN_SHAPE["num_classes"],
                         tuple(str(d) for d in range(10)), BUILTIN_SHAPE["img_size"], 5000)  # fmt: skip
    listing = list_image_folder(source)  # type: ignore[arg-type]
    headers = _headers(listing.files)
    first = next(headers, None)
    if first is None:
        raise InvalidInputError(
            f"no readable image under {source}", hint="fix or delete the unreadable files"
        )
    mode, size = first
    return DataShape(
        source=str(source),
        in_chans=channels_of(chain([mode], (m for m, _ in headers))),
        num_classes=len(listing.class_names),
        class_names=listing.class_names,
        img_size=size[0] if size[0] == size[1] else None,
        images=len(listing.files),
    )


def _headers(files: list[tuple[Path, int, bool]]) -> Iterator[tuple[str, tuple[int, int]]]:
    """(mode, size) of each readable file's header, lazily; nothing is decoded."""
    from PIL import Image, UnidentifiedImageError

    for file, _, _ in files:
        try:
            with Image.open(file) as im:  # the header only: nothing is decoded
                yield im.mode, im.size
        except (OSError, ValueError, UnidentifiedImageError):
            continue


def describe_channels(in_chans: int) -> str:
    name = CHANNEL_NAMES.get(in_chans)
    return f"{name} ({in_chans} channel{'s' if in_chans != 1 else ''})" if name else f"{in_chans}-channel"


def check_bank_channels(shape: DataShape, bank_in_chans: int, bank: str | Path) -> None:
    """The one refusal of a bank whose input channels differ from the data's (plan and build alike: exit 3)."""
    if shape.in_chans == bank_in_chans:
        return
    options = shape.source.startswith("--")  # plan --in-chans, not data
    what, folder = (shape.source, "DIR") if options else (f"data {shape.source}", shape.source)
    raise InvalidInputError(
        f"{what}: images are {describe_channels(shape.in_chans)} but the template bank "
        f"{Path(bank).name} takes {describe_channels(bank_in_chans)}",
        hint=f"give --templates a bank built for these images (wave-deploy templates build --data {folder} "
        "...), or plan and build without a bank: --init random, or --init weight-selection "
        "--teacher-checkpoint F",
    )
