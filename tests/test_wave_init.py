"""Stage-2 initialization: slicing the auxiliary scalers equals slicing the dense auxiliary weights."""

import pytest
import torch
from _banks import random_bank

from wave_deploy.errors import InvalidInputError
from wave_deploy.training.loop import distillation_loss
from wave_deploy.wave.bank import TemplateBank
from wave_deploy.wave.init import Distiller, aux_model, init_wave_model, is_bank_task
from wave_deploy.wave.model import WaveViT
from wave_deploy.wave.slicing import RESIDUAL_OUTPUT_KINDS, SlicedModel, layer_indices, slice_scalers


@pytest.fixture(scope="module")
def bank():
    """A bank whose auxiliary model (depth 5, width 48) has random, non-trivial scalers."""
    base = random_bank(max_depth=7)
    geom = base.geometry
    aux = WaveViT(base, geom.make_spec(5, 48), seed=3)
    with torch.no_grad():  # make every scaler (biases and norms too) distinct and non-zero
        for p in aux.scalers.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    return aux.export_bank({"test": True})


def _x(seed=0):
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _dense_slice(name: str, W: torch.Tensor, D: int, H: int, D_aux: int) -> torch.Tensor:
    """The naive reference: the same sub-network cut out of the auxiliary model's dense weights."""
    kind = name.split(".", 2)[-1] if name.startswith("blocks.") else name
    if kind == "attn.qkv.weight":
        return torch.cat([W[i * D_aux : i * D_aux + D, :D] for i in range(3)])
    if kind == "attn.qkv.bias":
        return torch.cat([W[i * D_aux : i * D_aux + D] for i in range(3)])
    if kind == "attn.proj.weight":
        return W[:D, :D]
    if kind == "mlp.fc1.weight":
        return W[:H, :D]
    if kind == "mlp.fc1.bias":
        return W[:H]
    if kind == "mlp.fc2.weight":
        return W[:D, :H]
    if kind in ("cls_token", "pos_embed"):
        return W[..., :D]
    if kind == "head.weight":
        return W[:, :D]
    if kind == "head.bias":
        return W
    return W[:D]  # patch embed (out channels), norms and the remaining D-vectors


def test_layer_indices_follow_relative_depth():
    assert layer_indices(6, 6) == [0, 1, 2, 3, 4, 5]
    assert layer_indices(6, 3) == [0, 2, 4]
    assert layer_indices(6, 1) == [0]
    assert layer_indices(3, 6) == [0, 0, 1, 1, 2, 2]  # deeper than the source: layers repeat


@pytest.mark.parametrize("depth, width", [(5, 48), (1, 8), (2, 16), (3, 24), (5, 40), (7, 32)])
def test_sliced_expansion_equals_the_slice_of_the_dense_auxiliary_weights(bank, depth, width):
    src = aux_model(bank).double()
    dense_src = src.expanded_state_dict()
    model = init_wave_model(bank, bank.geometry.make_spec(depth, width), "aux").double()
    dense = model.expanded_state_dict()
    layers = layer_indices(src.spec.depth, depth)
    for name, value in dense.items():
        src_name = name
        if name.startswith("blocks."):
            _, i, rest = name.split(".", 2)
            src_name = f"blocks.{layers[int(i)]}.{rest}"
        ref = _dense_slice(name, dense_src[src_name], width, model.spec.mlp_hidden, src.spec.embed_dim)
        if name.startswith("blocks."):  # deeper than the source: a repeated layer starts as the identity
            i, rest = int(name.split(".")[1]), name.split(".", 2)[-1]
            if i > 0 and layers[i] == layers[i - 1] and rest in RESIDUAL_OUTPUT_KINDS:
                ref = torch.zeros_like(ref)
        torch.testing.assert_close(value, ref, rtol=0, atol=1e-12, msg=name)


def test_slicing_to_the_auxiliary_size_is_the_identity(bank):
    scalers = bank.aux_scalers
    out = slice_scalers(scalers, bank.aux_spec, bank.aux_spec, bank.geometry.w)
    assert all(torch.equal(out[k], scalers[k]) for k in scalers)


def test_sliced_model_module_matches_an_initialized_target(bank):
    spec = bank.geometry.make_spec(3, 24)
    aux = aux_model(bank)
    target = init_wave_model(bank, spec, "aux").eval()
    torch.testing.assert_close(SlicedModel(aux, spec)(_x()), target(_x()), rtol=0, atol=1e-6)


def test_slicing_is_differentiable_back_to_the_auxiliary_scalers(bank):
    aux = WaveViT(bank, bank.aux_spec)
    aux.load_scalers(bank.aux_scalers)
    SlicedModel(aux, bank.geometry.make_spec(2, 16))(_x()).square().sum().backward()
    qkv = aux.scaler(
        "attn.qkv.weight"
    ).grad  # (L=5, N, 18, 6): only layers 0 and 2, k rows 0..1 of each block
    assert qkv[[0, 2]].abs().sum() > 0
    assert qkv[[1, 3, 4]].abs().sum() == 0
    assert qkv[:, :, 2:6].abs().sum() == 0 and qkv[:, :, :, 2:].abs().sum() == 0


def test_random_strategy_differs_from_aux_and_new_task_gets_a_fresh_head(bank):
    spec = bank.geometry.make_spec(2, 16)
    aux_init = init_wave_model(bank, spec, "aux").eval()
    rand_init = init_wave_model(bank, spec, "random").eval()
    assert not torch.allclose(aux_init(_x()), rand_init(_x()))
    new_task = init_wave_model(bank, spec.replace(num_classes=3), "aux")
    assert not new_task.templated_head and new_task(_x()).shape == (4, 3)


def test_bad_strategy_and_a_bank_without_aux_scalers_are_refused(bank):
    spec = bank.geometry.make_spec(2, 16)
    with pytest.raises(InvalidInputError, match="unknown init strategy"):
        init_wave_model(bank, spec, "magic")
    bare = TemplateBank.init_random(bank.geometry)
    with pytest.raises(InvalidInputError, match="no auxiliary scalers"):
        init_wave_model(bare, spec, "aux")
    with pytest.raises(InvalidInputError, match="exceeds"):
        init_wave_model(bank, bank.geometry.make_spec(2, 16).replace(depth=300), "aux")  # beyond any target


def test_distiller_returns_logits_without_labels_and_the_distillation_loss_with_them(bank):
    student = init_wave_model(bank, bank.geometry.make_spec(2, 16), "random")
    teacher = aux_model(bank)
    d = Distiller(student, teacher, tau=3.0, alpha=0.25).train()
    x, y = _x(), torch.tensor([1, 2, 3, 4])
    assert not teacher.training  # the teacher stays in eval mode
    torch.testing.assert_close(d(x), student(x))
    ref = distillation_loss(student(x), teacher(x), y, tau=3.0, alpha=0.25)
    torch.testing.assert_close(d(x, y), ref)


def test_a_task_with_other_class_names_is_a_new_task_even_with_the_same_class_count(bank):
    import dataclasses

    named = dataclasses.replace(bank, provenance={"data": {"class_names": [str(i) for i in range(10)]}})
    assert is_bank_task(named, [str(i) for i in range(10)])
    assert not is_bank_task(named, [f"c{i}" for i in range(10)])
    assert not is_bank_task(named, ["0", "1"])
    spec = bank.geometry.make_spec(2, 16)
    assert not init_wave_model(named, spec, "aux", same_task=False).templated_head
    assert init_wave_model(named, spec, "aux", same_task=True).templated_head
