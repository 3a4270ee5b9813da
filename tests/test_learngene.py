"""Stage 1 (learngene): the elastic objective, the bank it writes, the CLI, and 2-process DDP equivalence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _stage1_data import stripe_folder
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.fileio import sha256_file
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import save_folded
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.model import WaveViT
from wave_deploy.wave.stage1.learngene import ElasticStudent, LearngeneConfig, bank_geometry, elastic_sizes

TINY = [
    "--aux-depth",
    "2",
    "--aux-embed-dim",
    "16",
    "--template-size",
    "8",
    "--head-dim",
    "8",
    "--templates-per-kind",
    "2",
    "--vector-templates",
    "2",
    "--batch-size",
    "8",
    "--seed",
    "3",
    "--allow-weak-teacher",  # the teachers here are untrained: near chance by design
]


def build_args(teacher: list[str], data: Path, *extra: str) -> list[str]:
    """`templates build` arguments: the teacher options, the data, ``extra`` (incl. --out) and TINY."""
    return ["templates", "build", *teacher, "--data", str(data), *extra, *TINY]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """An ImageFolder tree of 8x8 grey images, 3 classes told apart by which third of the image is bright."""
    return stripe_folder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    spec = ViTSpec(depth=1, embed_dim=16, num_heads=2, patch_size=4, img_size=8, in_chans=1, num_classes=3)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_folded(path, random_init(spec, seed=1).state_dict(), spec, {"val_accuracy": None})
    return path


def test_elastic_student_samples_the_same_subnet_for_the_same_step_and_seed():
    cfg = LearngeneConfig(
        aux_depth=2, aux_embed_dim=16, w=8, head_dim=8, patch_size=4, n_matrix=2, n_vector=2
    )
    geom = bank_geometry(cfg, img_size=8, in_chans=1, num_classes=3)
    aux_spec = geom.make_spec(2, 16)
    sizes = elastic_sizes(geom, aux_spec)
    assert {(s.depth, s.embed_dim) for s in sizes} == {(1, 8), (1, 16), (2, 8)}
    bank = TemplateBank.init_random(geom)
    teacher = random_init(aux_spec, seed=0)

    def sequence(seed):
        student = ElasticStudent(WaveViT(bank, aux_spec), teacher, sizes, LearngeneConfig(seed=seed))
        x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
        out = []
        for _ in range(12):
            out.append(student.sampled_subnet().spec.name)
            student(x, y)
        assert int(student.step) == 12
        student(x)  # evaluation calls do not advance the schedule
        assert int(student.step) == 12
        return out

    assert sequence(0) == sequence(0)
    assert sequence(0) != sequence(1)
    assert set(sequence(0)) == {s.name for s in sizes}


def test_templates_build_writes_a_verified_bank_with_provenance(tiny_data, teacher_ckpt, tmp_path):
    out = tmp_path / "bank.safetensors"
    args = build_args(
        ["--teacher-checkpoint", str(teacher_ckpt)], tiny_data, "--out", str(out), "--steps", "6", "--json"
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 6 and set(summary["accuracies"]) >= {"teacher", "aux"}
    bank = TemplateBank.load(out)
    prov = bank.provenance
    # provenance holds no absolute path (issue 13): the file name here (not under the working directory)
    assert prov["ancestry"]["checkpoint"] == teacher_ckpt.name
    assert prov["ancestry"]["checkpoint_sha256"] == sha256_file(teacher_ckpt)
    assert prov["data"]["num_classes"] == 3 and prov["schedule"]["steps_run"] == 6
    assert (bank.aux_spec.depth, bank.aux_spec.embed_dim) == (2, 16)
    info = CliRunner().invoke(cli, ["templates", "info", str(out), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["aux_spec"]["embed_dim"] == 16
    # --resume on a finished run trains nothing more and writes the same bank
    again = CliRunner().invoke(cli, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    bank2 = TemplateBank.load(out)
    assert all(torch.equal(bank2.aux_scalers[k], bank.aux_scalers[k]) for k in bank.aux_scalers)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--teacher", "vit_tiny_patch16_224"], "exactly one of"),
        (["--steps", "2", "--epochs", "1"], "not both"),
    ],
)
def test_templates_build_usage_errors_exit_2(tiny_data, teacher_ckpt, tmp_path, extra, message):
    out = tmp_path / "b.safetensors"
    args = build_args(["--teacher-checkpoint", str(teacher_ckpt)], tiny_data, "--out", str(out), *extra)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_a_checkpoint_that_does_not_fit_the_teacher_arch_exits_3(tiny_data, teacher_ckpt, tmp_path):
    teacher = ["--teacher-checkpoint", str(teacher_ckpt), "--teacher-arch", "vit_tiny_patch16_224"]
    result = CliRunner().invoke(cli, build_args(teacher, tiny_data, "--out", str(tmp_path / "b.safetensors")))
    assert result.exit_code == 3, result.output
    assert "does not fit vit_tiny_patch16_224" in result.output


def test_a_pickled_teacher_file_is_refused_without_running_it(tiny_data, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "teacher.pt"
    torch.save({"model": Payload()}, evil)
    teacher = ["--teacher-checkpoint", str(evil), "--teacher-arch", "vit_tiny_patch16_224"]
    result = CliRunner().invoke(cli, build_args(teacher, tiny_data, "--out", str(tmp_path / "b.safetensors")))
    assert result.exit_code == 3, result.output
    assert "safely" in result.output
    assert not marker.exists()


def test_missing_teacher_checkpoint_exits_3(tiny_data, tmp_path):
    teacher = ["--teacher-checkpoint", str(tmp_path / "nope.pt")]
    result = CliRunner().invoke(cli, build_args(teacher, tiny_data, "--out", str(tmp_path / "b.safetensors")))
    assert result.exit_code == 3 and "does not exist" in result.output


def test_two_gloo_processes_build_the_same_bank_as_one(tiny_data, teacher_ckpt, tmp_path):
    """torchrun with 2 CPU processes and the same global batch gives the one-process bank (atol 1e-5)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = build_args(
        ["--teacher-checkpoint", str(teacher_ckpt)],
        tiny_data,
        "--steps",
        "5",
        "--lr",
        "0.2",
        "--device",
        "cpu",
    )
    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    subprocess.run(
        [sys.executable, "-m", "wave_deploy.cli.main", "-q", *common, "--out", str(one)],
        check=True,
        env=env,
        timeout=300,
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, "-m", "wave_deploy.cli.main", "-q", *common, "--out", str(two)],
        check=False,
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # every rank exits cleanly (it leaves its gloo group)
    a, b = TemplateBank.load(one), TemplateBank.load(two)
    moved = max(
        (a.templates[k] - TemplateBank.init_random(a.geometry, seed=3).templates[k]).abs().max()
        for k in a.templates
    )
    assert moved > 1e-3  # training really changed the templates
    for k in a.templates:
        torch.testing.assert_close(a.templates[k], b.templates[k], rtol=0, atol=1e-5)
    for k in a.aux_scalers:
        torch.testing.assert_close(a.aux_scalers[k], b.aux_scalers[k], rtol=0, atol=1e-5)


def test_a_timm_teacher_by_name_gets_its_own_input_size_and_channels(tiny_data, tmp_path):
    """--teacher NAME (no download) with an explicit 8 px geometry: a 224 px RGB timm model teaches an 8 px
    grey bank through resized, channel-repeated inputs (options win over the teacher's geometry)."""
    out = tmp_path / "bank.safetensors"
    args = build_args(
        ["--teacher", "vit_tiny_patch16_224"],
        tiny_data,
        "--out",
        str(out),
        "--steps",
        "2",
        "--img-size",
        "8",
        "--patch-size",
        "4",
        "--json",
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    bank = TemplateBank.load(out)
    ancestry = bank.provenance["ancestry"]
    assert (ancestry["name"], ancestry["pretrained"]) == ("vit_tiny_patch16_224", False)
    assert ancestry["input"] == {"normalisation": "the data's", "resized_to": 224, "channels_repeated_to": 3}
    assert bank.geometry.img_size == 8 and bank.geometry.in_chans == 1 and bank.geometry.patch_size == 4
    assert bank.provenance["geometry_sources"]["img_size"] == "option"
