"""WaveViT: every parameter follows the expansion rule, forward is timm's, gradients reach the scalers.

Models in the first tests run on the ``device`` fixture (cpu, or cuda under scripts/gpu_check.sh).
"""

import pytest
import torch
from _banks import random_bank
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.errors import InvalidInputError
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.geometry import ALL_KINDS, BLOCK_KINDS, HEAD_KINDS
from wave_deploy.wave.model import WaveViT


@pytest.fixture(scope="module")
def bank():
    return random_bank()


def _naive(S, T):
    """sum_t kron(S[t], T[t]) with torch.kron (matrices or vectors)."""
    return sum(torch.kron(S[t], T[t]) for t in range(S.shape[0]))


def _x(n=3, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("depth, width", [(1, 8), (2, 16), (3, 24), (2, 48)])
def test_every_expanded_parameter_equals_the_naive_kron_rule(bank, depth, width, device):
    model = WaveViT(bank, bank.geometry.make_spec(depth, width), seed=1).double().to(device)
    dense = {k: v.cpu() for k, v in model.expanded_state_dict().items()}
    timm_shapes = {k: v.shape for k, v in VisionTransformer(**model.spec.timm_kwargs()).state_dict().items()}
    assert {k: v.shape for k, v in dense.items()} == timm_shapes
    for kind in ALL_KINDS:
        S, T = model.scaler(kind).detach().cpu(), model.template(kind).cpu()
        if kind in BLOCK_KINDS:
            for layer in range(depth):
                ref = _naive(S[layer], T).reshape(dense[f"blocks.{layer}.{kind}"].shape)
                torch.testing.assert_close(dense[f"blocks.{layer}.{kind}"], ref, rtol=0, atol=1e-15)
        else:
            torch.testing.assert_close(
                dense[kind], _naive(S, T).reshape(dense[kind].shape), rtol=0, atol=1e-15
            )


def test_pos_embed_token_row_is_the_template_row_mixed_per_width_segment(bank):
    model = WaveViT(bank, bank.geometry.make_spec(1, 16), seed=2).double()
    pos = model.expanded_state_dict()["pos_embed"]  # (1, 5, 16)
    S, T = model.scaler("pos_embed").detach(), model.template("pos_embed")  # (N, 1, 2), (N, 5, 8)
    token, segment = 3, 1
    expected = (S[:, 0, segment, None] * T[:, token]).sum(0)
    torch.testing.assert_close(pos[0, token, 8:16], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("num_classes", [10, 4])  # the bank's own task (templated head) and a new one
def test_forward_equals_timm_vit_loaded_with_the_expanded_weights(bank, num_classes, device):
    model = WaveViT(bank, bank.geometry.make_spec(3, 24, num_classes=num_classes), seed=3).eval().to(device)
    vit = VisionTransformer(**model.spec.timm_kwargs()).eval().to(device)
    vit.load_state_dict({k: v.detach() for k, v in model.expanded_state_dict().items()}, strict=True)
    x = _x().to(device)
    with torch.no_grad():
        out, ref = model(x), vit(x)
    assert out.shape == (3, num_classes) and out.std() > 1e-3  # a non-degenerate function of the input
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_gradients_reach_every_scaler_and_no_frozen_template(bank, device):
    model = WaveViT(bank, bank.geometry.make_spec(2, 16), seed=4).to(device)
    assert all(not b.requires_grad for b in model.templates.buffers())
    model(_x().to(device)).logsumexp(-1).sum().backward()
    for kind in ALL_KINDS:
        grad = model.scaler(kind).grad
        assert grad is not None and grad.abs().sum() > 0, kind
    assert {n for n, _ in model.named_parameters()} == {f"scalers.{k.replace('.', '__')}" for k in ALL_KINDS}


def test_trainable_templates_receive_gradients_for_stage_one(bank, device):
    model = WaveViT(bank, bank.geometry.make_spec(2, 16), train_templates=True).to(device)
    model(_x().to(device)).logsumexp(-1).sum().backward()
    for kind in ALL_KINDS:
        grad = model.template(kind).grad
        assert grad is not None, kind
        # dT = sum over tiles of S * dW: zero exactly where the scalers are zero (bias kinds at init)
        assert (grad.abs().sum() > 0) == bool(model.scaler(kind).detach().abs().sum() > 0), kind


def test_scaler_count_is_the_trainable_parameter_count_and_matches_shapes(bank):
    spec = bank.geometry.make_spec(3, 24)
    model = WaveViT(bank, spec)
    assert model.scaler_count() == sum(p.numel() for p in model.parameters())
    n = bank.geometry.templates
    assert tuple(model.scaler("attn.qkv.weight").shape) == (3, n["attn.qkv.weight"], 9, 3)
    assert tuple(model.scaler("mlp.fc2.weight").shape) == (3, n["mlp.fc2.weight"], 3, 12)
    assert tuple(model.scaler("pos_embed").shape) == (n["pos_embed"], 1, 3)
    assert not any(isinstance(m, VisionTransformer) for m in model.modules())  # the skeleton is no submodule


def test_random_scalers_give_timm_scale_weights_per_layer(bank):
    model = WaveViT(bank, bank.geometry.make_spec(4, 32), seed=5)
    dense = model.expanded_state_dict()
    for layer in range(4):
        for kind in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
            assert abs(dense[f"blocks.{layer}.{kind}"].std().item() - 0.02) < 1e-6
        torch.testing.assert_close(dense[f"blocks.{layer}.norm1.weight"], torch.ones(32), rtol=0, atol=1e-5)
        assert torch.equal(dense[f"blocks.{layer}.attn.qkv.bias"], torch.zeros(96))
    assert abs(dense["pos_embed"].std().item() - 0.02) < 1e-6
    assert abs(dense["cls_token"].std().item() - 1e-6) < 1e-10


def test_random_scalers_are_reproducible_from_the_generator(bank):
    spec = bank.geometry.make_spec(2, 16)
    a, b, c = WaveViT(bank, spec, seed=7), WaveViT(bank, spec, seed=7), WaveViT(bank, spec, seed=8)
    assert all(torch.equal(a.scaler(k), b.scaler(k)) for k in ALL_KINDS)
    assert not torch.equal(a.scaler("attn.qkv.weight"), c.scaler("attn.qkv.weight"))


def test_new_task_gets_a_plain_timm_initialized_head(bank):
    model = WaveViT(bank, bank.geometry.make_spec(2, 16, num_classes=3), seed=0)
    assert not model.templated_head and not set(HEAD_KINDS) & set(model.layouts)
    assert model.head.weight.shape == (3, 16) and torch.equal(model.head.bias, torch.zeros(3))
    assert 0.005 < model.head.weight.std().item() < 0.05
    assert model.expanded_state_dict()["head.weight"] is model.head.weight


def test_double_precision_moves_templates_and_scalers(bank):
    model = WaveViT(bank, bank.geometry.make_spec(1, 8)).double()
    assert model.template("attn.qkv.weight").dtype == torch.float64
    assert model(_x().double()).dtype == torch.float64


def test_load_scalers_sets_values_and_rejects_wrong_shapes(bank):
    spec = bank.geometry.make_spec(2, 16)
    source, target = WaveViT(bank, spec, seed=1), WaveViT(bank, spec, seed=2)
    target.load_scalers(source.scalers_dict())
    with torch.no_grad():
        torch.testing.assert_close(target(_x()), source(_x()), rtol=0, atol=0)
    bad = source.scalers_dict()
    bad["attn.proj.weight"] = torch.zeros(2, 3, 3, 2)
    with pytest.raises(InvalidInputError, match="attn.proj.weight"):
        target.load_scalers(bad)


def test_exported_bank_round_trips_the_auxiliary_model(bank, tmp_path):
    spec = bank.geometry.make_spec(2, 16)
    aux = WaveViT(bank, spec, train_templates=True, seed=3)
    with torch.no_grad():
        aux.template("attn.qkv.weight").mul_(1.5)  # stands in for stage-1 training of the templates
    path = aux.export_bank({"ancestry": "unit test"}).save(tmp_path / "bank.safetensors")
    loaded = TemplateBank.load(path)
    rebuilt = WaveViT(loaded, loaded.aux_spec)
    rebuilt.load_scalers(loaded.aux_scalers)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(_x()), aux(_x()), rtol=0, atol=0)


def test_unproducible_spec_is_invalid_input(bank):
    with pytest.raises(InvalidInputError, match="exceeds the largest target"):
        WaveViT(bank, bank.geometry.make_spec(2, 16).replace(depth=257))
