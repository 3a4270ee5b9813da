"""The parts of one ``train`` call, one concern each; ``wave_deploy.training.loop.train`` puts them together.

    Schedule     how long the run is and at which steps it evaluates, checkpoints and reports
    Stepper      one optimizer step under autocast: AdamW, the lr schedule, the fp16 grad scaler, clipping
    Progress     losses, evaluation history and timings since the last report; the checkpointed state
    Checkpoints  where rank 0 saves the run and how a run resumes from it (config, data and parameters match)

Distributed training touches each of them only through ``wave_deploy.training.distributed`` (ranks, sums
across ranks, RNG states); none of them prints (logging on the main process only).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from wave_deploy.errors import StageFailedError
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

log = logging.getLogger(__name__)

AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}


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


def log_main(msg: str, *args) -> None:
    if D.is_main_process():
        log.info(msg, *args)


@dataclass(frozen=True)
class Schedule:
    """Steps per epoch, total steps, and the steps at which the run evaluates, checkpoints and reports."""

    per_epoch: int
    total: int
    config: TrainConfig
    checkpointing: bool

    @classmethod
    def of(cls, config: TrainConfig, n: int, checkpointing: bool) -> Schedule:
        per_epoch = n // config.batch_size
        return cls(per_epoch, config.total_steps(per_epoch), config, checkpointing)

    def eval_due(self, step: int) -> bool:
        return step % (self.config.eval_every or self.per_epoch) == 0 or step == self.total

    def ckpt_due(self, step: int) -> bool:
        every = self.config.checkpoint_every
        return self.checkpointing and (step == self.total or (every is not None and step % every == 0))

    def report_due(self, step: int) -> bool:
        return self.eval_due(step) or self.ckpt_due(step) or step % self.config.log_every == 0


class Stepper:
    """One optimizer step on a batch under autocast: loss, backward through the grad scaler (fp16 only),
    optional clipping, AdamW, the warmup + cosine lr schedule. Holds the optimizer state a checkpoint saves."""

    def __init__(self, config: TrainConfig, groups, trained: list, total: int, device, amp_dtype):
        self.config, self.trained, self.device, self.amp_dtype = config, trained, device, amp_dtype
        self.optimizer = make_optimizer(groups, lr=config.lr, weight_decay=config.weight_decay, device=device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, total, config.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        self.grad_norm: torch.Tensor | None = None
        self.lr_used = config.lr

    @property
    def stateful(self) -> tuple:
        return self.optimizer, self.scheduler, self.scaler

    def step(self, net, x: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
        """Train on one batch; the detached loss (float64)."""
        config, amp = self.config, self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=bool(amp)):
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
        return loss.detach().double()


@dataclass
class Progress:
    """What the run has done: the checkpointed ``state`` (step, evaluation history, the global train-loss sums
    since the last evaluation, train time over resumed runs) and this call's counters since the last report.

    On rank 0 ``window`` holds the global loss sum and count since the last evaluation; on other ranks this
    rank's since the last sync (they are summed across ranks at an evaluation or a checkpoint)."""

    state: dict = field(
        default_factory=lambda: {
            "step": 0,
            "history": [],
            "window": torch.zeros(2, dtype=torch.float64),
            "train_time_s": 0.0,
        }
    )
    window: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    val_loss: float | None = None
    val_acc: float | None = None
    log_loss: float | torch.Tensor = 0.0  # since the last report: loss sum and steps
    log_n: int = 0
    eval_steps: int = 0  # since the last evaluation: steps and seconds
    eval_time: float = 0.0
    call_time: float = 0.0  # seconds of training steps in this call
    t_mark: float = 0.0

    def begin(self, device) -> int:
        """Start (or continue) counting from ``state``; the step to start from."""
        self.window = self.state["window"].to(device) * (D.rank() == 0)  # saved global sums: rank 0 only
        last = self.state["history"][-1] if self.state["history"] else {}
        self.val_loss, self.val_acc = last.get("val_loss"), last.get("val_acc")
        self.t_mark = time.perf_counter()
        return self.state["step"]

    def add(self, loss: torch.Tensor) -> None:
        self.log_loss, self.log_n, self.eval_steps = self.log_loss + loss, self.log_n + 1, self.eval_steps + 1
        self.window += torch.stack([loss, torch.ones_like(loss)])

    def lap(self, step: int, batch_size: int) -> tuple[float, float]:
        """(mean train loss, images/s) since the last report; stops the run on a diverged loss."""
        mean_loss = float(self.log_loss / self.log_n)  # waits for the GPU, so the timing below is honest
        elapsed = time.perf_counter() - self.t_mark
        self.state["train_time_s"] += elapsed
        self.call_time, self.eval_time = self.call_time + elapsed, self.eval_time + elapsed
        if not math.isfinite(mean_loss):
            raise StageFailedError(f"training diverged: loss is {mean_loss} at step {step}")
        return mean_loss, batch_size * self.log_n / max(elapsed, 1e-9)

    def record_eval(self, step: int, per_epoch: int, lr: float, batch_size: int) -> EvalRecord:
        """Close an evaluation window: the global train loss since the last one and this window's speed."""
        w_sum, w_n = D.all_reduce_sum(self.window).tolist()
        ips = batch_size * self.eval_steps / max(self.eval_time, 1e-9)
        record = EvalRecord(step, step / per_epoch, w_sum / w_n, self.val_loss, self.val_acc, lr, ips)
        self.state["history"].append(asdict(record))
        self.window.zero_()
        self.eval_steps, self.eval_time = 0, 0.0
        return record

    def for_checkpoint(self, step: int) -> dict:
        self.state["step"], self.state["window"] = step, D.all_reduce_sum(self.window).cpu()
        return self.state

    def restart_lap(self) -> None:
        self.log_loss, self.log_n = 0.0, 0
        self.t_mark = time.perf_counter()


