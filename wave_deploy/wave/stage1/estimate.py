"""Know before you spend: time a few real stage-1 steps and estimate the whole run's wall time and peak memory.

The timed steps are the real thing on a throw-away copy of the auxiliary model: ``training.loop.train`` itself
(same device, batch size, autocast, fused AdamW, data placement) runs ``1 + timed`` steps of an
``ElasticStudent`` that shares the frozen teacher; the first step is a warm-up and is not counted. The
elastic sub-size of the timed steps is the one whose FLOPs are closest to the mean over every sub-size the
run samples, so a couple of steps stand for the run's average.

Peak memory follows the largest sub-size, not the average one: before the warm-up, one more untimed step
trains the elastic sub-size with the most FLOPs (``largest_size``; the most activations of any step the run
takes), and the peak is read over that step, the warm-up and the timed steps together. It costs one step;
without elastic training (or when the largest is the representative one) there is no extra step. The copy is dropped afterwards and ``train``
reseeds everything it draws from, so the trained bank does not depend on whether an estimate was made
(tests/test_stage1_estimate.py checks bit-for-bit equality on the CPU).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over those steps; on the CPU the process's peak
resident set over them (Linux: VmHWM after resetting it through /proc/self/clear_refs; elsewhere
``ru_maxrss``, the peak since the process started).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from wave_deploy import probe
from wave_deploy.spec import ViTSpec, flops
from wave_deploy.training import distributed as D
from wave_deploy.training.loop import CHECKPOINT_NAME, TrainConfig, distill_loss_fn, evaluate, train

log = logging.getLogger(__name__)

EVAL_TIMED = 64  # validation images timed for the evaluation estimate (at least; a batch's worth when larger)


@dataclass
class Estimate:
    seconds: float  # the whole remaining run: training steps + evaluations
    steps: int  # optimizer steps still to run
    seconds_per_step: float
    train_seconds: float
    eval_seconds: float
    evaluations: int  # passes over the validation split (per-epoch evaluations + the final accuracies)
    peak_memory_mib: float | None
    memory: str  # what peak_memory_mib measures
    device: str
    batch_size: int
    timed_steps: int
    how: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        mem = "unknown" if self.peak_memory_mib is None else f"{self.peak_memory_mib:,.0f} MiB"
        return (
            f"stage 1 estimate: {clock(self.seconds)} for {self.steps:,} steps at {self.seconds_per_step:.3g} s/step "
            f"(+ {clock(self.eval_seconds)} evaluation) on {self.device}, peak memory {mem} "
            f"({self.timed_steps} timed steps after 1 warm-up, batch {self.batch_size})"
        )


def clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def representative_size(sizes: list[ViTSpec]) -> ViTSpec | None:
    """The elastic sub-size whose forward FLOPs are closest to the mean over ``sizes`` (None: no sizes)."""
    if not sizes:
        return None
    costs = [flops(s) for s in sizes]
    mean = sum(costs) / len(costs)
    return min(zip(costs, sizes, strict=True), key=lambda cs: (abs(cs[0] - mean), cs[0]))[1]


def largest_size(sizes: list[ViTSpec]) -> ViTSpec | None:
    """The elastic sub-size with the most forward FLOPs (None: no sizes): the run's peak-memory step."""
    return max(sizes, key=flops) if sizes else None


def size_name(spec: ViTSpec) -> str:
    return f"L{spec.depth} D{spec.embed_dim}"


def steps_done(checkpoint_dir: Path | None, resume: bool) -> int:
    """Steps a resumed run has already done (0 when it starts over or the checkpoint cannot be read here;
    ``train`` itself reports an unusable checkpoint)."""

    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    if not resume or path is None or not path.is_file():
        return 0
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        return int(ckpt["step"]) if isinstance(ckpt, dict) and isinstance(ckpt.get("step"), int) else 0
    except Exception:  # noqa: BLE001  unreadable here: train() names the problem with its own exit code
        return 0


def evaluations(total: int, start: int, per_epoch: int) -> int:
    """Per-epoch evaluations of steps start+1..total (``train`` evaluates every epoch and at the last step)."""
    if total <= start:
        return 0
    full = total // per_epoch - start // per_epoch
    return full + (1 if total % per_epoch else 0)


