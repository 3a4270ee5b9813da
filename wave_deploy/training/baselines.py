"""Initialization baselines WAVE is measured against (DESIGN 3.3), both returning a timm VisionTransformer.

- ``random_init``: timm's default initialization, seeded.
- ``weight_selection``: Xu et al., "Initializing Models with Larger Ones" (ICLR 2024): the student takes the
  teacher's first N blocks, and along every dimension uniformly spaced element indices. Indices are chosen
  once per axis and reused by every parameter on that axis, so the residual-stream channels, the attention
  heads and the MLP hidden units of different parameters stay aligned:
    embed (D_t -> D): patch_embed rows, cls/pos columns, norms, qkv/fc1 columns, proj/fc2 rows, head columns
    attn (D_t -> D):  qkv rows (the same selection inside each of the q, k, v blocks), proj columns; whole
                      heads when the student's heads fit in the teacher's (H <= H_t, head_dim <= head_dim_t:
                      uniform heads x uniform channels within a head), else uniform over the flat axis
    mlp (H_t -> H):   fc1 rows and bias, fc2 columns
A new task (other classes than the teacher's, or ``new_task=True`` when the class count happens to match) gets
timm's fresh head; only the teacher's own task keeps its classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wave_deploy.errors import InvalidInputError
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.geometry import KINDS, WIDTH_AXES


def random_init(spec: ViTSpec, seed: int = 0):
    """``VisionTransformer(**spec.timm_kwargs())`` with timm's default init drawn from ``seed``."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        return VisionTransformer(**spec.timm_kwargs())


def uniform_indices(n_from: int, n_to: int) -> Tensor:
    """n_to evenly spaced, strictly increasing indices into range(n_from), starting at 0."""
    if n_to > n_from:
        raise InvalidInputError(f"cannot select {n_to} elements out of {n_from}")
    return torch.arange(n_to) * n_from // n_to


def selection_indices(teacher: ViTSpec, student: ViTSpec) -> dict[str, Tensor]:
    """Index tensors per axis: layers (N), embed (D), attn (D, one q/k/v block), qkv (3D), mlp (H)."""
    problems = [
        f"{name} {getattr(student, name)} != teacher's {getattr(teacher, name)}"
        for name in ("img_size", "patch_size", "in_chans")
        if getattr(student, name) != getattr(teacher, name)
    ]
    problems += [
        f"{name} {getattr(student, name)} > teacher's {getattr(teacher, name)}"
        for name in ("depth", "embed_dim", "mlp_hidden")
        if getattr(student, name) > getattr(teacher, name)
    ]
    if problems:
        raise InvalidInputError(
            "weight selection needs a teacher at least as large with the same input "
            "geometry: " + "; ".join(problems)
        )
    if student.num_heads <= teacher.num_heads and student.head_dim <= teacher.head_dim:
        heads = uniform_indices(teacher.num_heads, student.num_heads)  # (H,)
        chans = uniform_indices(teacher.head_dim, student.head_dim)  # (hd,)
        attn = (heads[:, None] * teacher.head_dim + chans[None, :]).reshape(-1)  # (D,) whole heads
    else:
        attn = uniform_indices(teacher.embed_dim, student.embed_dim)
    qkv = torch.cat([attn + b * teacher.embed_dim for b in range(3)])  # (3D,) q, k, v blocks alike
    return {
        "layers": torch.arange(student.depth),  # first N blocks
        "embed": uniform_indices(teacher.embed_dim, student.embed_dim),
        "attn": attn,
        "qkv": qkv,
        "mlp": uniform_indices(teacher.mlp_hidden, student.mlp_hidden),
    }


def _param_axes(kind: str) -> tuple[str | None, ...]:
    """Index axis per dimension of a timm parameter, from the kinds table: its width axes are selected,
    fixed axes (None) stay whole."""
    return tuple(a if a in WIDTH_AXES else None for a in KINDS[kind].param_axes)


def _select(t: Tensor, axes: tuple, idx: dict[str, Tensor]) -> Tensor:
    for dim, axis in enumerate(axes):
        if axis is not None:
            t = t.index_select(dim, idx[axis].to(t.device))
    return t


def weight_selection(
    teacher: nn.Module | dict[str, Tensor],
    teacher_spec: ViTSpec,
    spec: ViTSpec,
    seed: int = 0,
    new_task: bool | None = None,
):
    """A timm VisionTransformer of ``spec`` initialized by weight selection from a larger ``teacher``.

        ``teacher`` is a timm VisionTransformer of ``teacher_spec`` or its state dict. ``seed`` draws the fresh
        head of a new task (everything else comes from the teacher). ``new_task``: the data's classes are not the
    teacher's (default: decided by the class count alone, which cannot tell 0-4 from 5-9).
    """
    state = teacher.state_dict() if isinstance(teacher, nn.Module) else teacher
    expected = _timm_shapes(teacher_spec)
    if {k: tuple(v.shape) for k, v in state.items()} != expected:
        missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise InvalidInputError(
            f"teacher weights do not match {teacher_spec.name}: missing {missing[:5]}, "
            f"unexpected {unknown[:5]}, or shapes differ"
        )
    idx = selection_indices(teacher_spec, spec)
    student = random_init(spec, seed)
    new_head = spec.num_classes != teacher_spec.num_classes if new_task is None else bool(new_task)
    if not new_head and spec.num_classes != teacher_spec.num_classes:
        raise InvalidInputError(
            f"new_task=False but the student has {spec.num_classes} classes and the teacher "
            f"{teacher_spec.num_classes}"
        )
    selected = {}
    for name, current in student.state_dict().items():
        if name.startswith("blocks."):
            _, layer, suffix = name.split(".", 2)
            src, axes = state[f"blocks.{int(idx['layers'][int(layer)])}.{suffix}"], _param_axes(suffix)
        elif name.startswith("head.") and new_head:
            selected[name] = current  # timm's fresh init for a new task
            continue
        else:
            src, axes = state[name], _param_axes(name)
        selected[name] = _select(src.detach(), axes, idx).clone()
    student.load_state_dict(selected, strict=True)
    return student


def _timm_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    from timm.models.vision_transformer import VisionTransformer

    with torch.device("meta"):
        skeleton = VisionTransformer(**spec.timm_kwargs())
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
