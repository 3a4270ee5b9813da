"""How a training step's batch reaches the device: where the training tensors live during a run.

The values of every batch are the same whatever the placement (the indices come from
``training_config.global_batch_indices``); only the copies differ, so a placement never changes a run's
trajectory and is not part of its checkpoint fingerprint.

- ``host``: index the tensors where they are (a CPU run, or data already on the GPU).
- ``device``: copy the whole training set to the GPU once; a step indexes it there (no copy per step).
- ``pinned``: a step gathers its batch into one of two page-locked host buffers and copies it to the GPU
  asynchronously; the buffer is reused only after an event says its previous copy finished.
- ``pageable``: a step indexes on the host and copies from ordinary memory (the copy blocks the host): what
  training did before placements existed, kept as the "before" of benchmarks/loop_speed.py.
- ``auto``: ``host`` off CUDA; on CUDA ``device`` when the training set takes at most a quarter of the GPU's
  free memory, else ``pinned``.
"""

from __future__ import annotations

import torch

from wave_deploy.errors import MissingDependencyError
from wave_deploy.probe import cuda_free_bytes

GPU_SHARE = 0.25  # auto puts the training set on the GPU when it needs at most this share of free memory


def resolve_placement(
    placement: str, device: torch.device, train_x: torch.Tensor, train_y: torch.Tensor
) -> str:
    """The concrete placement for ``placement`` (one of training_config.PLACEMENT_CHOICES) on ``device``."""
    on_gpu = device.type == "cuda"
    if placement in ("device", "pinned", "pageable") and not on_gpu:
        raise MissingDependencyError(
            f"data placement '{placement}' needs a CUDA device", hint="use data placement 'auto' or 'host'"
        )
    if placement != "auto":
        return placement
    if not on_gpu or train_x.device.type == "cuda":
        return "host"
    free = cuda_free_bytes(device)
    return "device" if train_x.nbytes + train_y.nbytes <= GPU_SHARE * free else "pinned"


class BatchSource:
    """``source.batch(idx)`` -> (x, y) on ``device`` for sample indices ``idx`` (a CPU int64 tensor).

    Every call returns the same length of ``idx`` (the per-rank batch); ``pinned`` sizes its buffers by the
    first call.
    """

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, device: torch.device, placement: str):
        self.placement = resolve_placement(placement, device, train_x, train_y)
        self.device = device
        if self.placement == "device":
            train_x, train_y = train_x.to(device), train_y.to(device)
        self.x, self.y = train_x, train_y
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._events: list[torch.cuda.Event | None] = [None, None]
        self._calls = 0

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.placement == "pinned":
            return self._pinned(idx)
        x = self.x[idx.to(self.x.device)]
        y = self.y[idx.to(self.y.device)]
        return x.to(self.device), y.to(self.device)

    def _pinned(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._buffers:
            n = len(idx)
            self._buffers = [
                (
                    torch.empty((n, *self.x.shape[1:]), dtype=self.x.dtype).pin_memory(),
                    torch.empty((n,), dtype=self.y.dtype).pin_memory(),
                )
                for _ in range(2)
            ]
        slot = self._calls % 2
        self._calls += 1
        done = self._events[slot]
        if done is not None:
            done.synchronize()  # the copy that last read this buffer has finished
        bx, by = self._buffers[slot]
        torch.index_select(self.x, 0, idx, out=bx)
        torch.index_select(self.y, 0, idx, out=by)
        x, y = bx.to(self.device, non_blocking=True), by.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._events[slot] = event
        return x, y
