"""Folding (DESIGN 3.4): WaveViT -> a plain timm VisionTransformer with nothing WAVE-specific left.

``fold`` expands every templated parameter into a timm-named state dict that loads with strict=True into
``VisionTransformer(**spec.timm_kwargs())``. Folded checkpoints are safetensors files whose metadata holds the
spec as JSON, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wave_deploy.errors import InvalidInputError, ParityError
from wave_deploy.fileio import atomic_path
from wave_deploy.spec import ViTSpec

log = logging.getLogger(__name__)

FORMAT = "wave-deploy.folded-vit"
SCHEMA_VERSION = 1
FOLD_TOLERANCE = 1e-5  # max abs error of the folded model's outputs vs the WaveViT's, fp32 (DESIGN 3.4)


def fold(wave) -> tuple[dict[str, Tensor], ViTSpec]:
    """Dense timm state dict (detached copies, in timm's key order) and the spec of a WaveViT."""
    with torch.no_grad():
        expanded = wave.expanded_state_dict()
        state = {k: expanded[k].detach().clone().contiguous() for k in wave.timm_keys()}
    return state, wave.spec


def load_folded(state_dict: dict[str, Tensor], spec: ViTSpec):
    """``VisionTransformer(**spec.timm_kwargs())`` with ``state_dict`` loaded strictly, in eval mode."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**spec.timm_kwargs())
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        raise InvalidInputError(f"checkpoint does not fit {spec.name}: {exc}") from exc
    return model.eval()


def save_folded(
    path: str | Path, state_dict: dict[str, Tensor], spec: ViTSpec, extra_meta: dict[str, Any] | None = None
) -> Path:
    """Write a folded checkpoint atomically as safetensors; metadata: format, schema_version, spec, extra."""
    from safetensors.torch import save

    meta = {
        "format": FORMAT,
        "schema_version": str(SCHEMA_VERSION),
        "spec": json.dumps(spec.to_dict()),
        "extra": json.dumps(extra_meta or {}, sort_keys=True, default=str),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(canonical_safetensors(save(tensors, metadata=meta)))
    return path


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header written with sorted keys, so equal tensors and metadata
    give identical bytes (the safetensors writer keeps metadata in a hash map: its order varies between
    processes). Tensor data and offsets are unchanged; the header is padded with spaces to 8 bytes as the
    format asks."""

    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def read_folded_header(path: str | Path) -> tuple[ViTSpec, dict[str, Any]]:
    """(spec, extra metadata) of a folded checkpoint, checking that the file is a complete safetensors file
    of this format without reading its tensors. Any problem raises ``InvalidInputError``."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:  # checks the header and that the data is all there
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for every malformed file
        raise InvalidInputError(f"{path} is not a readable safetensors file: {exc}") from exc
    return _folded_meta(path, meta)


def _folded_meta(path: Path, meta: dict[str, str]) -> tuple[ViTSpec, dict[str, Any]]:
    if meta.get("format") != FORMAT or meta.get("schema_version") != str(SCHEMA_VERSION):
        raise InvalidInputError(f"{path} is not a wave-deploy folded checkpoint (schema {SCHEMA_VERSION})")
    try:
        spec = ViTSpec.from_dict(json.loads(meta["spec"]))
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError, TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{path}: unreadable spec metadata: {exc}") from exc
    if not isinstance(extra, dict):
        raise InvalidInputError(f"{path}: the 'extra' metadata is not a JSON object")
    return spec, extra


def load_folded_file(path: str | Path):
    """(VisionTransformer, spec, extra_meta) from a checkpoint written by ``save_folded``; NaN/Inf weights are
    refused here (InvalidInputError naming the tensor)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"folded checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            # safe_open is not iterable: keys() is needed
            state = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for every malformed file
        raise InvalidInputError(f"{path} is not a readable safetensors file: {exc}") from exc
    spec, extra = _folded_meta(path, meta)
    _check_finite(path, state)
    return load_folded(state, spec), spec, extra


def _check_finite(path: Path, state: dict[str, Tensor]) -> None:
    """InvalidInputError naming the first tensor that holds NaN or Inf: such weights would only fail later, at
    export's parity gate (exit 7), though the file itself is what is wrong."""
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise InvalidInputError(
                    f"{path}: tensor {name} holds {bad} NaN/Inf value(s) of {tensor.numel()}",
                    hint="the checkpoint is corrupt or its training diverged; rebuild it",
                )


@torch.no_grad()
def parity(wave, timm_model, x: Tensor) -> float:
    """Max abs difference of the two models' outputs on ``x`` (both evaluated in eval mode)."""
    modes = wave.training, timm_model.training
    wave.eval(), timm_model.eval()
    try:
        err = (wave(x).float() - timm_model(x).float()).abs().max().item()
    finally:
        wave.train(modes[0]), timm_model.train(modes[1])
    log.debug("fold parity: max abs error %.3g", err)
    return err


def check_fold(wave, timm_model, x: Tensor, tolerance: float = FOLD_TOLERANCE) -> float:
    """The fold parity gate: the folded model must compute what the WaveViT computes on ``x`` within
    ``tolerance`` (max abs error); else ParityError (exit 7) and the folded weights are never written."""
    err = parity(wave, timm_model, x)
    if not err <= tolerance:  # NaN fails too
        raise ParityError(
            f"the folded timm model differs from the WAVE model by {err:.3g} (max abs, tolerance "
            f"{tolerance:g}): the fold is wrong, so no checkpoint was written",
            hint="a bug or a corrupted bank; rerun with --debug and report it",
        )
    return err
