"""`wave-deploy init`: one size from a bank, folded into a timm checkpoint that loads strictly."""

import json

import pytest
import torch
from _banks import mnist_bank_file
from click.testing import CliRunner

from wave_deploy.cli.main import cli
from wave_deploy.training.folding import load_folded_file
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.init import init_wave_model


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    return mnist_bank_file(tmp_path_factory.mktemp("bank"), max_depth=3, max_embed_dim=48)


def _init(bank_path, out, *args: str):
    return CliRunner().invoke(
        cli, ["init", "--templates", str(bank_path), *args, "--out", str(out), "--json"]
    )


def test_init_without_training_writes_exactly_the_sliced_model(bank_path, tmp_path):
    out = tmp_path / "out"
    result = _init(bank_path, out, "--depth", "2", "--embed-dim", "32", "--scaler-steps", "0")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["spec"]["depth"] == 2 and record["spec"]["embed_dim"] == 32 and record["same_task_as_bank"]
    assert record["scaler_phase"] is None and record["dense_phase"] is None
    assert json.loads((out / "init.json").read_text())["val_acc"] == record["val_acc"]
    model, spec, _ = load_folded_file(out / "model.safetensors")  # strict load into timm's VisionTransformer
    bank = TemplateBank.load(bank_path)
    wave = init_wave_model(bank, spec, "aux").eval()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), wave(x), rtol=0, atol=1e-5)


def test_init_trains_the_scalers_and_records_the_phase(bank_path, tmp_path):
    result = _init(
        bank_path, tmp_path, "--depth", "1", "--embed-dim", "16", "--scaler-steps", "3", "--dense-steps", "2",
        "--batch-size", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["scaler_phase"]["steps"] == 3 and record["dense_phase"]["steps"] == 2


def test_compile_reaches_the_training_steps_and_computes_what_eager_does(bank_path, tmp_path):
    """--compile runs the dense step through torch.compile (inductor, a real compilation: ~30 s). The
    one step's loss is computed at the sliced weights, identical in both runs: compiled = eager."""
    args = [
        "--depth",
        "1",
        "--embed-dim",
        "16",
        "--scaler-steps",
        "0",
        "--dense-steps",
        "1",
        "--batch-size",
        "16",
    ]
    records = {}
    for flag in ([], ["--compile"]):
        result = _init(bank_path, tmp_path / ("c" if flag else "e"), *args, *flag)
        assert result.exit_code == 0, result.output
        records[bool(flag)] = json.loads(result.stdout)["dense_phase"]
    assert records[True]["compiled"] is True and records[False]["compiled"] is False
    assert records[True]["data_placement"] == records[False]["data_placement"] == "host"
    loss = {k: r["curve"][-1]["train_loss"] for k, r in records.items()}
    assert loss[True] == pytest.approx(loss[False], rel=1e-5, abs=1e-6)
    load_folded_file(tmp_path / "c" / "model.safetensors")  # strict: no torch.compile wrapper in the names


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--depth", "2", "--embed-dim", "40"], 3, "not a multiple"),
        (["--depth", "300", "--embed-dim", "32"], 3, "exceeds the largest target a bank makes"),
        (["--depth", "2", "--embed-dim", "32", "--img-size", "30"], 2, "not a multiple of the patch size"),
        (["--depth", "2", "--embed-dim", "32", "--scaler-steps", "-1"], 2, "-1 is not in the range x>=0"),
    ],
)
def test_init_rejects_sizes_the_bank_cannot_make(bank_path, tmp_path, args, code, message):
    result = CliRunner().invoke(
        cli, ["init", "--templates", str(bank_path), *args, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()
