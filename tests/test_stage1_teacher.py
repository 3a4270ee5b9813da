"""Bring your own teacher to `templates build` (issue 18, points 1-3): the bank takes the teacher's geometry, the
teacher is judged before anything is trained, `--pretrained` loads real timm weights from an offline Hugging Face
hub cache, and a fine-tuned timm state dict teaches through `--teacher-checkpoint --teacher-arch`."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
from _stage1_data import fine_tuned_test_vit, hub_cache, imagenet_headed, rgb_folder
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from wave_deploy.cli.main import cli
from wave_deploy.errors import MissingDependencyError
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import save_folded
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.stage1.teacher import TIMM_SAFE_LOADS, check_timm_loads_safely, load_teacher

# the issue's command, less --data/--out
MUST_SHOW = [
    "templates",
    "build",
    "--teacher",
    "vit_tiny_patch16_224",
    "--aux-depth",
    "2",
    "--aux-embed-dim",
    "64",
    "--steps",
    "2",
    "--batch-size",
    "8",
]
SMALL = ["--aux-depth", "1", "--aux-embed-dim", "32", "--steps", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def rgb224(tmp_path_factory) -> Path:
    return rgb_folder(tmp_path_factory.mktemp("rgb224"))


@pytest.fixture(scope="module")
def fine_tuned(rgb224) -> dict:
    return fine_tuned_test_vit(rgb224)


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_issue_command_builds_a_224_px_rgb_bank_with_a_time_estimate(rgb224, tmp_path):
    out = tmp_path / "B"
    summary = _json(
        CliRunner().invoke(
            cli, [*MUST_SHOW, "--data", str(rgb224), "--allow-weak-teacher", "--out", str(out), "--json"]
        )
    )
    est = summary["estimate"]
    assert est["steps"] == 2 and est["seconds"] > 0 and est["seconds_per_step"] > 0
    assert est["device"] == "cpu" and est["timed_steps"] == 2 and "warm-up" in est["how"]
    assert est["peak_memory_mib"] > 0 and est["memory"]
    assert summary["teacher_check"]["weak"] and summary["teacher_check"]["allowed_weak"]
    assert summary["geometry"]["sources"]["patch_size"] == "teacher"
    info = json.loads(CliRunner().invoke(cli, ["templates", "info", str(out), "--json"]).stdout)
    geom = info["geometry"]
    assert (geom["img_size"], geom["patch_size"], geom["in_chans"]) == (224, 16, 3)
    assert (geom["head_dim"], geom["w"], geom["mlp_ratio"], geom["num_classes"]) == (64, 64, 4.0, 4)
    prov = TemplateBank.load(out / "bank.safetensors").provenance
    assert prov["teacher_check"]["allowed_weak"] is True
    assert prov["teacher_check"]["accuracy"] == summary["teacher_check"]["accuracy"]


def test_the_untrained_teacher_without_allow_weak_teacher_exits_3_naming_its_accuracy(rgb224, tmp_path):
    out = tmp_path / "B"
    result = CliRunner().invoke(cli, [*MUST_SHOW, "--data", str(rgb224), "--out", str(out)])
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the teacher is near chance: ")
    # 4 classes x 4 validation images: the message names the accuracy, the count and chance (25%)
    named = re.search(
        r"near chance: (\d+\.\d)% \((\d+)/16\) on the validation split; chance 25\.0%", lines[0]
    )
    assert named and float(named[1]) == pytest.approx(100 * int(named[2]) / 16, abs=0.05)
    assert int(named[2]) <= 8  # an untrained teacher is not significantly above chance (9/16 would be)
    assert "--pretrained" in lines[0] and "--teacher-checkpoint" in lines[0]
    assert not out.exists() and not (tmp_path / "B.ckpt").exists()


def test_a_fine_tuned_timm_state_dict_teaches_without_allow_weak_teacher(rgb224, fine_tuned, tmp_path):
    ckpt = tmp_path / "test_vit_finetuned.safetensors"
    save_file(fine_tuned, str(ckpt))
    out = tmp_path / "bank.safetensors"
    teacher = ["--teacher-checkpoint", str(ckpt), "--teacher-arch", "test_vit"]
    args = ["templates", "build", *teacher, "--data", str(rgb224), *SMALL, "--out", str(out), "--json"]
    summary = _json(CliRunner().invoke(cli, args))
    check = summary["teacher_check"]
    assert not check["weak"] and check["accuracy"] >= 0.9 and check["p_value"] < 0.01
    # test_vit's geometry: 160 px, patch 16, 2 heads of 32, MLP ratio 3
    assert summary["geometry"]["values"] == {
        "img_size": 160,
        "in_chans": 3,
        "patch_size": 16,
        "head_dim": 32,
        "w": 32,
        "mlp_ratio": 3.0,
        "aux_depth": 1,
        "aux_embed_dim": 32,
    }
    ancestry = TemplateBank.load(out).provenance["ancestry"]
    assert ancestry["arch"] == "test_vit" and ancestry["head"] == {"probed": False, "classes": 4}
    assert ancestry["input"]["normalisation"].startswith(
        "the teacher's"
    )  # timm's mean/std, as it was trained


def _offline(hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    cmd = [sys.executable, "-m", "wave_deploy.cli.main", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_pretrained_weights_load_offline_from_a_hub_cache_and_get_a_probed_head(rgb224, fine_tuned, tmp_path):
    """`--pretrained` through timm + huggingface_hub with HF_HUB_OFFLINE=1: the cache holds weights made here for
    timm's test_vit (a 1000-class head, as an ImageNet model has); the head is replaced by a linear probe."""
    hf_home = tmp_path / "hf"
    hub_cache(hf_home, "test_vit", imagenet_headed(fine_tuned))
    out = tmp_path / "bank.safetensors"
    args = ["templates", "build", "--teacher", "test_vit", "--pretrained", "--data", str(rgb224), *SMALL]
    proc = _offline(hf_home, *args, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert not summary["teacher_check"]["weak"] and summary["teacher_check"]["accuracy"] >= 0.9
    ancestry = TemplateBank.load(out).provenance["ancestry"]
    assert ancestry["pretrained"] is True and ancestry["hf_hub_id"] == "timm/test_vit.r160_in1k"
    head = ancestry["head"]
    assert head["probed"] and head["replaced_classes"] == 1000 and head["classes"] == 4
    assert "linear probe" in proc.stderr  # the teacher line says how its head came about

    empty = tmp_path / "empty_hf"
    empty.mkdir()
    missing = _offline(empty, *args, "--out", str(tmp_path / "none.safetensors"))
    assert missing.returncode == 4, missing.stderr[-2000:]
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot load pretrained weights for 'test_vit'" in lines[0]
    assert "HF_HUB_OFFLINE" in lines[0] and "Traceback" not in missing.stderr


def test_grey_data_with_an_rgb_teacher_makes_a_grey_bank_at_the_teachers_size(tmp_path):
    grey = tmp_path / "grey"
    rng = np.random.default_rng(0)
    for c in range(2):
        (grey / f"k{c}").mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(60 + 120 * c + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(grey / f"k{c}" / f"{i}.png")
    out = tmp_path / "bank.safetensors"
    args = [
        "templates",
        "build",
        "--teacher",
        "test_vit",
        "--data",
        str(grey),
        *SMALL,
        "--allow-weak-teacher",
    ]
    summary = _json(CliRunner().invoke(cli, [*args, "--out", str(out), "--json"]))
    assert summary["geometry"]["values"]["img_size"] == 160 and summary["geometry"]["values"]["in_chans"] == 1
    bank = TemplateBank.load(out)
    assert (bank.geometry.img_size, bank.geometry.in_chans) == (160, 1)
    assert bank.provenance["ancestry"]["input"]["channels_repeated_to"] == 3


def test_rgb_data_with_a_grey_teacher_needs_in_chans_1(rgb224, tmp_path):
    spec = ViTSpec(depth=1, embed_dim=16, num_heads=2, patch_size=4, img_size=8, in_chans=1, num_classes=4)
    teacher = tmp_path / "grey_teacher.safetensors"
    save_folded(teacher, random_init(spec, seed=1).state_dict(), spec, {})
    base = ["templates", "build", "--teacher-checkpoint", str(teacher), "--data", str(rgb224)]
    base += [
        "--aux-depth",
        "1",
        "--aux-embed-dim",
        "16",
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--allow-weak-teacher",
    ]
    refused = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a.safetensors")])
    assert refused.exit_code == 3 and "--in-chans 1" in refused.stderr
    out = tmp_path / "b.safetensors"
    assert CliRunner().invoke(cli, [*base, "--in-chans", "1", "--out", str(out)]).exit_code == 0
    bank = TemplateBank.load(out)
    assert (bank.geometry.img_size, bank.geometry.in_chans, bank.geometry.patch_size) == (8, 1, 4)


def test_a_headless_backbone_state_dict_teaches_through_a_fitted_head(rgb224, fine_tuned, tmp_path):
    """A self-supervised backbone's state dict has no classifier (timm builds DINO, DINOv2 and MAE models with
    num_classes=0): the model is built headless, and the linear probe gives it a head for the data's classes."""
    ckpt = tmp_path / "test_vit_headless.safetensors"
    save_file({k: v for k, v in fine_tuned.items() if not k.startswith("head.")}, str(ckpt))
    out = tmp_path / "bank.safetensors"
    teacher = ["--teacher-checkpoint", str(ckpt), "--teacher-arch", "test_vit"]
    args = ["templates", "build", *teacher, "--data", str(rgb224), *SMALL, "--out", str(out), "--json"]
    summary = _json(CliRunner().invoke(cli, args))
    assert not summary["teacher_check"]["weak"]
    head = TemplateBank.load(out).provenance["ancestry"]["head"]
    assert head["probed"] and head["replaced_classes"] == 0 and head["classes"] == 4


def test_a_state_dict_that_does_not_fit_the_arch_names_its_keys_in_one_line(fine_tuned, rgb224, tmp_path):
    state = dict(fine_tuned)
    state["extra.weight"] = state.pop("blocks.0.norm1.weight")
    state["pos_embed"] = state["pos_embed"][:, :5]
    ckpt = tmp_path / "misfit.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    args = ["templates", "build", "--teacher-checkpoint", str(ckpt), "--teacher-arch", "test_vit"]
    result = CliRunner().invoke(cli, [*args, "--data", str(rgb224), *SMALL, "--out", str(tmp_path / "B")])
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not fit test_vit" in lines[0], lines
    assert "1 missing key (blocks.0.norm1.weight)" in lines[0]
    assert "1 unexpected key (extra.weight)" in lines[0]
    assert "1 mismatched key (pos_embed (1, 5, 64) (the model's (1, 101, 64)))" in lines[0]
    assert "Traceback" not in result.output


def test_pretrained_refuses_a_timm_that_may_unpickle_hub_weights(monkeypatch):
    """timm before 1.0.26 (PR #2679) could torch.load hub weights without weights_only: --pretrained refuses it
    (exit 4) before any download, and pyproject.toml's floor and constraints.txt's pin are at least that."""
    assert TIMM_SAFE_LOADS == (1, 0, 26)
    monkeypatch.setattr(timm, "__version__", "1.0.25")
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("a model was created"))
    with pytest.raises(MissingDependencyError, match=r"needs timm>=1\.0\.26") as refused:
        load_teacher(name="test_vit", pretrained=True)
    assert refused.value.exit_code == 4
    check_timm_loads_safely("1.0.26")
    check_timm_loads_safely("1.1.0")
    root = Path(__file__).resolve().parents[1]
    assert re.search(r'^\s*"timm>=1\.0\.26",', (root / "pyproject.toml").read_text(), re.MULTILINE)
    pins = dict(
        line.split("==") for line in (root / "constraints.txt").read_text().splitlines() if "==" in line
    )
    check_timm_loads_safely(pins["timm"].strip())
