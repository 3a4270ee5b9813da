"""The 224 px path end to end with a tiny model: a 224 px RGB bank (patch 16), an RGB ImageFolder resized at
load, init, strict fold into timm, ONNX export with parity, and plan over the bank's 224 px sizes."""

import functools
import json

import _rgb224 as rgb224
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wave_deploy.cli import progress
from wave_deploy.cli.main import cli
from wave_deploy.spec import ViTSpec, flops
from wave_deploy.training.folding import load_folded_file
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import BankGeometry
from wave_deploy.wave.init import init_wave_model
from wave_deploy.wave.model import WaveViT


@pytest.fixture(scope="module")
def bank_224(tmp_path_factory):
    geom = BankGeometry.create(img_size=224, patch_size=16, in_chans=3, num_classes=2, w=32, head_dim=32,
                               mlp_ratio=2.0, max_depth=2, max_embed_dim=64)  # fmt: skip
    aux = WaveViT(TemplateBank.init_random(geom), geom.make_spec(2, 64), seed=1)
    return aux.export_bank({"test": "224 px"}).save(tmp_path_factory.mktemp("bank") / "bank224.safetensors")


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """Two classes of 40x40 RGB images (resized to 224 at load): red-ish and blue-ish noise."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "blue")):
        (root / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 100, (40, 40, 3), dtype=np.uint8)
            pixels[..., 0 if c == 0 else 2] += 150
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")
    return root


def test_init_fold_export_and_plan_at_224_px(bank_224, rgb_folder, tmp_path):
    run = CliRunner().invoke
    out = tmp_path / "m"
    result = run(cli, ["init", "--templates", str(bank_224), "--data", str(rgb_folder), "--depth", "2",
                       "--embed-dim", "64", "--img-size", "224", "--scaler-steps", "1", "--batch-size", "4",
                       "--out", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["data"]["img_size"] == 224 and record["data"]["in_chans"] == 3
    model, spec, _ = load_folded_file(out / "model.safetensors")  # strict load into timm's VisionTransformer
    assert (spec.img_size, spec.patch_size, spec.in_chans) == (224, 16, 3)
    assert record["fold_parity_max_abs_err"] <= 1e-5
    assert tuple(model(torch.zeros(1, 3, 224, 224)).shape) == (1, 2)
    fresh = init_wave_model(TemplateBank.load(bank_224), spec.replace(depth=3), "aux").eval()  # grown
    assert tuple(fresh(torch.zeros(1, 3, 224, 224)).shape) == (1, 2)

    exported = run(cli, ["export", str(out / "model.safetensors"), "--profile", "x86-cpu",
                         "--out", str(tmp_path / "onnx"), "--json"])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "onnx" / "model.onnx").is_file()

    plan = run(cli, ["plan", "--profile", "x86-cpu", "--templates", str(bank_224), "--json"])
    assert plan.exit_code == 0, plan.output
    chosen = json.loads(plan.stdout)["chosen"]["spec"]
    assert (chosen["img_size"], chosen["patch_size"], chosen["in_chans"]) == (224, 16, 3)


# ------------------------------------------------------------------ the user's path, end to end (CPU smoke)
@pytest.fixture(scope="module")
def user_path(tmp_path_factory):
    """A 224 px RGB ImageFolder of 4 classes, a 224 px RGB bank and a teacher checkpoint, all tiny."""
    root = tmp_path_factory.mktemp("path224")
    return (rgb224.rgb_folder(root / "photos", classes=4, per_class=4), rgb224.bank_224(root / "bank.safetensors"),
            rgb224.teacher_224(root / "teacher.safetensors"), root)  # fmt: skip


def test_photos_to_a_device_bank_plan_data_and_build_compare_init(user_path, monkeypatch):
    """bank -> plan --data -> build --compare-init on 224 px RGB photos; then --init random: the train stage
    is not reused (its key holds the init). Tiny sizes: no speed claim."""
    data, bank, teacher, root = user_path
    every_step = functools.partialmethod(progress.TrainingProgress.__init__, plain_every_s=0.0)
    monkeypatch.setattr(progress.TrainingProgress, "__init__", every_step)  # a line per step, not per 5 s
    run = CliRunner().invoke
    plan = run(
        cli, ["plan", "--profile", "raspberry-pi-5", "--templates", str(bank), "--data", str(data), "--json"]
    )
    assert plan.exit_code == 0, plan.output
    planned = json.loads(plan.stdout)
    assert (planned["task"]["in_chans"], planned["task"]["num_classes"]) == (3, 4)

    out = root / "out"
    common = ["--profile", "raspberry-pi-5", "--templates", str(bank), "--data", str(data), "--scaler-steps", "1",
              "--dense-steps", "2", "--batch-size", "4", "--bench-iterations", "5", "--bench-warmup", "1",
              "--out", str(out), "--json"]  # fmt: skip
    built = run(cli, ["build", *common, "--compare-init", "--teacher-checkpoint", str(teacher)])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)["devices"][0]
    assert summary["spec"] == planned["chosen"]["name"]  # the plan matched the build
    err = built.stderr.splitlines()
    estimate = next(i for i, line in enumerate(err) if "compare-init:" in line and "estimated" in line)
    assert all("training:" not in line for line in err[:estimate])  # the estimate comes before training
    assert any(line.startswith("training: step ") for line in err[estimate:])  # ... and progress lines follow
    # the note may wrap at the console's width
    said = " ".join(" ".join(err[estimate : estimate + 4]).split())
    assert "evaluation passes not included" in said  # the estimate says what it leaves out

    report = json.loads((out / "raspberry-pi-5" / "report.json").read_text())
    table = report["init_comparison"]
    rows = {r["init"]: r for r in table["rows"]}
    assert set(rows) == {"wave", "weight-selection", "random"}
    assert all(
        r["status"] == "trained" and r["seeds"] == [0, 1] and len(r["val_accs"]) == 2 for r in rows.values()
    )
    step = 4 * 3 * flops(ViTSpec.from_dict(report["spec"]))  # a dense step at batch 4
    for r in rows.values():  # one budget: every init within one dense step of it, never past it
        assert table["budget_flops"] - step < r["training_flops"] <= table["budget_flops"]
    best = min(rows.values(), key=lambda r: (-r["val_acc_mean"], r["training_flops"],
                                             ["random", "weight-selection", "wave"].index(r["init"])))  # fmt: skip
    assert table["chosen"] == best["init"] == report["training"]["init"] == summary["init"]
    assert report["accuracy"]["val_acc"] == best["val_accs"][0]  # the deployed model is its first seed's
    md = (out / "raspberry-pi-5" / "report.md").read_text()
    assert "## Initialization" in md and "| weight-selection |" in md and "**deployed**" in md
    room = report["selection"]["headroom"]  # the tiny bank is far below the Pi 5's budgets: said, and named
    assert room["share"] < 0.25 and room["note"] in md and room["admits"]["name"] in room["note"]
    index = run(cli, ["report", str(out), "--html", str(root / "index.html")])
    assert index.exit_code == 0, index.output
    page = (root / "index.html").read_text()
    assert "weight-selection" in page and "3 ch × 224 px, 4" in page

    again = run(cli, ["build", *common, "--init", "random"])
    assert again.exit_code == 0, again.output
    stages = {s["name"]: s["reused"] for s in json.loads(again.stdout)["devices"][0]["stages"]}
    assert stages["plan"] and not stages["train"]  # same search space; another init trains again
    report = json.loads((out / "raspberry-pi-5" / "report.json").read_text())
    assert report["training"]["init"] == "random" and report["init_comparison"] is None