@dataclass
class Checkpoints:
    """Where rank 0 saves the run (``path``; None: no checkpoints) and the fingerprint a resume must match."""

    config: TrainConfig
    model: torch.nn.Module
    path: Path | None = None
    fingerprint: str = ""

    def restore(self, progress: Progress, stateful: tuple, device) -> int | None:
        """Continue from the checkpoint when there is one: the step it was written at, else None."""
        if self.path is None:
            return None
        if not self.path.exists():
            log_main("no checkpoint at %s: starting from step 0", self.path)
            return None
        ckpt = ckpt_io.load_checkpoint(self.path, self.config, self.fingerprint, self.model, stateful)
        D.restore_rng_states(ckpt["rng"], device)
        progress.state = {k: ckpt[k] for k in progress.state}
        return progress.state["step"]

    def save(self, state: dict, stateful: tuple) -> None:
        if self.path is not None:
            ckpt_io.save_checkpoint(self.path, state, self.config, self.fingerprint, self.model, stateful)


def run_steps(
    *, model, net, config: TrainConfig, schedule: Schedule, stepper: Stepper, progress: Progress,
    checkpoints: Checkpoints, source: BatchSource, n: int, loss_fn, val_x, val_y, on_step, start: int,
) -> float:  # fmt: skip
    """Train from step ``start`` to the end of the schedule; the seconds of training steps in this call."""
    step, B = start, config.batch_size
    while step < schedule.total:
        idx = global_batch_indices(step, n, B, config.seed)
        x, y = source.batch(idx[D.rank() :: D.world_size()])  # (B/W, C, H, W), (B/W,) this rank's shard
        progress.add(stepper.step(net, x, y, loss_fn))
        step += 1
        if not schedule.report_due(step):
            continue
        mean_loss, images_per_s = progress.lap(step, B)
        eval_now = schedule.eval_due(step)
        if eval_now:
            if val_x is not None:
                progress.val_loss, progress.val_acc = evaluate(
                    model, val_x, val_y, config.eval_batch_size, stepper.device, stepper.amp_dtype
                )
            record = progress.record_eval(step, schedule.per_epoch, stepper.lr_used, B)
            log_main(
                "step %d/%d: train loss %.4f, val acc %s",
                step,
                schedule.total,
                record.train_loss,
                record.val_acc,
            )
        if schedule.ckpt_due(step):
            checkpoints.save(progress.for_checkpoint(step), stepper.stateful)
        if on_step is not None and D.rank() == 0:
            norm = None if stepper.grad_norm is None else float(stepper.grad_norm)
            info = (
                mean_loss,
                stepper.lr_used,
                norm,
                images_per_s,
                progress.val_loss,
                progress.val_acc,
                eval_now,
            )
            on_step(StepInfo(step, schedule.total, step / schedule.per_epoch, *info))
        progress.restart_lap()
    return progress.call_time


def result(
    progress: Progress, schedule: Schedule, config: TrainConfig, stepper: Stepper, *, start: int,
    resumed_from: int | None, placement: str, wall_start: float,
) -> TrainResult:  # fmt: skip
    history = [EvalRecord(**r) for r in progress.state["history"]]
    final = history[-1] if history else None
    B, call_time = config.batch_size, progress.call_time
    return TrainResult(
        history=history,
        steps=schedule.total,
        final_val_acc=final.val_acc if final else None,
        final_val_loss=final.val_loss if final else None,
        wall_time_s=time.perf_counter() - wall_start,
        train_time_s=progress.state["train_time_s"],
        images_per_s=B * (schedule.total - start) / call_time if call_time > 0 else 0.0,
        device=str(stepper.device),
        amp=AMP_NAMES[stepper.amp_dtype],
        world_size=D.world_size(),
        resumed_from_step=resumed_from,
        data_placement=placement,
        compiled=config.compile,
    )
