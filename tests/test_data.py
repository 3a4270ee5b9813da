"""wave_deploy.data: the built-in MNIST subset, ImageFolder trees, splits, normalisation, errors, views."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wave_deploy import data
from wave_deploy.errors import EXIT_INVALID_INPUT, InvalidInputError
from wave_deploy.fileio import sha256_file

REPO = Path(__file__).resolve().parents[1]
ASSET = resources.files("wave_deploy.assets") / "mnist_5k.npz"


def _digests(images: torch.Tensor) -> list[str]:
    return [hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in images]


@pytest.fixture(scope="module")
def mnist() -> data.Dataset:
    return data.load_builtin(val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def asset_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.as_file(ASSET) as path, np.load(path, allow_pickle=False) as archive:
        return archive["images"], archive["labels"]


def _write_tree(root: Path, classes: dict[str, list[np.ndarray]], ext: str = ".png") -> None:
    """One sub-folder per class; (H, W) arrays are saved as L images, (H, W, 3) as RGB."""
    for name, arrays in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB").save(root / name / f"img{i:03d}{ext}")


def _random_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


# ---- the built-in dataset ---------------------------------------------------------------------------------


def test_builtin_has_5000_digits_500_per_class_as_28px_grayscale(mnist):
    info = mnist.info
    assert info.source == data.BUILTIN_SOURCE and info.class_names == tuple("0123456789")
    assert (info.num_classes, info.img_size, info.in_chans) == (10, 28, 1)
    assert info.train_count + info.val_count == 5000
    assert [t + v for t, v in zip(info.train_per_class, info.val_per_class)] == [500] * 10
    assert mnist.train_images.shape == (4500, 1, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.val_images.shape == (500, 1, 28, 28) and mnist.val_labels.dtype == torch.int64
    record = json.loads(json.dumps(info.to_dict()))
    assert (record["train_count"], record["val_count"], record["num_classes"]) == (4500, 500, 10)


def test_builtin_splits_hold_exactly_the_asset_images_with_their_labels(mnist, asset_arrays):
    images, labels = asset_arrays
    expected = sorted(zip(_digests(torch.from_numpy(images)), labels.tolist()))
    got = zip(
        _digests(torch.cat([mnist.train_images, mnist.val_images])[:, 0]),
        torch.cat([mnist.train_labels, mnist.val_labels]).tolist(),
    )
    assert sorted(got) == expected


def test_asset_sha256_and_class_counts_match_the_source_note(asset_arrays):
    note = (REPO / "wave_deploy" / "assets" / "MNIST_5K_SOURCE.md").read_text()
    recorded = re.search(r"sha256 of `mnist_5k.npz`: `([0-9a-f]{64})`", note).group(1)
    with resources.as_file(ASSET) as path:
        assert sha256_file(path) == recorded
    images, labels = asset_arrays
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    content = re.search(r"sha256 of the content.*?`([0-9a-f]{64})`", note, re.DOTALL).group(1)
    assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest() == content


def test_asset_writer_is_byte_reproducible_and_loads_back_with_numpy(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_mnist_asset", REPO / "scripts" / "make_mnist_asset.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    for name in ("a.npz", "b.npz"):
        script.write_npz_reproducibly(tmp_path / name, images=images, labels=labels)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as archive:
        assert np.array_equal(archive["images"], images) and np.array_equal(archive["labels"], labels)


# ---- split, normalisation, fingerprint --------------------------------------------------------------------


def test_builtin_validation_split_is_the_same_images_for_every_seed_and_disjoint_from_the_banks_training_data(
    mnist,
):
    """The shipped bank and its ancestry were trained on the train split of their provenance's data (the
    seed-0 split of older releases: the asset's images minus the 500 listed ones). For seeds 0, 1 and 2 the
    validation images are exactly those 500, and none is a training image of the bank."""
    from wave_deploy.wave.bank import TemplateBank, default_bank_path

    images = torch.from_numpy(np.load(ASSET.open("rb"))["images"])
    listed = data.builtin_val_hashes()
    assert len(listed) == 500
    bank_train = set(_digests(images.unsqueeze(1))) - listed  # everything else in the asset
    provenance = TemplateBank.load(default_bank_path()).provenance
    assert provenance["ancestry"]["data"]["train_count"] == len(bank_train) == 4500
    assert provenance["data"]["fingerprint"] == mnist.info.fingerprint  # the bank trained on this very split
    for seed in (0, 1, 2):
        ds = data.load_builtin(seed=seed)
        val = set(_digests(ds.val_images))
        assert val == listed and not val & bank_train and not val & set(_digests(ds.train_images))
        assert torch.equal(ds.val_images, mnist.val_images) and torch.equal(
            ds.train_labels, mnist.train_labels
        )


def test_builtin_split_follows_the_listed_hashes_not_an_rng(mnist):
    """Recomputing every image's hash and keeping the listed ones gives the validation tensor exactly."""
    images = torch.from_numpy(np.load(ASSET.open("rb"))["images"]).unsqueeze(1)
    keep = [i for i, h in enumerate(data.image_sha256(images)) if h in data.builtin_val_hashes()]
    assert torch.equal(images[keep], mnist.val_images)
    assert mnist.info.split == "content" and mnist.info.val_per_class == (50,) * 10


