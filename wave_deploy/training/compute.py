"""Training compute, counted one way everywhere: the benchmarks' matched-compute rules and ``build --compare-init``.

Analytic FLOPs (``spec.flops``: 2 x matmul MACs, attention products included) per image:
- a dense training step of a size: forward + backward = 3 x its forward, times the batch;
- a WAVE scaler step: the same 3 x forward of the target (the expanded network runs forward and backward;
  the templates' expansion, under 1% at these sizes, is not counted), plus the teacher's forward when the
  phase distils (the bank's auxiliary model on the bank's own task);
- evaluation passes are not training and are not counted.

Nothing here imports torch.
"""

from __future__ import annotations

from wave_deploy.spec import ViTSpec, flops


def forward_flops(spec: ViTSpec) -> int:
    """Forward FLOPs for one image."""
    return flops(spec, 1)


def dense_step_flops(spec: ViTSpec, batch: int) -> int:
    """One dense training step (forward + backward) of ``spec`` at ``batch``."""
    return 3 * forward_flops(spec) * batch


def scaler_step_flops(spec: ViTSpec, batch: int, teacher: ViTSpec | None = None) -> int:
    """One WAVE scaler step: a dense step's work, plus the teacher's forward when it distils."""
    return dense_step_flops(spec, batch) + (forward_flops(teacher) * batch if teacher is not None else 0)


def wave_training_flops(
    spec: ViTSpec, batch: int, scaler_steps: int, dense_steps: int, teacher: ViTSpec | None = None
) -> int:
    """WAVE's stage 2: ``scaler_steps`` scaler steps (distilled from ``teacher`` when given) then dense steps."""
    scaler = scaler_steps * scaler_step_flops(spec, batch, teacher)
    return scaler + dense_steps * dense_step_flops(spec, batch)


def dense_steps_within(budget_flops: int, spec: ViTSpec, batch: int) -> int:
    """The most dense steps of ``spec`` that ``budget_flops`` pays for (never more than the budget)."""
    return int(budget_flops // dense_step_flops(spec, batch))
