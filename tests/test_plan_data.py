"""Plans that match builds (issue 18, point 4): plan --data reads channels and classes from a listing and image
headers; a bank of other channels is refused by plan and build with the same exit 3 and message before
any image is decoded; plan's table and JSON show channels and classes."""

from __future__ import annotations

import json

import pytest
from _rgb224 import bank_224, rgb_folder
from click.testing import CliRunner
from PIL import Image

import wave_deploy
from wave_deploy import data as datasets
from wave_deploy.cli.main import cli
from wave_deploy.data_shape import probe_data
from wave_deploy.errors import InvalidInputError


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgb224")
    return rgb_folder(root / "data", classes=4, per_class=3), bank_224(root / "bank.safetensors")


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_plan_with_data_reports_3_input_channels_and_4_classes(rgb):
    data, bank = rgb
    result = run("plan", "--profile", "raspberry-pi-5", "--templates", bank, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == {"in_chans": 3, "num_classes": 4, "source": f"data {data}"}
    assert (out["chosen"]["spec"]["in_chans"], out["chosen"]["spec"]["num_classes"]) == (3, 4)
    assert {(c["spec"]["in_chans"], c["spec"]["num_classes"]) for c in out["frontier"]} == {(3, 4)}
    table = run("plan", "--profile", "raspberry-pi-5", "--templates", bank, "--data", data)
    assert table.exit_code == 0, table.output
    assert "input RGB (3 channels), 4 classes" in table.output
    assert "ch" in table.output and "classes" in table.output


def test_the_api_plans_for_the_data_at_an_image_size(rgb):
    data, bank = rgb
    selection = wave_deploy.plan("raspberry-pi-5", templates=str(bank), data=str(data), img_size=160)
    spec = selection.chosen.spec
    assert (spec.in_chans, spec.num_classes, spec.img_size) == (3, 4, 160)
    assert any("resizes them at load only with --img-size 160" in n for n in selection.notes)


def test_probe_lists_and_reads_one_header_without_decoding(rgb, monkeypatch):
    data, _ = rgb
    opened = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    shape = probe_data(data)
    assert (shape.in_chans, shape.num_classes, shape.img_size, shape.images) == (3, 4, 224, 12)
    assert shape.class_names == ("class0", "class1", "class2", "class3")
    assert len(opened) == 1


def test_a_grayscale_tree_is_one_channel_as_the_loader_reads_it(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("L", (12, 12), 40).save(tmp_path / c / "0.png")
        Image.new("L", (12, 12), 200).save(tmp_path / c / "1.png")
    shape = probe_data(tmp_path)
    loaded = datasets.load(tmp_path).info
    assert (shape.in_chans, shape.num_classes, shape.img_size) == (loaded.in_chans, loaded.num_classes, 12)


def test_plan_and_build_refuse_a_bank_of_other_channels_alike_before_decoding(rgb, tmp_path, monkeypatch):
    data, _ = rgb  # RGB images; the shipped bank takes grayscale

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were decoded before the bank was checked")

    monkeypatch.setattr(datasets, "read_images", no_decoding)
    plan = run("plan", "--profile", "raspberry-pi-5", "--data", data)
    build = run("build", "--profile", "raspberry-pi-5", "--data", data, "--out", tmp_path / "out")
    assert plan.exit_code == build.exit_code == 3, (plan.output, build.output)
    message = [line for line in plan.output.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "images are RGB (3 channels)" in message[0]
    assert "takes grayscale (1 channel)" in message[0]
    assert message[0] in build.output.splitlines()
    assert not (tmp_path / "out" / "raspberry-pi-5").exists()
    with pytest.raises(InvalidInputError, match="images are RGB"):
        wave_deploy.plan("raspberry-pi-5", data=str(data))


def test_in_chans_and_num_classes_plan_without_data(rgb):
    _, bank = rgb
    out = run("plan", "--profile", "raspberry-pi-5", "--num-classes", 7, "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["chosen"]["spec"]["num_classes"] == 7
    assert run("plan", "--profile", "raspberry-pi-5", "--in-chans", 3).exit_code == 3  # the shipped bank: 1
    assert run("plan", "--profile", "raspberry-pi-5", "--templates", bank, "--in-chans", 1).exit_code == 3
    both = run("plan", "--profile", "raspberry-pi-5", "--data", rgb[0], "--num-classes", 4)
    assert both.exit_code == 2 and "not both" in both.output
    assert run("plan", "--profile", "raspberry-pi-5", "--num-classes", 1).exit_code == 2


def test_an_rgb_tree_whose_first_image_is_grey_is_rgb_to_the_probe_as_to_the_loader(tmp_path, monkeypatch):
    """The loader reads a tree as 1 channel only when EVERY image is grayscale; the probe follows the same rule
    (it reads headers until a colour one turns up), so plan --data and build accept the RGB bank that
    templates build made from the same photos."""
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (16, 16), (200, 40, 40)).save(tmp_path / c / "1.png")
        Image.new("RGB", (16, 16), (40, 40, 200)).save(tmp_path / c / "2.png")
    Image.new("L", (16, 16), 90).save(tmp_path / "a" / "0.png")  # the listing's first image is grey
    # a palette image: colour to the loader (converted to RGB); the probe stops before it
    Image.new("P", (16, 16)).save(tmp_path / "b" / "0.png")
    opened = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", counting_open)
        patch.setattr(Image.Image, "load", lambda *a, **k: pytest.fail("an image was decoded"))
        shape = probe_data(tmp_path)
    assert shape.in_chans == 3 == datasets.load(tmp_path).info.in_chans
    assert len(opened) == 2  # headers only, and no further than the first colour image
    grey_only = tmp_path / "a" / "0.png"
    for file in tmp_path.rglob("*.png"):
        if file != grey_only:
            Image.new("L", (16, 16), 30).save(file)
    assert probe_data(tmp_path).in_chans == 1 == datasets.load(tmp_path).info.in_chans


def test_plan_accepts_the_rgb_bank_for_photos_whose_first_image_is_grey(rgb, tmp_path):
    _, bank = rgb
    data = rgb_folder(tmp_path / "photos", classes=4, per_class=2)
    Image.new("L", (224, 224), 90).save(data / "class0" / "0.png")  # sorted first: the listing's first image
    result = run("plan", "--profile", "raspberry-pi-5", "--templates", bank, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["task"]["in_chans"] == 3


def test_build_refuses_images_of_another_size_before_decoding_naming_img_size(rgb, tmp_path, monkeypatch):
    """Build resizes only with --img-size (docs/decisions.md): photos of another size than the bank's are
    refused from their headers, before the tree is decoded, and the one-line error names --img-size 224."""
    _, bank = rgb
    small = rgb_folder(tmp_path / "small", classes=4, per_class=2, size=64)
    with monkeypatch.context() as patch:
        patch.setattr(datasets, "read_images", lambda *a, **k: pytest.fail("images were decoded"))
        result = run("build", "--profile", "raspberry-pi-5", "--templates", bank, "--data", small,
                     "--out", tmp_path / "out")  # fmt: skip
        assert result.exit_code == 3, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "64x64 px RGB" in errors[0] and "224x224 px RGB" in errors[0], errors
        assert "--img-size 224" in errors[0] and "Traceback" not in result.output
    resized = datasets.load_for_bank(small, in_chans=3, img_size=224, resize=True)  # what --img-size 224 does
    assert resized.info.img_size == 224
