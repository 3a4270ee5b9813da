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
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from wave_deploy import probe
from wave_deploy.errors import InvalidInputError, MissingDependencyError, StageFailedError
from wave_deploy.training import checkpoint as ckpt_io
from wave_deploy.training import distributed as D
from wave_deploy.training.batches import BatchSource
from wave_deploy.training.config import (
    EvalRecord,
    StepInfo,
    TrainConfig,
    TrainResult,
    global_batch_indices,
    lr_factor,
)

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


@torch.no_grad()
def evaluate(model, x, y, batch_size: int, device, amp_dtype=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on (x, y); under DDP each rank takes x[rank::W], results are summed."""
    xs, ys = x[D.rank() :: D.world_size()], y[D.rank() :: D.world_size()]
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for i in range(0, len(xs), batch_size):
        xb = xs[i : i + batch_size].to(device, non_blocking=True)
        yb = ys[i : i + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(xb)  # (b, K)
        sums[0] += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        sums[1] += (logits.argmax(-1) == yb).sum()
        sums[2] += len(yb)
    model.train(was_training)
    loss_sum, correct, count = D.all_reduce_sum(sums).tolist()
    return loss_sum / count, correct / count


def make_optimizer(params, *, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for every parameter) where torch has that for ``device`` (CPU and CUDA,
    floating-point parameters); the same update rule as the default implementation, measured faster at
    224 px in benchmarks/train_throughput.py."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


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
        run = _Run.start(model, config, device, amp_dtype, groups, trained, n)
        run.placement = source.placement
        if checkpoint_dir is not None:
            run.ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
            run.fingerprint = ckpt_io.fingerprint(config, names, train_x, train_y, val_x, val_y)
        if resume:
            run.restore()
        run.begin()
        wrapped = D.wrap_ddp(model, device)
        wrapped.train()
        # compiled, it shares the parameters: checkpoints and the caller see the plain names
        net = torch.compile(wrapped) if config.compile else wrapped
        while run.step < run.total:
            run.optimizer_step(net, source, loss_fn)
            if run.at_report_point():
                run.report(val_x, val_y, on_step)
        D.barrier()
    except Exception as e:
        if config.compile:
            _raise_if_compile_failed(e)
        raise
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return run.result(wall_start)


@dataclass
class _Run:
    """One ``train`` call: its fixed set-up, the checkpointed ``state`` and the progress since the last report.

    ``state`` (what a checkpoint holds): step (optimizer steps done), history (evaluation records), window
    (global sum and count of train losses since the last evaluation), train_time_s (over resumed runs).
    """

    config: TrainConfig
    model: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    trained: list
    n: int  # training samples
    per_epoch: int  # optimizer steps per epoch
    total: int  # optimizer steps of the whole run
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    state: dict
    ckpt_path: Path | None = None
    fingerprint: str = ""
    resumed_from: int | None = None
    placement: str = "host"  # the BatchSource's resolved placement
    # progress of this call (set by begin)
    step: int = 0
    start_step: int = 0
    # on rank 0: the global loss sums since the last evaluation; elsewhere: this rank's since the last sync
    window: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    val_loss: float | None = None
    val_acc: float | None = None
    grad_norm: torch.Tensor | None = None
    lr_used: float = 0.0
    log_loss: float | torch.Tensor = 0.0  # since the last report: loss sum and steps
    log_n: int = 0
    eval_steps: int = 0  # since the last evaluation: steps and seconds
    eval_time: float = 0.0
    call_time: float = 0.0  # seconds of training steps in this call
    t_mark: float = 0.0

    @classmethod
    def start(cls, model, config, device, amp_dtype, groups, trained, n: int) -> _Run:
        """Optimizer, lr schedule and grad scaler for a fresh run; seeds dropout's RNG stream."""
        per_epoch = n // config.batch_size
        total = config.total_steps(per_epoch)
        optimizer = make_optimizer(groups, lr=config.lr, weight_decay=config.weight_decay, device=device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, config.warmup_steps, total, config.min_lr_ratio)
        )
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        torch.manual_seed(config.seed + D.rank())  # dropout / drop-path streams; the data order is separate
        state = {"step": 0, "history": [], "window": torch.zeros(2, dtype=torch.float64), "train_time_s": 0.0}
        return cls(
            config,
            model,
            device,
            amp_dtype,
            trained,
            n,
            per_epoch,
            total,
            optimizer,
            scheduler,
            scaler,
            state,
        )

    @property
    def _stateful(self) -> tuple:
        return self.optimizer, self.scheduler, self.scaler

    def restore(self) -> None:
        """Continue from the checkpoint when there is one (it must match config, data and parameters)."""
        if self.ckpt_path is None:
            return
        if self.ckpt_path.exists():
            ckpt = ckpt_io.load_checkpoint(
                self.ckpt_path, self.config, self.fingerprint, self.model, self._stateful
            )
            D.restore_rng_states(ckpt["rng"], self.device)
            self.state = {k: ckpt[k] for k in self.state}
            self.resumed_from = self.state["step"]
            _log_main("resuming from step %d of %d (%s)", self.resumed_from, self.total, self.ckpt_path)
        else:
            _log_main("no checkpoint at %s: starting from step 0", self.ckpt_path)

    def begin(self) -> None:
        self.window = self.state["window"].to(self.device) * (D.rank() == 0)  # saved global sums: rank 0 only
        self.step = self.start_step = self.state["step"]
        last = self.state["history"][-1] if self.state["history"] else {}
        self.val_loss, self.val_acc = last.get("val_loss"), last.get("val_acc")
        self.grad_norm, self.lr_used = None, self.config.lr
        self.t_mark = time.perf_counter()

    def optimizer_step(self, net, source: BatchSource, loss_fn) -> None:
        """One step on this rank's shard of global batch ``step``."""
        config, device = self.config, self.device
        idx = global_batch_indices(self.step, self.n, config.batch_size, config.seed)
        x, y = source.batch(idx[D.rank() :: D.world_size()])  # (B/W, C, H, W), (B/W,) this rank's shard
        amp = self.amp_dtype
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=bool(amp)):
            if loss_fn is None:
                loss = F.cross_entropy(net(x).float(), y, label_smoothing=config.label_smoothing)
            else:
                loss = loss_fn(net, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, config.grad_clip)
        self.lr_used = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        loss = loss.detach().double()
        self.log_loss, self.log_n, self.eval_steps = self.log_loss + loss, self.log_n + 1, self.eval_steps + 1
        self.window += torch.stack([loss, torch.ones_like(loss)])

    def _eval_now(self) -> bool:
        return self.step % (self.config.eval_every or self.per_epoch) == 0 or self.step == self.total

    def _ckpt_now(self) -> bool:
        every = self.config.checkpoint_every
        last_or_every = self.step == self.total or (every is not None and self.step % every == 0)
        return self.ckpt_path is not None and last_or_every

    def at_report_point(self) -> bool:
        return self._eval_now() or self._ckpt_now() or self.step % self.config.log_every == 0

    def report(self, val_x, val_y, on_step) -> None:
        """Timing, divergence check, evaluation, checkpoint and ``on_step``, as due at this step."""
        B, step, total = self.config.batch_size, self.step, self.total
        eval_now, ckpt_now = self._eval_now(), self._ckpt_now()
        mean_loss = float(self.log_loss / self.log_n)  # waits for the GPU, so the timing below is honest
        elapsed = time.perf_counter() - self.t_mark
        self.state["train_time_s"] += elapsed
        self.call_time, self.eval_time = self.call_time + elapsed, self.eval_time + elapsed
        images_per_s = B * self.log_n / max(elapsed, 1e-9)
        if not math.isfinite(mean_loss):
            raise StageFailedError(f"training diverged: loss is {mean_loss} at step {step}")
        if eval_now:
            w_sum, w_n = D.all_reduce_sum(self.window).tolist()
            if val_x is not None:
                self.val_loss, self.val_acc = evaluate(
                    self.model, val_x, val_y, self.config.eval_batch_size, self.device, self.amp_dtype
                )
            ips = B * self.eval_steps / max(self.eval_time, 1e-9)
            record = EvalRecord(
                step, step / self.per_epoch, w_sum / w_n, self.val_loss, self.val_acc, self.lr_used, ips
            )
            self.state["history"].append(asdict(record))
            self.window.zero_()
            self.eval_steps, self.eval_time = 0, 0.0
            _log_main("step %d/%d: train loss %.4f, val acc %s", step, total, w_sum / w_n, self.val_acc)
        if ckpt_now:
            self.state["step"], self.state["window"] = step, D.all_reduce_sum(self.window).cpu()
            ckpt_io.save_checkpoint(
                self.ckpt_path, self.state, self.config, self.fingerprint, self.model, self._stateful
            )
        if on_step is not None and D.rank() == 0:
            norm = None if self.grad_norm is None else float(self.grad_norm)
            info = (mean_loss, self.lr_used, norm, images_per_s, self.val_loss, self.val_acc, eval_now)
            on_step(StepInfo(step, total, step / self.per_epoch, *info))
        self.log_loss, self.log_n = 0.0, 0
        self.t_mark = time.perf_counter()

    def result(self, wall_start: float) -> TrainResult:
        history = [EvalRecord(**r) for r in self.state["history"]]
        final = history[-1] if history else None
        B, amp = self.config.batch_size, self.amp_dtype
        return TrainResult(
            history=history,
            steps=self.total,
            final_val_acc=final.val_acc if final else None,
            final_val_loss=final.val_loss if final else None,
            wall_time_s=time.perf_counter() - wall_start,
            train_time_s=self.state["train_time_s"],
            images_per_s=B * (self.total - self.start_step) / self.call_time if self.call_time > 0 else 0.0,
            device=str(self.device),
            amp={None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp],
            world_size=D.world_size(),
            resumed_from_step=self.resumed_from,
            data_placement=self.placement,
            compiled=self.config.compile,
        )


def _log_main(msg: str, *args) -> None:
    if D.is_main_process():
        log.info(msg, *args)


def _raise_if_compile_failed(e: Exception) -> None:
    """A torch.compile backend failure (e.g. no C++ compiler for inductor on the CPU) as a missing dependency."""
    from torch._dynamo.exc import BackendCompilerFailed  # imported only when compiling: torch._dynamo is slow

    if isinstance(e, BackendCompilerFailed):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
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
