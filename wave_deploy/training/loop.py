"""The one plain training loop: scaler training, full training and distillation all go through ``train``.

AdamW, linear warmup then cosine decay (per optimizer step), optional label smoothing and gradient clipping,
autocast (bf16/fp16) on CUDA, DDP when launched by torchrun, checkpoints that resume exactly, optional
torch.compile; on CUDA the training set is kept on the GPU or copied through pinned buffers (wave_deploy.training.batches).

Data are in-memory tensors: ``train_x (N, C, H, W)`` float, ``train_y (N,)`` int64. Step ``s`` (0-based) of
a run uses global batch ``s % S`` of epoch ``s // S`` (``S = N // batch_size``, the last partial batch is
dropped), taken from a permutation that depends only on (seed, epoch); under DDP rank ``r`` of ``W`` takes
``batch[r::W]`` (DistributedSampler's interleaving), so W ranks see the same global batches as one process.
Because the permutation is stateless, a checkpoint needs only the step to restore the data order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from wave_deploy import probe
from wave_deploy.errors import InvalidInputError, MissingDependencyError, first_line
from wave_deploy.training import checkpoint as ckpt_io
from wave_deploy.training import distributed as D
from wave_deploy.training import run
from wave_deploy.training.batches import BatchSource
from wave_deploy.training.config import (
    EvalRecord,
    StepInfo,
    TrainConfig,
    TrainResult,
    global_batch_indices,
    lr_factor,
)
from wave_deploy.training.run import evaluate

# Re-exported: a run's configuration and results are part of this module's interface.
__all__ = [
    "CHECKPOINT_NAME",
    "EvalRecord",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "distill_loss_fn",
    "distillation_loss",
    "evaluate",
    "global_batch_indices",
    "lr_factor",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, tau: float, alpha: float
) -> torch.Tensor:
    """alpha * tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)) + (1 - alpha) * CE(student, y).

    KL is summed over classes and averaged over the batch; the teacher gets no gradient.
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # fp32 at least, even under autocast
    s = student_logits.to(dtype)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.detach().to(dtype) / tau, dim=-1)  # (B, K)
    kl = F.kl_div(F.log_softmax(s / tau, dim=-1), log_p_t, reduction="batchmean", log_target=True)
    return alpha * tau * tau * kl + (1.0 - alpha) * F.cross_entropy(s, y)


def distill_loss_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``loss_fn`` for a module whose ``forward(x, y)`` returns its own loss (a distiller): one forward call."""
    return model(x, y)


def train(
    model: torch.nn.Module,
    config: TrainConfig,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    *,
    params: Iterable | None = None,
    loss_fn: Callable | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config``'s budget and return its history.

    ``params``: None (every parameter with requires_grad), an iterable of the model's parameters, or
    AdamW param groups (dicts with "params" and optional "lr"/"weight_decay"). Model parameters that
    require grad but are not listed are frozen for the duration of the call. ``loss_fn(model, x, y)``
    replaces label-smoothed cross-entropy; it must call ``model(x)`` once (DDP syncs gradients there).
    ``checkpoint_dir``: where rank 0 writes ``checkpoint.pt``; ``resume=True`` continues from it exactly
    when it exists, and refuses one written with a different configuration, data or parameter set.
    Seeds torch's global RNG with ``seed + rank`` (dropout, drop-path); the data order has its own.
    """
    wall_start = time.perf_counter()
    config.validate()
    _check_data(train_x, train_y, val_x, val_y)
    device_type, amp_dtype = _resolve_device_and_amp(config)
    device = D.init_distributed(device_type)
    model.to(device)
    source = BatchSource(train_x, train_y, device, config.data_placement)
    world, n = D.world_size(), len(train_x)
    if config.batch_size % world:
        raise InvalidInputError(
            f"batch_size {config.batch_size} is not divisible by the number of processes {world}"
        )
    if n // config.batch_size == 0:
        raise InvalidInputError(
            f"batch_size {config.batch_size} is larger than the training set ({n} samples)"
        )

    groups, names = _param_groups(model, params, config.weight_decay)
    trained = [p for g in groups for p in g["params"]]
    trained_ids = {id(p) for p in trained}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in trained_ids]
    for p in frozen:
        p.requires_grad_(False)
    try:
        schedule = run.Schedule.of(config, n, checkpointing=checkpoint_dir is not None)
        stepper = run.Stepper(config, groups, trained, schedule.total, device, amp_dtype)
        torch.manual_seed(config.seed + D.rank())  # dropout / drop-path streams; the data order is separate
        progress, checkpoints = run.Progress(), run.Checkpoints(config, model)
        if checkpoint_dir is not None:
            checkpoints.path = Path(checkpoint_dir) / CHECKPOINT_NAME
            checkpoints.fingerprint = ckpt_io.fingerprint(config, names, train_x, train_y, val_x, val_y)
        resumed_from = checkpoints.restore(progress, stepper.stateful, device) if resume else None
        if resumed_from is not None:
            run.log_main("resuming from step %d of %d (%s)", resumed_from, schedule.total, checkpoints.path)
        start = progress.begin(device)
        wrapped = D.wrap_ddp(model, device)
        wrapped.train()
        # compiled, it shares the parameters: checkpoints and the caller see the plain names
        net = torch.compile(wrapped) if config.compile else wrapped
        run.run_steps(
            model=model, net=net, config=config, schedule=schedule, stepper=stepper, progress=progress,
            checkpoints=checkpoints, source=source, n=n, loss_fn=loss_fn, val_x=val_x, val_y=val_y,
            on_step=on_step, start=start,
        )  # fmt: skip
        D.barrier()
    except Exception as e:
        if config.compile:
            _raise_if_compile_failed(e)
        raise
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return run.result(
        progress, schedule, config, stepper, start=start, resumed_from=resumed_from,
        placement=source.placement, wall_start=wall_start,
    )  # fmt: skip


