"""Training checkpoints: one ``checkpoint.pt`` per run, written atomically by rank 0 and read back with
``torch.load(weights_only=True)`` (tensors, dicts, lists and primitives only: no code from the file runs).

A checkpoint stores a hash of the trajectory-relevant config, the trained parameter names and the data
(``fingerprint``); resuming with any of them changed is refused with the changed fields named.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import atomic_path
from wave_deploy.training import distributed as D

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "wave-deploy-train-checkpoint/1"


def fingerprint(config, names, *tensors) -> str:
    """Hash of what a resume must not change besides the config: the trained parameters and the data."""
    digest = hashlib.sha256(json.dumps({"params": names, "config": config.hashed_fields()}).encode())
    for t in tensors:
        if t is not None:
            digest.update(f"{tuple(t.shape)}:{t.dtype}".encode())
            digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path, state, config, fingerprint, model, stateful) -> None:
    """Rank 0 writes everything a resume needs; every rank must call it (RNG states are gathered)."""
    optimizer, scheduler, scaler = stateful
    rng = D.gather_rng_states(next(model.parameters()).device)  # collective: before the rank check
    if not D.is_main_process():
        return
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.hashed_fields(),
        "fingerprint": fingerprint,
        "model": model.state_dict(),  # trainable parameters and buffers (WaveViT's templates too)
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),  # {} when fp16 is off
        "rng": rng,  # per rank: torch CPU (and CUDA) generator states
        **state,  # step, history, window, train_time_s
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    log.debug("checkpoint at step %d written to %s", state["step"], path)


class UnusableCheckpointError(InvalidInputError):
    """A checkpoint file that cannot be resumed from (unreadable, foreign, or written for other settings).

    ``directory`` is the checkpoint's folder: deleting it restarts that training from step 0.
    """

    def __init__(self, message: str, *, directory: Path, hint: str | None = None):
        super().__init__(message, hint=hint or f"delete {directory} to start this training over")
        self.directory = directory


# What a resume reads besides the states: key -> the check it must pass.
_RESUME_FIELDS = {
    "config": lambda v: isinstance(v, dict),
    "fingerprint": lambda v: isinstance(v, str),
    "model": lambda v: isinstance(v, dict),
    "optimizer": lambda v: isinstance(v, dict),
    "scheduler": lambda v: isinstance(v, dict),
    "scaler": lambda v: isinstance(v, dict),
    "rng": lambda v: (
        isinstance(v, dict)
        and isinstance(v.get("torch_cpu"), list)
        and all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == torch.get_rng_state().shape
            for t in v["torch_cpu"]
        )
    ),
    "step": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "history": lambda v: isinstance(v, list),
    "window": lambda v: isinstance(v, torch.Tensor) and tuple(v.shape) == (2,),
    "train_time_s": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def load_checkpoint(path: Path, config, fingerprint: str, model, stateful) -> dict:
    """Read and check ``path``, then load its states into the model, optimizer, scheduler and scaler.

    Every problem raises ``UnusableCheckpointError`` (exit 3) naming the file and the folder to delete.
    """
    path = Path(path)
    where = path.parent
    try:  # weights_only: tensors, dicts, lists and primitives only; no code from the file runs
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UnusableCheckpointError(
            f"cannot read training checkpoint {path}: {type(exc).__name__}: {reason}", directory=where
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UnusableCheckpointError(f"{path} is not a wave-deploy training checkpoint", directory=where)
    bad = [key for key, ok in _RESUME_FIELDS.items() if key not in ckpt or not ok(ckpt[key])]
    if bad:
        raise UnusableCheckpointError(
            f"training checkpoint {path} is damaged: missing or malformed {', '.join(bad)}", directory=where
        )
    saved, now = ckpt["config"], config.hashed_fields()
    changed = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(now) if saved.get(k) != now.get(k)]
    if changed:
        raise UnusableCheckpointError(
            f"checkpoint {path} was written with a different training config ({'; '.join(changed)})",
            directory=where,
            hint=f"resume with the same settings, or delete {where} to start over",
        )
    if ckpt["fingerprint"] != fingerprint:
        raise UnusableCheckpointError(
            f"checkpoint {path} was written for different data or a different set of trained parameters",
            directory=where,
            hint=f"delete {where} to start over",
        )
    optimizer, scheduler, scaler = stateful
    try:
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UnusableCheckpointError(
            f"checkpoint {path} does not match the model or optimizer: {reason}", directory=where
        ) from exc
    return ckpt
