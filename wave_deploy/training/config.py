"""A training run's configuration, its schedule (learning rate, data order) and what it reports.

``TrainConfig`` is validated before anything runs; ``lr_factor`` is the warmup + cosine multiplier per optimizer
step; ``global_batch_indices`` gives the samples of any step from (seed, epoch) alone, which is what makes a
resumed or multi-process run see the same batches as one uninterrupted process (wave_deploy.training.loop).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import asdict, dataclass

import torch

from wave_deploy.errors import InvalidInputError

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Where the training images live during a run (wave_deploy.training.loop.BatchSource); the values are the same
# in every case, only the copies differ.
PLACEMENT_CHOICES = ("auto", "host", "device", "pinned", "pageable")
# Fields that do not change the recipe of a run, only how it executes (the device and compile change float
# rounding, not the schedule); a resume may change them.
_NOT_HASHED = (
    "eval_every",
    "eval_batch_size",
    "checkpoint_every",
    "log_every",
    "device",
    "data_placement",
    "compile",
)


@dataclass
class TrainConfig:
    steps: int | None = None  # budget in optimizer steps; exactly one of steps / epochs
    epochs: float | None = None  # converted to ceil(epochs * steps_per_epoch) steps
    batch_size: int = 128  # global: split evenly over DDP ranks
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # not applied to 1-D params and timm's no_weight_decay() tokens
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays from lr to lr * min_lr_ratio
    label_smoothing: float = 0.0  # default loss only (not a custom loss_fn)
    grad_clip: float | None = 1.0  # max global L2 norm of the gradients; None: no clipping
    seed: int = 0
    eval_every: int | None = None  # steps; None: once per epoch. Always at the last step.
    eval_batch_size: int = 512  # per rank
    checkpoint_every: int | None = None  # steps; None: only at the end (when a checkpoint_dir is given)
    log_every: int = 10  # steps between on_step calls
    amp: str = "auto"  # auto: bf16 on CUDA when supported, else off; never on CPU
    device: str = "auto"  # auto: cuda when available
    # auto: on CUDA the whole training set on the GPU when it takes at most a quarter of its free memory,
    # else batches gathered into page-locked buffers and copied asynchronously; on the CPU, "host".
    data_placement: str = "auto"
    compile: bool = False  # torch.compile the module the steps run (inductor); evaluation stays eager

    def validate(self) -> None:
        c = self
        rules = [
            ((c.steps is None) != (c.epochs is None), "give exactly one of steps or epochs"),
            (c.epochs is None or c.epochs > 0, f"epochs must be > 0, got {c.epochs!r}"),
            (0 < c.lr < math.inf, f"lr must be a positive number, got {c.lr!r}"),
            (c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay!r}"),
            (0 <= c.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {c.min_lr_ratio!r}"),
            (0 <= c.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {c.label_smoothing!r}"),
            (c.grad_clip is None or c.grad_clip > 0, f"grad_clip must be > 0 or None, got {c.grad_clip!r}"),
            (c.amp in AMP_CHOICES, f"amp must be one of {AMP_CHOICES}, got {c.amp!r}"),
            (c.device in DEVICE_CHOICES, f"device must be one of {DEVICE_CHOICES}, got {c.device!r}"),
            (
                c.data_placement in PLACEMENT_CHOICES,
                f"data_placement must be one of {PLACEMENT_CHOICES}, got {c.data_placement!r}",
            ),
            (isinstance(c.compile, bool), f"compile must be true or false, got {c.compile!r}"),
        ]
        for name in ("steps", "batch_size", "eval_batch_size", "log_every", "eval_every", "checkpoint_every"):
            v, optional = getattr(c, name), name in ("steps", "eval_every", "checkpoint_every")
            ok = (v is None and optional) or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
            rules.append((ok, f"{name} must be an integer >= 1{' or None' if optional else ''}, got {v!r}"))
        ok = isinstance(c.warmup_steps, int) and c.warmup_steps >= 0
        rules.append((ok, f"warmup_steps must be an integer >= 0, got {c.warmup_steps!r}"))
        problems = [msg for ok, msg in rules if not ok]
        if problems:
            raise InvalidInputError("training config: " + "; ".join(problems))

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        if self.epochs is None:
            raise InvalidInputError("training config: give exactly one of steps or epochs")
        return math.ceil(self.epochs * steps_per_epoch)

    def hashed_fields(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in _NOT_HASHED}


@dataclass
class StepInfo:
    """What the ``on_step`` callback receives every ``log_every`` steps (main process only)."""

    step: int  # optimizer steps done
    total_steps: int
    epoch: float
    loss: float  # mean train loss over the steps since the previous call (this rank's shard)
    lr: float  # learning rate of param group 0 used by the last step
    grad_norm: float | None  # global grad norm before clipping at the last step (None: no clipping)
    images_per_s: float  # global training throughput since the previous call (eval excluded)
    val_loss: float | None  # latest validation result, None before the first evaluation
    val_acc: float | None
    evaluated: bool  # an evaluation happened at this step


@dataclass
class EvalRecord:
    step: int
    epoch: float
    train_loss: float  # mean over all ranks and steps since the previous evaluation
    val_loss: float | None  # plain cross-entropy (no smoothing)
    val_acc: float | None
    lr: float
    images_per_s: float


@dataclass
class TrainResult:
    history: list[EvalRecord]
    steps: int
    final_val_acc: float | None
    final_val_loss: float | None
    wall_time_s: float  # this call
    train_time_s: float  # time spent in training steps, summed over resumed runs
    images_per_s: float  # global, over the steps of this call
    device: str
    amp: str
    world_size: int
    resumed_from_step: int | None = None
    data_placement: str = "host"  # where the training set lived (wave_deploy.training.batches)
    compiled: bool = False  # the steps ran through torch.compile

    def to_dict(self) -> dict:
        return asdict(self)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr for 0-based step ``step``: linear warmup to 1, then cosine to the minimum."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` training samples in ``epoch``; a function of (seed, epoch) only."""
    key = int.from_bytes(hashlib.sha256(f"wave-deploy-data:{seed}:{epoch}".encode()).digest()[:8], "little")
    return torch.randperm(n, generator=torch.Generator().manual_seed(key >> 1))


_cached_permutation = functools.lru_cache(maxsize=2)(epoch_permutation)  # read-only results


def global_batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Sample indices (batch_size,) of the global batch used by 0-based step ``step`` (all ranks together)."""
    epoch, k = divmod(step, n // batch_size)
    return _cached_permutation(n, seed, epoch)[k * batch_size : (k + 1) * batch_size].clone()
