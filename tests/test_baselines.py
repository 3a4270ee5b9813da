"""Baselines: seeded timm init, and weight selection (Xu et al. 2024) with axis-consistent uniform indices."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import ViTSpec
from wave_deploy.training.baselines import random_init, selection_indices, uniform_indices, weight_selection

TEACHER = ViTSpec(depth=4, embed_dim=48, num_heads=6, patch_size=4, img_size=8, in_chans=1, num_classes=10)
STUDENT = ViTSpec(depth=2, embed_dim=16, num_heads=2, patch_size=4, img_size=8, in_chans=1, num_classes=10)


@pytest.fixture(scope="module")
def teacher():
    return random_init(TEACHER, seed=123)


def _x():
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_random_init_is_reproducible_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a, b, c = random_init(STUDENT, 1), random_init(STUDENT, 1), random_init(STUDENT, 2)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(
        a.state_dict()["blocks.0.attn.qkv.weight"], c.state_dict()["blocks.0.attn.qkv.weight"]
    )
    assert type(a) is VisionTransformer and a.blocks[0].attn.num_heads == 2


def test_weight_selection_of_the_same_spec_reproduces_the_teacher_exactly(teacher):
    copy = weight_selection(teacher, TEACHER, TEACHER, seed=0)
    for name, value in teacher.state_dict().items():
        assert torch.equal(copy.state_dict()[name], value), name
    with torch.no_grad():
        assert torch.equal(copy.eval()(_x()), teacher.eval()(_x()))


def test_uniform_indices_are_evenly_spaced_from_zero():
    assert uniform_indices(48, 16).tolist() == list(range(0, 48, 3))
    assert uniform_indices(10, 4).tolist() == [0, 2, 5, 7]
    assert uniform_indices(7, 7).tolist() == list(range(7))
    with pytest.raises(InvalidInputError):
        uniform_indices(4, 5)


def test_selection_keeps_whole_heads_and_the_same_channels_in_q_k_and_v():
    idx = selection_indices(TEACHER, STUDENT)
    assert idx["layers"].tolist() == [0, 1]
    assert idx["embed"].tolist() == list(range(0, 48, 3))
    # teacher heads 0..5 of 8 channels; the student's 2 heads are teacher heads 0 and 3, all 8 channels each
    assert idx["attn"].tolist() == list(range(8)) + list(range(24, 32))
    assert (
        idx["qkv"].tolist()
        == idx["attn"].tolist() + (idx["attn"] + 48).tolist() + (idx["attn"] + 96).tolist()
    )
    assert idx["mlp"].tolist() == list(range(0, 192, 3))


def test_selection_falls_back_to_flat_attention_indices_when_heads_do_not_fit():
    student = STUDENT.replace(num_heads=8)  # 8 heads > the teacher's 6
    idx = selection_indices(TEACHER, student)
    assert idx["attn"].tolist() == uniform_indices(48, 16).tolist() and idx["qkv"].shape == (48,)


def test_selected_weights_are_the_teachers_at_the_selected_indices(teacher):
    student = weight_selection(teacher.state_dict(), TEACHER, STUDENT, seed=0)
    s, t, idx = student.state_dict(), teacher.state_dict(), selection_indices(TEACHER, STUDENT)
    e, q, a, m = idx["embed"], idx["qkv"], idx["attn"], idx["mlp"]
    assert torch.equal(s["blocks.1.attn.qkv.weight"], t["blocks.1.attn.qkv.weight"][q][:, e])
    assert torch.equal(s["blocks.1.attn.qkv.bias"], t["blocks.1.attn.qkv.bias"][q])
    assert torch.equal(s["blocks.1.attn.proj.weight"], t["blocks.1.attn.proj.weight"][e][:, a])
    assert torch.equal(s["blocks.0.mlp.fc1.weight"], t["blocks.0.mlp.fc1.weight"][m][:, e])
    assert torch.equal(s["blocks.0.mlp.fc2.weight"], t["blocks.0.mlp.fc2.weight"][e][:, m])
    assert torch.equal(s["blocks.0.norm2.weight"], t["blocks.0.norm2.weight"][e])
    assert torch.equal(s["patch_embed.proj.weight"], t["patch_embed.proj.weight"][e])
    assert torch.equal(s["pos_embed"], t["pos_embed"][..., e])
    assert torch.equal(s["cls_token"], t["cls_token"][..., e])
    assert torch.equal(s["head.weight"], t["head.weight"][:, e]) and torch.equal(
        s["head.bias"], t["head.bias"]
    )
    assert set(s) == set(VisionTransformer(**STUDENT.timm_kwargs()).state_dict())


def test_a_new_task_gets_the_seeded_fresh_head(teacher):
    spec = STUDENT.replace(num_classes=3)
    student = weight_selection(teacher, TEACHER, spec, seed=4)
    fresh = random_init(spec, seed=4)
    assert torch.equal(student.head.weight, fresh.head.weight)
    assert torch.equal(student.blocks[0].norm1.weight, teacher.blocks[0].norm1.weight[::3])


def test_a_new_task_with_the_teachers_class_count_gets_a_fresh_head_when_told(teacher):
    """Transfer 0-4 -> 5-9: same class count, other classes: the teacher's classifier must not carry over."""
    kept = weight_selection(teacher, TEACHER, STUDENT, seed=4)
    fresh = weight_selection(teacher, TEACHER, STUDENT, seed=4, new_task=True)
    assert torch.equal(kept.head.weight, teacher.head.weight[:, ::3])
    assert torch.equal(fresh.head.weight, random_init(STUDENT, seed=4).head.weight)
    assert torch.equal(fresh.head.bias, random_init(STUDENT, seed=4).head.bias)
    assert torch.equal(fresh.blocks[1].mlp.fc1.weight, kept.blocks[1].mlp.fc1.weight)  # the rest is selected
    with pytest.raises(InvalidInputError, match="new_task=False"):
        weight_selection(teacher, TEACHER, STUDENT.replace(num_classes=3), new_task=False)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"depth": 5}, "depth"),
        ({"embed_dim": 56, "num_heads": 7}, "embed_dim"),
        ({"img_size": 12}, "img_size"),
    ],
)
def test_a_student_larger_than_the_teacher_or_of_other_input_geometry_is_refused(teacher, change, reason):
    with pytest.raises(InvalidInputError, match=reason):
        weight_selection(teacher, TEACHER, STUDENT.replace(**change))


def test_teacher_weights_of_another_spec_are_refused(teacher):
    with pytest.raises(InvalidInputError, match="teacher weights do not match"):
        weight_selection(teacher, TEACHER.replace(depth=5), STUDENT)