def test_image_folder_split_is_fixed_by_content_not_by_the_seed(tmp_path):
    rng = np.random.default_rng(7)
    tree = {c: _random_images(rng, 10, (8, 8)) for c in ("a", "b")}
    _write_tree(tmp_path, tree)
    splits = [data.load_image_folder(tmp_path, val_fraction=0.3, seed=s) for s in (0, 1, 2)]
    for ds in splits[1:]:
        assert torch.equal(ds.val_images, splits[0].val_images)
        assert torch.equal(ds.train_images, splits[0].train_images)
    # naive reference: per class, the 3 images with the smallest sha256 of their bytes
    expected = set()
    for arrs in tree.values():
        digests = sorted(hashlib.sha256(a[None].tobytes()).hexdigest() for a in arrs)
        expected |= set(digests[:3])
    assert set(_digests(splits[0].val_images)) == expected


@pytest.mark.parametrize("val_fraction, per_class", [(0.1, 50), (0.2, 100), (0.5, 250)])
def test_split_is_stratified_and_disjoint(val_fraction, per_class):
    ds = data.load_builtin(val_fraction=val_fraction, seed=3)
    assert ds.info.val_per_class == (per_class,) * 10
    assert torch.bincount(ds.val_labels, minlength=10).tolist() == [per_class] * 10
    assert torch.bincount(ds.train_labels, minlength=10).tolist() == [500 - per_class] * 10
    assert not set(_digests(ds.train_images)) & set(_digests(ds.val_images))


def test_normalisation_is_computed_on_train_and_applied_to_both_splits(mnist):
    train = mnist.train_images.numpy().astype(np.float64) / 255.0
    assert mnist.info.mean[0] == pytest.approx(train.mean(), rel=1e-9)
    assert mnist.info.std[0] == pytest.approx(train.std(), rel=1e-9)
    x = mnist.train_x
    assert x.dtype == torch.float32 and x.shape == (4500, 1, 28, 28)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1.0) < 1e-4
    expected_val = (mnist.val_images.double() / 255.0 - mnist.info.mean[0]) / mnist.info.std[0]
    assert torch.allclose(mnist.val_x.double(), expected_val, atol=1e-6)


def test_fingerprint_is_stable_across_loads_and_changes_with_the_data(mnist):
    assert data.load_builtin(val_fraction=0.1, seed=0).info.fingerprint == mnist.info.fingerprint
    assert (
        data.load_builtin(val_fraction=0.1, seed=1).info.fingerprint == mnist.info.fingerprint
    )  # same split
    others = {
        data.load_builtin(val_fraction=0.2, seed=0).info.fingerprint,
        mnist.subset(10, seed=0).info.fingerprint,
        mnist.select_classes(range(9)).info.fingerprint,
    }
    assert mnist.info.fingerprint not in others and len(others) == 3


def test_fingerprint_changes_when_one_pixel_of_one_image_changes(tmp_path):
    rng = np.random.default_rng(0)
    tree = {c: _random_images(rng, 4, (8, 8)) for c in ("a", "b")}
    _write_tree(tmp_path / "one", tree)
    tree["b"][2][3, 3] ^= 1
    _write_tree(tmp_path / "two", tree)
    one, two = data.load_image_folder(tmp_path / "one"), data.load_image_folder(tmp_path / "two")
    assert one.info.fingerprint == data.load_image_folder(tmp_path / "one").info.fingerprint
    assert one.info.fingerprint != two.info.fingerprint


