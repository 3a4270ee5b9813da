"""Any size and resolution from any bank: depth and width beyond the auxiliary model, other image sizes."""

import json

import pytest
import torch
from _banks import random_bank
from click.testing import CliRunner

from wave_deploy import data as datasets
from wave_deploy.cli.main import cli
from wave_deploy.errors import InvalidInputError
from wave_deploy.training.folding import check_fold, fold, load_folded, load_folded_file
from wave_deploy.wave.bank import TemplateBank, default_bank_path
from wave_deploy.wave.geometry import TARGET_LIMITS
from wave_deploy.wave.init import aux_model, init_wave_model
from wave_deploy.wave.model import WaveViT


@pytest.fixture(scope="module")
def bank():
    """A bank whose auxiliary model (depth 3, width 16) has random, non-trivial scalers."""
    base = random_bank(max_depth=3, max_embed_dim=16)
    aux = WaveViT(base, base.geometry.make_spec(3, 16), seed=3)
    with torch.no_grad():
        for p in aux.scalers.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    return aux.export_bank({"test": True})


def _x(size=8, seed=0):
    return torch.randn(4, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_deeper_target_starts_as_exactly_the_auxiliary_model(bank):
    aux = aux_model(bank)
    for depth in (4, 7):
        deep = init_wave_model(bank, bank.geometry.make_spec(depth, 16)).eval()
        torch.testing.assert_close(deep(_x()), aux(_x()), rtol=0, atol=1e-5)
        state = deep.expanded_state_dict()  # repeated layers are identities: zero residual-branch outputs
        zero = [i for i in range(depth) if state[f"blocks.{i}.attn.proj.weight"].abs().max() == 0]
        assert len(zero) == depth - 3


def test_a_wider_target_keeps_new_channels_zero_and_new_units_unread(bank):
    wide = init_wave_model(bank, bank.geometry.make_spec(3, 32)).eval()
    state = {k: v.detach() for k, v in wide.expanded_state_dict().items()}
    d = 16  # the auxiliary width; channels 16..31 are new
    for name in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
        assert state[name][d:].abs().max() == 0
    for name in ("pos_embed", "cls_token"):
        assert state[name][..., d:].abs().max() == 0
    assert state["head.weight"][:, d:].abs().max() == 0
    for i in range(3):
        b = f"blocks.{i}."
        qkv = state[b + "attn.qkv.weight"].unflatten(0, (3, 32))
        assert qkv[:, :, d:].abs().max() == 0  # reads no new channel
        assert qkv[:, d:, :d].abs().max() > 0  # new heads compute from old channels
        assert (
            state[b + "attn.proj.weight"][d:].abs().max() == 0
            and state[b + "attn.proj.weight"][:, d:].abs().max() == 0
        )
        assert (
            state[b + "mlp.fc1.weight"][:, d:].abs().max() == 0
            and state[b + "mlp.fc1.weight"][64:, :d].abs().max() > 0
        )
        assert (
            state[b + "mlp.fc2.weight"][d:].abs().max() == 0
            and state[b + "mlp.fc2.weight"][:, 64:].abs().max() == 0
        )
    model = load_folded(*fold(wide))  # folds to plain timm with the usual parity
    assert check_fold(wide, model, _x()) <= 1e-5


def test_a_target_at_another_image_size_resamples_pos_embed_as_timm_does(bank):
    from timm.layers import resample_abs_pos_embed

    at_bank = init_wave_model(bank, bank.geometry.make_spec(2, 16)).eval()
    at_16 = init_wave_model(bank, bank.geometry.make_spec(2, 16, img_size=16)).eval()
    want = resample_abs_pos_embed(at_bank.expand_kind("pos_embed").detach(), [4, 4], num_prefix_tokens=1)
    torch.testing.assert_close(at_16.expand_kind("pos_embed").detach(), want, rtol=0, atol=1e-5)
    model = load_folded(*fold(at_16))
    assert tuple(model(_x(16)).shape) == (4, 10)
    assert check_fold(at_16, model, _x(16)) <= 1e-5


def test_bounds_stay_sane_and_the_bank_file_still_holds_its_aux_to_its_limits(bank):
    geom = bank.geometry
    assert geom.problems(geom.make_spec(9, 64, img_size=32)) == []
    assert "exceeds the largest target" in " ".join(
        geom.problems(geom.make_spec(2, 16).__class__(depth=TARGET_LIMITS["depth"] + 1, embed_dim=16, num_heads=2,
                                                      patch_size=4, img_size=8))
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match="max_depth"):
        geom.check_spec(geom.make_spec(4, 16), aux=True)
    with pytest.raises(InvalidInputError, match="img_size=16 differs"):
        geom.check_spec(geom.make_spec(2, 16, img_size=16), aux=True)


def test_resized_data_keeps_labels_and_normalisation():
    data = datasets.load_builtin().subset(3)
    big = data.resized(56)
    assert tuple(big.train_images.shape[1:]) == (1, 56, 56) and big.info.img_size == 56
    assert torch.equal(big.train_labels, data.train_labels) and big.info.mean == data.info.mean
    mean_diff = (big.train_images.float().mean() - data.train_images.float().mean()).abs()
    assert mean_diff < 1.0  # bilinear resizing keeps the brightness (0..255 scale)


def _init(out, *args):
    return CliRunner().invoke(cli, ["init", *args, "--scaler-steps", "0", "--out", str(out), "--json"])


@pytest.mark.parametrize("args, img", [(["--depth", "8", "--embed-dim", "160"], 28),
                                       (["--depth", "2", "--embed-dim", "64", "--img-size", "56"], 56)])  # fmt: skip
def test_init_with_the_shipped_bank_beyond_its_size_or_resolution_loads_strictly_into_timm(
    tmp_path, args, img
):
    result = _init(tmp_path, *args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["spec"]["img_size"] == img and record["data"]["img_size"] == img
    model, spec, _ = load_folded_file(tmp_path / "model.safetensors")  # strict load into VisionTransformer
    wave = init_wave_model(TemplateBank.load(default_bank_path()), spec, "aux").eval()
    x = torch.randn(2, 1, img, img)
    torch.testing.assert_close(model(x), wave(x), rtol=0, atol=1e-5)
