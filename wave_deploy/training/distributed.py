"""torchrun / DistributedDataParallel helpers for the training loop (DESIGN section 3.2).

A process is "distributed" when torchrun launched it (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the
environment) with more than one process, or when the caller already initialized a process group. Nothing
here is home-made: process groups come from ``torch.distributed`` (nccl on CUDA, gloo on CPU), gradient
averaging from ``DistributedDataParallel``. Only rank 0 writes files and logs; all ranks take part in
every collective.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from wave_deploy.errors import InvalidInputError

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and world_size_env() > 1


def world_size_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise InvalidInputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from exc


def is_distributed() -> bool:
    """True when a process group with more than one process is (or is about to be) in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return launched_by_torchrun()


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return world_size_env() if launched_by_torchrun() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(device_type: str) -> torch.device:
    """Join torchrun's process group if launched by it; return this process's device.

    ``device_type`` is 'cuda' or 'cpu'. Under torchrun on CUDA each process owns ``cuda:LOCAL_RANK``.
    Idempotent: a group the caller already initialized is reused.
    """
    if device_type == "cuda":
        index = local_rank() if is_distributed() else torch.cuda.current_device()
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    if launched_by_torchrun() and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.info("joined process group: rank %d of %d (%s)", rank(), world_size(), backend)
    return device


def cleanup_distributed() -> None:
    """Leave the process group (call once, at the very end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks; returns a new tensor on the input's device (the input itself alone)."""
    if not is_distributed():
        return values
    buf = values.detach().to(collective_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(values.device)


def all_gather_equal_size(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of ``t`` (same shape and dtype on all ranks), in rank order, on ``t``'s device."""
    if not is_distributed():
        return [t]
    buf = t.detach().to(collective_device()).contiguous()
    out = [torch.empty_like(buf) for _ in range(world_size())]
    dist.all_gather(out, buf)
    return [o.to(t.device) for o in out]


def collective_device() -> torch.device:
    """Where tensors must live for collectives: the current CUDA device for nccl, the CPU otherwise."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when distributed; otherwise return the model itself.

    DDP broadcasts rank 0's parameters and buffers once here, so all ranks start identical. Buffers are
    not re-broadcast every forward (``broadcast_buffers=False``): ViTs have no running statistics, and
    WaveViT's frozen templates are buffers that would otherwise be sent on every step.
    """
    if not is_distributed():
        return model

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # newer torch
    no_forward_sync: dict[str, Any] = (
        {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(model, device_ids=ids, **no_forward_sync)


def gather_rng_states(device: torch.device) -> dict[str, list[torch.Tensor]]:
    """Every rank's torch RNG states (CPU, and CUDA for ``device``), in rank order, as CPU uint8 tensors."""
    states = {"torch_cpu": all_gather_equal_size(torch.get_rng_state())}
    if device.type == "cuda":
        states["torch_cuda"] = [s.cpu() for s in all_gather_equal_size(torch.cuda.get_rng_state(device))]
    return states


def restore_rng_states(states: dict[str, list[torch.Tensor]], device: torch.device) -> bool:
    """Set this rank's RNG states from ``gather_rng_states`` output; False when the world size differs.

    A CUDA state saved on a CPU run (or the reverse) is left alone: the CPU state is what a CPU run uses.
    """
    cpu = states.get("torch_cpu", [])
    if len(cpu) != world_size():
        log.warning(
            "checkpoint holds RNG states of %d processes, this run has %d: RNG not restored",
            len(cpu),
            world_size(),
        )
        return False
    torch.set_rng_state(cpu[rank()])
    cuda = states.get("torch_cuda", [])
    if device.type == "cuda" and len(cuda) == world_size():
        torch.cuda.set_rng_state(cuda[rank()], device)
    return True