# ---- ImageFolder -------------------------------------------------------------------------------------------


def _as_written(ds: data.Dataset) -> list[tuple[bytes, int]]:
    images = torch.cat([ds.train_images, ds.val_images]).permute(0, 2, 3, 1)  # (N, H, W, C)
    labels = torch.cat([ds.train_labels, ds.val_labels]).tolist()
    return sorted((img.squeeze(-1).numpy().tobytes(), y) for img, y in zip(images, labels))


@pytest.mark.parametrize("shape, in_chans", [((12, 12), 1), ((12, 12, 3), 3)])
def test_image_folder_round_trips_pixels_and_labels(tmp_path, shape, in_chans):
    rng = np.random.default_rng(1)
    tree = {c: _random_images(rng, 6, shape) for c in ("cat", "ant", "bee")}
    _write_tree(tmp_path, tree)
    ds = data.load_image_folder(tmp_path, val_fraction=0.34, seed=0)
    assert ds.info.class_names == ("ant", "bee", "cat")  # sorted folder names
    assert (ds.info.img_size, ds.info.in_chans) == (12, in_chans)
    assert ds.info.val_per_class == (2, 2, 2) and ds.info.split == "content"
    expected = sorted((a.tobytes(), ds.info.class_names.index(c)) for c, arrs in tree.items() for a in arrs)
    assert _as_written(ds) == expected


def test_image_folder_reads_every_listed_extension_and_ignores_other_files(tmp_path):
    rng = np.random.default_rng(2)
    for ext in (".png", ".bmp", ".PNG"):
        _write_tree(tmp_path, {"x": _random_images(rng, 1, (6, 6)), "y": _random_images(rng, 1, (6, 6))}, ext)
    for cls in ("x", "y"):
        Image.fromarray(_random_images(rng, 1, (6, 6))[0]).save(tmp_path / cls / "q.webp", lossless=True)
        Image.fromarray(_random_images(rng, 1, (6, 6))[0]).save(tmp_path / cls / "j.jpg")
        (tmp_path / cls / "notes.txt").write_text("not an image")
    ds = data.load_image_folder(tmp_path)
    assert ds.info.train_count + ds.info.val_count == 2 * 5


