"""TemplateBank: the learngene of DESIGN 3.2, stored as one safetensors file.

The bank holds, per parameter kind (named as timm names the parameter, per-layer kinds without the
``blocks.{l}.`` prefix), N templates shared by every layer and every model size, plus optionally the scalers
of the auxiliary model that learned them. Its geometry says which ViTSpecs it can produce.

File format: a single ``.safetensors`` file. Tensors are ``templates/<kind>`` and ``aux_scalers/<kind>``; the
safetensors metadata header holds one JSON document under ``wave_deploy.bank`` with schema_version, geometry,
aux_spec, provenance and the sha256 of every tensor's raw bytes. One file means the hashes and geometry can
never be separated from the tensors they describe, and one atomic rename publishes all of it. Loading reads
only the safetensors header and raw tensor bytes: nothing in the file is ever executed. The header, metadata,
layout, hashes and finite values are checked, with limits, by the torch-free ``wave.bank_file`` first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import atomic_path
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.bank_file import (
    DEFAULT_FILENAME,
    METADATA_KEY,
    SCHEMA_VERSION,
    check_tensor_set,
    default_bank_path,
    describe,
    file_summary,
    open_bank,
)
from wave_deploy.wave.bank_file import resolve as _resolve
from wave_deploy.wave.geometry import ALL_KINDS, BankGeometry, template_shape

__all__ = [
    "DEFAULT_FILENAME",
    "METADATA_KEY",
    "SCHEMA_VERSION",
    "TemplateBank",
    "default_bank_path",
    "file_summary",
    "tensor_sha256",
]
_TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def tensor_sha256(t: Tensor) -> str:
    """sha256 of a tensor's raw bytes (C order, native little-endian as safetensors stores them)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(raw.tobytes()).hexdigest()


@dataclass
class TemplateBank:
    geometry: BankGeometry
    templates: dict[str, Tensor]  # kind -> (N, *template_shape)
    aux_scalers: dict[str, Tensor] = field(default_factory=dict)  # kind -> scaler shape of aux_spec
    aux_spec: ViTSpec | None = None  # the auxiliary model the aux scalers belong to
    provenance: dict[str, Any] = field(default_factory=dict)  # ancestry, data, schedule, seeds, accuracies

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every tensor's presence, dtype and shape against the geometry (InvalidInputError)."""
        tensors = {f"templates/{k}": t for k, t in self.templates.items()}
        tensors.update({f"aux_scalers/{k}": t for k, t in self.aux_scalers.items()})
        for name, t in tensors.items():
            if not isinstance(t, Tensor):
                raise InvalidInputError(f"bank tensor {name} must be a floating-point tensor")
        check_tensor_set(
            self.geometry,
            self.aux_spec,
            {n: (tuple(t.shape), t.is_floating_point()) for n, t in tensors.items()},
        )

    def tensors(self) -> dict[str, Tensor]:
        out = {f"templates/{k}": v for k, v in self.templates.items()}
        out.update({f"aux_scalers/{k}": v for k, v in self.aux_scalers.items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def metadata(self, tensors: dict[str, Tensor] | None = None) -> dict[str, Any]:
        tensors = self.tensors() if tensors is None else tensors
        return {
            "schema_version": SCHEMA_VERSION,
            "geometry": self.geometry.to_dict(),
            "aux_spec": None if self.aux_spec is None else self.aux_spec.to_dict(),
            "provenance": self.provenance,
            "sha256": {name: tensor_sha256(t) for name, t in sorted(tensors.items())},
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (a .safetensors file, or a directory that gets bank.safetensors)."""
        from safetensors.torch import save_file

        self.validate()
        final = _resolve(path)
        tensors = self.tensors()
        try:
            header = json.dumps(self.metadata(tensors), sort_keys=True, allow_nan=False)  # strict JSON
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"bank provenance is not JSON-serializable: {exc}") from exc
        with atomic_path(final) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: header})
        return final

    @classmethod
    def load(cls, path: str | Path, spec: ViTSpec | None = None) -> TemplateBank:
        """Load and verify a bank (header, schema, layout, shapes, hashes, finite values); with ``spec``, also
        check it can be produced. Every problem is an InvalidInputError naming the file (wave.bank_file)."""
        bank_file = open_bank(path)
        raw = bank_file.read_tensors()
        tensors = {}
        for name, data in raw.items():
            entry = bank_file.entries[name]
            flat = torch.frombuffer(bytearray(data), dtype=_TORCH_DTYPES[entry.dtype])
            tensors[name] = flat.reshape(entry.shape)
        bank = cls(
            geometry=bank_file.geometry,
            templates={n.split("/", 1)[1]: t for n, t in tensors.items() if n.startswith("templates/")},
            aux_scalers={n.split("/", 1)[1]: t for n, t in tensors.items() if n.startswith("aux_scalers/")},
            aux_spec=bank_file.aux_spec,
            provenance=bank_file.provenance,
        )
        if spec is not None:
            bank.geometry.check_spec(spec)
        return bank

    @classmethod
    def init_random(
        cls, geometry: BankGeometry, seed: int = 0, provenance: dict | None = None
    ) -> TemplateBank:
        """Unit-variance random templates (no aux scalers): the starting point of stage 1, and test banks.

        Template 0 of every LayerNorm weight kind is constant ones, so LayerNorm's unit weight lies in the span.
        (Not for the other vectors: a constant head bias or key bias is invisible to softmax, so its scaler
        would get only rounding noise as gradient, which Adam turns into full-size random steps.)
        """
        g = torch.Generator().manual_seed(seed)
        templates = {}
        for kind in ALL_KINDS:
            t = torch.randn(geometry.templates[kind], *template_shape(geometry, kind), generator=g)
            if kind in ("norm1.weight", "norm2.weight", "norm.weight"):
                t[0] = 1.0
            templates[kind] = t
        return cls(geometry, templates, provenance=dict(provenance or {"init": "random", "seed": seed}))

    def info(self) -> dict[str, Any]:
        """Geometry, counts and bytes per kind, totals, aux spec and provenance (for ``templates info``)."""
        tensors = {f"templates/{k}": t for k, t in self.templates.items()}
        tensors.update({f"aux_scalers/{k}": t for k, t in self.aux_scalers.items()})
        shapes = {n: (tuple(t.shape), t.element_size()) for n, t in tensors.items()}
        return describe(self.geometry, self.aux_spec, self.provenance, shapes)
