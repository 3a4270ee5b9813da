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

from wave_deploy import distributed as D
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import atomic_path

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


def load_checkpoint(path: Path, config, fingerprint: str, model, stateful) -> dict:
    """Read and check ``path``, then load its states into the model, optimizer, scheduler and scaler."""
    try:  # weights_only: tensors, dicts, lists and primitives only; no code from the file runs
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInputError(f"{path} is not a wave-deploy training checkpoint")
    saved, now = ckpt["config"], config.hashed_fields()
    changed = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(now) if saved.get(k) != now.get(k)]
    if changed:
        raise InvalidInputError(
            f"checkpoint {path} was written with a different training config ({'; '.join(changed)})",
            hint="resume with the same settings, or start over without resume",
        )
    if ckpt["fingerprint"] != fingerprint:
        raise InvalidInputError(
            f"checkpoint {path} was written for different data or a different set of trained parameters",
            hint="start over without resume",
        )
    optimizer, scheduler, scaler = stateful
    try:
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"checkpoint {path} does not match the model or optimizer: {exc}") from exc
    return ckpt