def test_mixed_gray_and_rgb_images_load_as_rgb_with_gray_replicated(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    _write_tree(
        tmp_path, {"g": [gray, gray + 1], "c": _random_images(np.random.default_rng(3), 2, (8, 8, 3))}
    )
    ds = data.load_image_folder(tmp_path, val_fraction=0.5)
    assert ds.info.in_chans == 3
    images = torch.cat([ds.train_images, ds.val_images])[torch.cat([ds.train_labels, ds.val_labels]) == 1]
    assert sorted(img[0].numpy().tobytes() for img in images) == [gray.tobytes(), (gray + 1).tobytes()]
    assert all(torch.equal(img[0], img[1]) and torch.equal(img[0], img[2]) for img in images)


def test_images_are_resized_and_converted_as_asked(tmp_path):
    rng = np.random.default_rng(4)
    _write_tree(
        tmp_path, {"a": _random_images(rng, 2, (10, 10, 3)), "b": _random_images(rng, 2, (16, 12, 3))}
    )
    with pytest.raises(InvalidInputError) as err:
        data.load_image_folder(tmp_path)
    assert (
        "10x10" in err.value.one_line() and "12x16" in err.value.one_line() and "img_size" in err.value.hint
    )
    ds = data.load_image_folder(tmp_path, img_size=8, in_chans=1, val_fraction=0.5)
    assert ds.train_images.shape == (2, 1, 8, 8) and ds.info.img_size == 8 and ds.info.in_chans == 1


def test_explicit_train_and_val_folders_are_used_as_given(tmp_path):
    rng = np.random.default_rng(5)
    train = {c: _random_images(rng, 5, (6, 6)) for c in ("a", "b")}
    val = {c: _random_images(rng, 2, (6, 6)) for c in ("a", "b")}
    _write_tree(tmp_path / "train", train)
    _write_tree(tmp_path / "val", val)
    ds = data.load_image_folder(tmp_path, seed=0)
    assert (ds.info.split, ds.info.val_fraction) == ("explicit", None)
    assert ds.info.train_per_class == (5, 5) and ds.info.val_per_class == (2, 2)
    assert sorted(_digests(ds.val_images[:, 0])) == sorted(
        _digests(torch.from_numpy(np.stack(val["a"] + val["b"])))
    )
    assert data.load_image_folder(tmp_path, seed=7).info.fingerprint == ds.info.fingerprint


# ---- errors ------------------------------------------------------------------------------------------------


def _corrupt_tree(root: Path) -> Path:
    rng = np.random.default_rng(6)
    _write_tree(root, {c: _random_images(rng, 3, (6, 6)) for c in ("a", "b")})
    bad = root / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return bad


def _error_cases(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """case -> (directory to load, path the message must name)."""
    rng = np.random.default_rng(7)
    (tmp_path / "file.png").write_bytes(b"x")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    _write_tree(tmp_path / "single", {"only": _random_images(rng, 3, (6, 6))})
    bad = _corrupt_tree(tmp_path / "corrupt")
    truncated = tmp_path / "truncated" / "a" / "cut.png"
    _write_tree(tmp_path / "truncated", {c: _random_images(rng, 2, (32, 32)) for c in ("a", "b")})
    full = (tmp_path / "truncated" / "a" / "img000.png").read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    _write_tree(tmp_path / "only_train" / "train", {c: _random_images(rng, 2, (6, 6)) for c in ("a", "b")})
    _write_tree(tmp_path / "split" / "train", {c: _random_images(rng, 2, (6, 6)) for c in ("a", "b")})
    _write_tree(tmp_path / "split" / "val", {c: _random_images(rng, 2, (6, 6)) for c in ("a", "c")})
    return {
        "missing": (tmp_path / "nope", tmp_path / "nope"),
        "not_a_directory": (tmp_path / "file.png", tmp_path / "file.png"),
        "empty_tree": (tmp_path / "empty", tmp_path / "empty"),
        "single_class": (tmp_path / "single", tmp_path / "single"),
        "corrupt_image": (tmp_path / "corrupt", bad),
        "truncated_image": (tmp_path / "truncated", truncated),
        "train_val_class_mismatch": (tmp_path / "split", tmp_path / "split" / "train"),
        "train_without_val": (tmp_path / "only_train", tmp_path / "only_train" / "val"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "not_a_directory", "empty_tree", "single_class", "corrupt_image", "truncated_image",
     "train_val_class_mismatch", "train_without_val"],
)  # fmt: skip
def test_bad_data_raises_invalid_input_naming_the_path(tmp_path, case):
    target, named = _error_cases(tmp_path)[case]
    with pytest.raises(InvalidInputError) as err:
        data.load_image_folder(target)
    assert str(named) in err.value.one_line()
    assert err.value.exit_code == EXIT_INVALID_INPUT == 3


def test_skip_mode_skips_and_counts_unreadable_images_with_a_warning(tmp_path, caplog):
    bad = _corrupt_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="wave_deploy.data"):
        ds = data.load_image_folder(tmp_path, on_bad_image="skip", val_fraction=0.34)
    assert ds.info.skipped == (str(bad),)
    assert ds.info.train_count + ds.info.val_count == 6
    assert str(bad) in caplog.text


def test_bad_arguments_raise_invalid_input(tmp_path, mnist):
    _corrupt_tree(tmp_path)
    for kwargs in ({"val_fraction": 0.0}, {"val_fraction": 1.0}, {"on_bad_image": "ignore"}, {"in_chans": 2}):
        with pytest.raises(InvalidInputError):
            data.load_image_folder(tmp_path, **kwargs)
    with pytest.raises(InvalidInputError, match="image folders"):
        data.load(data.BUILTIN_SOURCE, img_size=32)
    for bad in ([3], [1, 1], [10], ["x"]):
        with pytest.raises(InvalidInputError):
            mnist.select_classes(bad)
    with pytest.raises(InvalidInputError):
        mnist.subset(5, fraction=0.5)


# ---- views -------------------------------------------------------------------------------------------------


def test_select_classes_relabels_to_0_k_in_the_given_order(mnist):
    upper = mnist.select_classes([7, "5", 9])
    assert upper.info.class_names == ("7", "5", "9") and upper.info.num_classes == 3
    assert upper.info.train_per_class == (450, 450, 450) and upper.info.val_per_class == (50, 50, 50)
    for new, old in enumerate((7, 5, 9)):
        assert torch.equal(
            upper.train_images[upper.train_labels == new], mnist.train_images[mnist.train_labels == old]
        )
        assert torch.equal(
            upper.val_images[upper.val_labels == new], mnist.val_images[mnist.val_labels == old]
        )
    assert upper.info.mean == mnist.info.mean and upper.info.derived_from == mnist.info.fingerprint


def test_subset_is_a_deterministic_per_class_sample_of_train(mnist):
    small = mnist.subset(10, seed=0)
    assert small.info.train_per_class == (10,) * 10 and torch.equal(small.val_images, mnist.val_images)
    assert torch.equal(mnist.subset(10, seed=0).train_images, small.train_images)
    assert not torch.equal(mnist.subset(10, seed=1).train_images, small.train_images)
    assert set(_digests(small.train_images)) <= set(_digests(mnist.train_images))
    assert small.info.std == mnist.info.std
    assert mnist.subset(fraction=0.1).info.train_per_class == (45,) * 10
    assert mnist.subset(1000).info.train_per_class == (450,) * 10


def test_load_dispatches_builtin_and_folders(tmp_path, mnist):
    assert data.load().info.fingerprint == mnist.info.fingerprint
    _write_tree(tmp_path, {c: _random_images(np.random.default_rng(8), 2, (4, 4)) for c in ("a", "b")})
    assert data.load(tmp_path, val_fraction=0.5).info.source == str(tmp_path.resolve())


def test_skip_mode_still_rejects_a_class_left_without_training_images(tmp_path):
    _write_tree(tmp_path, {"a": _random_images(np.random.default_rng(9), 3, (6, 6))})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "junk.png").write_bytes(b"not an image")
    with pytest.raises(
        InvalidInputError, match=r"no readable training images for class\(es\) \['b'\]"
    ) as err:
        data.load_image_folder(tmp_path, on_bad_image="skip")
    assert str(tmp_path) in err.value.one_line()