def estimate(
    make_student,
    params_of,
    tcfg: TrainConfig,
    data,
    *,
    total_steps: int,
    start_step: int,
    final_passes: int,
    timed: int,
    peak_size: ViTSpec | None = None,
) -> Estimate:
    """Time ``timed`` steps (after one warm-up) of ``make_student()`` (a fresh copy each call; ``params_of(s)``
    its trained parameters) with ``tcfg``'s device and batch size, then extrapolate to the run.

    ``peak_size``: ``make_student()``'s first step trains this sub-size (the largest), untimed, before the
    warm-up; the peak memory is read over it too (module doc).

    ``final_passes``: validation passes after training (the final accuracies). Every rank runs the timed steps
    (DDP needs them all); the numbers are rank 0's, shared with the other ranks.
    """
    student = make_student()
    lead = 1 if peak_size is not None else 0  # untimed steps before the warm-up (the largest sub-size)
    cfg = dataclasses.replace(
        tcfg, steps=lead + timed + 1, epochs=None, log_every=1, checkpoint_every=None, eval_every=None
    )
    seen: list[float] = []

    def on_step(info) -> None:
        seen.append(tcfg.batch_size / max(info.images_per_s, 1e-12))

    cuda = probe.cuda_available()
    _reset_peaks(cuda)
    result = train(
        student, cfg, data.train_x, data.train_labels, params=params_of(student), loss_fn=distill_loss_fn,
        on_step=on_step,
    )  # fmt: skip
    device = torch.device(result.device)
    peak, memory = _read_peak(device)
    if peak_size is not None:
        memory += (
            f" and one untimed step at the largest elastic sub-size ({size_name(peak_size)}) before them"
        )
    n_val = min(len(data.val_x), max(EVAL_TIMED, tcfg.batch_size))
    start = time.perf_counter()
    evaluate(student, data.val_x[:n_val], data.val_labels[:n_val], n_val, device)
    eval_per_image = (time.perf_counter() - start) / n_val
    del student
    if cuda:
        torch.cuda.empty_cache()
    seen = seen[lead:]  # the largest sub-size's step is not timed
    per_step = sum(seen[1:]) / max(1, len(seen) - 1) if len(seen) > 1 else (seen[0] if seen else 0.0)
    shared = D.all_reduce_sum(torch.tensor([per_step, eval_per_image], dtype=torch.float64) * (D.rank() == 0))
    per_step, eval_per_image = shared.tolist()
    per_epoch = len(data.train_x) // tcfg.batch_size
    steps = max(0, total_steps - start_step)
    passes = evaluations(total_steps, start_step, per_epoch) + final_passes
    train_s, eval_s = steps * per_step, passes * len(data.val_x) * eval_per_image
    how = (
        f"mean of {timed} real training steps after 1 warm-up step (teacher forward + auxiliary and one "
        f"elastic sub-size forward/backward + AdamW) on a copy of the auxiliary model, x {steps} steps; "
        f"evaluation: one timed forward of {n_val} validation images x {passes} passes over "
        f"{len(data.val_x)} images"
    )
    if peak_size is not None:
        how += f"; peak memory also over one untimed step at the largest sub-size ({size_name(peak_size)})"
    return Estimate(
        seconds=round(train_s + eval_s, 1),
        steps=steps,
        seconds_per_step=round(per_step, 4),
        train_seconds=round(train_s, 1),
        eval_seconds=round(eval_s, 1),
        evaluations=passes,
        peak_memory_mib=None if peak is None else round(peak, 1),
        memory=memory,
        device=str(device),
        batch_size=tcfg.batch_size,
        timed_steps=timed,
        how=how,
    )


def _reset_peaks(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    probe.reset_peak_rss()


def _read_peak(device: torch.device) -> tuple[float | None, str]:
    """(MiB, what it measures) of the peak since ``_reset_peaks``."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return peak, "cuda max_memory_allocated over the timed steps"
    mib, how = probe.peak_rss_mib()
    return mib, f"{how} over the timed steps"
