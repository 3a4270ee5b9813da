"""Folding: a WaveViT becomes a plain timm VisionTransformer (strict load) that computes the same function.

The WaveViT of the first tests lives on the ``device`` fixture (cpu, or cuda under scripts/gpu_check.sh).
"""

import pytest
import torch
from _banks import random_bank
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.errors import InvalidInputError
from wave_deploy.training.baselines import random_init
from wave_deploy.training.folding import fold, load_folded, load_folded_file, parity, save_folded
from wave_deploy.wave.model import WaveViT

TOL = 1e-5  # fp32 max abs error (DESIGN 3.4)


@pytest.fixture(scope="module")
def bank():
    return random_bank()


def _x(n=4):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("width", [8, 16, 24, 48])  # 1x, 2x, 3x, 6x the template size
@pytest.mark.parametrize("depth", range(1, 13))
def test_folded_timm_model_matches_wave_forward(bank, depth, width, device):
    wave = WaveViT(bank, bank.geometry.make_spec(depth, width), seed=depth * 100 + width).to(device)
    state, spec = fold(wave)
    vit = load_folded(state, spec).to(device)  # strict=True inside
    x = _x().to(device)
    assert parity(wave, vit, x) <= TOL
    other = random_init(spec, seed=0).to(device)
    assert parity(wave, other, x) > 1e-3  # an unrelated model of the same spec differs


def test_fold_with_a_fresh_head_for_a_new_task(bank):
    wave = WaveViT(bank, bank.geometry.make_spec(3, 16, num_classes=4), seed=1)
    vit = load_folded(*fold(wave))
    assert vit.head.weight.shape == (4, 16)
    assert parity(wave, vit, _x()) <= TOL


def test_fold_returns_timm_keys_in_order_as_independent_tensors(bank):
    wave = WaveViT(bank, bank.geometry.make_spec(3, 24))
    state, _ = fold(wave)
    assert list(state) == list(VisionTransformer(**wave.spec.timm_kwargs()).state_dict())
    pointers = [t.untyped_storage().data_ptr() for t in state.values()]
    assert len(set(pointers)) == len(pointers)  # no views of a shared expansion (safetensors needs this)
    assert all(not t.requires_grad for t in state.values())


def test_folded_model_contains_no_wave_code(bank):
    vit = load_folded(*fold(WaveViT(bank, bank.geometry.make_spec(2, 16))))
    assert type(vit) is VisionTransformer
    assert all(type(m).__module__.startswith(("timm.", "torch.")) for m in vit.modules())
    assert not any("scaler" in k or "template" in k for k in vit.state_dict())


def test_folded_checkpoint_round_trips_through_safetensors(bank, tmp_path, device):
    wave = WaveViT(bank, bank.geometry.make_spec(5, 24), seed=9).to(device)
    state, spec = fold(wave)
    path = save_folded(tmp_path / "model.safetensors", state, spec, {"steps": 12, "val_acc": 0.5})
    vit, loaded_spec, extra = load_folded_file(path)
    assert loaded_spec == spec and extra == {"steps": 12, "val_acc": 0.5}
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(vit(x), load_folded(state, spec)(x), rtol=0, atol=0)
        # the file's CPU model computes what the (possibly GPU) WaveViT computed
        err = (wave.eval()(x.to(device)).cpu() - vit(x)).abs().max().item()
    assert err <= TOL
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_state_dict_of_another_spec_is_refused(bank):
    state, spec = fold(WaveViT(bank, bank.geometry.make_spec(2, 16)))
    with pytest.raises(InvalidInputError, match="does not fit"):
        load_folded(state, spec.replace(depth=3))


def test_loading_a_file_that_is_not_a_folded_checkpoint_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_folded_file(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(InvalidInputError, match="not a wave-deploy folded checkpoint"):
        load_folded_file(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(InvalidInputError, match="not a readable safetensors file"):
        load_folded_file(junk)


def test_parity_restores_training_modes(bank):
    wave = WaveViT(bank, bank.geometry.make_spec(1, 8)).train()
    vit = load_folded(*fold(wave)).train()
    parity(wave, vit, _x())
    assert wave.training and vit.training