def _raise_if_compile_failed(e: Exception) -> None:
    """A torch.compile backend failure (e.g. no C++ compiler for inductor on the CPU) as a missing dependency."""
    from torch._dynamo.exc import BackendCompilerFailed  # imported only when compiling: torch._dynamo is slow

    if isinstance(e, BackendCompilerFailed):
        first = first_line(e)
        raise MissingDependencyError(f"torch.compile failed: {first}", hint="train without --compile") from e


def _check_data(train_x, train_y, val_x, val_y) -> None:
    if (val_x is None) != (val_y is None):
        raise InvalidInputError("give both val_x and val_y, or neither")
    for name, x, y in (("train", train_x, train_y), ("val", val_x, val_y)):
        if x is None:
            continue
        if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()):
            raise InvalidInputError(
                f"{name}_x must be a float tensor (N, C, H, W), got {getattr(x, 'shape', x)}"
            )
        if not (isinstance(y, torch.Tensor) and y.ndim == 1 and y.dtype == torch.int64 and len(y) == len(x)):
            raise InvalidInputError(
                f"{name}_y must be an int64 tensor (N,) with N = len({name}_x) = {len(x)}"
            )
        if len(y) == 0 or int(y.min()) < 0:
            raise InvalidInputError(f"{name}_y is empty or holds negative class indices")


def _resolve_device_and_amp(config: TrainConfig) -> tuple[str, torch.dtype | None]:
    has_cuda = probe.cuda_available()
    if config.device == "cuda" and not has_cuda:
        raise MissingDependencyError("device 'cuda' was requested but no CUDA GPU is available")
    device_type = "cuda" if config.device == "cuda" or (config.device == "auto" and has_cuda) else "cpu"
    if config.amp in ("bf16", "fp16") and device_type != "cuda":
        raise MissingDependencyError(
            f"amp '{config.amp}' needs a CUDA device", hint="use amp 'auto' or 'off'"
        )
    amp = config.amp
    if amp == "auto":
        amp = "bf16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return device_type, {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _param_groups(model, params, weight_decay: float) -> tuple[list[dict], list[tuple[str, list[int]]]]:
    """AdamW groups of trainable parameters, and (name, shape) of each trained parameter in order."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [dict(g, params=list(g["params"])) for g in params]
    else:  # default decay rule: none on biases, norms and timm's no_weight_decay() tokens
        skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
        flat: dict[bool, list] = {True: [], False: []}
        for p in params:
            flat[p.ndim > 1 and name_of.get(id(p)) not in skip].append(p)
        groups = [
            {"params": flat[True], "weight_decay": weight_decay},
            {"params": flat[False], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    seen: set[int] = set()
    for p in (p for g in groups for p in g["params"]):
        if id(p) not in name_of:
            raise InvalidInputError("a parameter to train does not belong to the model")
        if id(p) in seen:
            raise InvalidInputError(f"parameter {name_of[id(p)]} is listed twice")
        if not p.requires_grad:
            raise InvalidInputError(f"parameter {name_of[id(p)]} does not require grad and cannot be trained")
        seen.add(id(p))
    if not seen:
        raise InvalidInputError("no parameter to train (none requires grad)")
    return groups, [(name_of[id(p)], list(p.shape)) for g in groups for p in g["params"]]