# --- image sizes are checked from the header, before anything is decoded (issue 19) -------------------------


def _spy_on_decoding(monkeypatch) -> list[str]:
    """File names Pillow decodes (ImageFile.load) from now on."""
    from PIL import ImageFile

    decoded: list[str] = []
    load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(str(getattr(self, "filename", "")))
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return decoded


@pytest.mark.parametrize("img_size", [None, 28])
def test_an_image_declaring_huge_dimensions_is_refused_by_path_and_never_decoded(
    tmp_path, monkeypatch, img_size
):
    from _bad_input_files import HUGE_SIDE, _tree, huge_png

    from wave_deploy.image_files import MAX_IMAGE_PIXELS

    assert MAX_IMAGE_PIXELS < HUGE_SIDE**2 < 2 * 89_478_485  # over ours, just under Pillow's bomb error
    root = _tree(tmp_path / "data", n=4)
    huge = huge_png(root / "a" / "huge.png")
    decoded = _spy_on_decoding(monkeypatch)
    with pytest.raises(InvalidInputError, match=f"image {huge} declares {HUGE_SIDE} x {HUGE_SIDE} px"):
        data.load_image_folder(root, img_size=img_size)
    assert str(huge) not in decoded
    decoded.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would be a second stderr line
        loaded = data.load_image_folder(root, img_size=img_size, on_bad_image="skip")
    assert loaded.info.skipped == (str(huge),) and str(huge) not in decoded
    assert loaded.info.train_count + loaded.info.val_count == 8
    assert len(set(decoded)) == 8  # every other image was decoded


def test_a_set_that_would_not_fit_in_memory_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    from _bad_input_files import _tree

    from wave_deploy import probe

    root = _tree(tmp_path / "data", n=4)
    monkeypatch.setattr(probe, "memory_gib", lambda: 1e-5)  # ~10 KB: 8 images of 28 x 28 need 31 KB
    decoded = _spy_on_decoding(monkeypatch)
    with pytest.raises(InvalidInputError, match=r"the 8 images under .* at 28 x 28 px x 1 channel\(s\) need"):
        data.load_image_folder(root)
    assert decoded == []
    monkeypatch.setattr(probe, "memory_gib", lambda: 1e-4)
    assert data.load_image_folder(root).info.train_count > 0
