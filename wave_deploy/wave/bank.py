"""TemplateBank: the learngene of DESIGN 3.2, stored as one safetensors file.

The bank holds, per parameter kind (named as timm names the parameter, per-layer kinds without the
``blocks.{l}.`` prefix), N templates shared by every layer and every model size, plus optionally the scalers
of the auxiliary model that learned them. Its geometry says which ViTSpecs it can produce.

File format: a single ``.safetensors`` file. Tensors are ``templates/<kind>`` and ``aux_scalers/<kind>``; the
safetensors metadata header holds one JSON document under ``wave_deploy.bank`` with schema_version, geometry,
aux_spec, provenance and the sha256 of every tensor's raw bytes. One file means the hashes and geometry can
never be separated from the tensors they describe, and one atomic rename publishes all of it. Loading reads
only the safetensors header and raw tensor bytes: nothing in the file is ever executed.
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
from wave_deploy.fileio import atomic_path, sha256_file
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.geometry import ALL_KINDS, BankGeometry, kind_layouts, template_shape

SCHEMA_VERSION = 1
METADATA_KEY = "wave_deploy.bank"
DEFAULT_FILENAME = "bank.safetensors"


def default_bank_path() -> Path:
    """The bank shipped inside the package (built by scripts/build_default_bank.sh)."""
    from importlib import resources

    return Path(str(resources.files("wave_deploy.assets") / "default_bank.safetensors"))


def tensor_sha256(t: Tensor) -> str:
    """sha256 of a tensor's raw bytes (C order, native little-endian as safetensors stores them)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(raw.tobytes()).hexdigest()


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / DEFAULT_FILENAME


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
        g = self.geometry
        if set(self.templates) != set(ALL_KINDS):
            raise InvalidInputError(
                f"bank templates: missing {sorted(set(ALL_KINDS) - set(self.templates))}, "
                f"unknown {sorted(set(self.templates) - set(ALL_KINDS))}"
            )
        for kind, t in self.templates.items():
            _check_tensor(f"templates/{kind}", t, (g.templates[kind], *template_shape(g, kind)))
        if self.aux_spec is None:
            if self.aux_scalers:
                raise InvalidInputError(
                    "bank has auxiliary scalers but no aux_spec saying which model they fit"
                )
            return
        layouts = kind_layouts(g, self.aux_spec, templated_head=self.aux_spec.num_classes == g.num_classes)
        if set(self.aux_scalers) != set(layouts):
            raise InvalidInputError(
                f"bank aux scalers: expected kinds {sorted(layouts)}, got {sorted(self.aux_scalers)}"
            )
        for kind, lay in layouts.items():
            shape = lay.scaler_shape(g.templates[kind], self.aux_spec.depth)
            _check_tensor(f"aux_scalers/{kind}", self.aux_scalers[kind], shape)

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
            header = json.dumps(self.metadata(tensors), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"bank provenance is not JSON-serializable: {exc}") from exc
        with atomic_path(final) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: header})
        return final

    @classmethod
    def load(cls, path: str | Path, spec: ViTSpec | None = None) -> TemplateBank:
        """Load and verify a bank (schema, hashes, shapes); with ``spec``, also check it can be produced."""
        final = _resolve(path)
        if not final.is_file():
            raise InvalidInputError(f"template bank not found: {final}")
        meta, tensors = _read_safetensors(final)
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise InvalidInputError(
                f"{final}: bank schema_version {meta.get('schema_version')!r} is not "
                f"supported (this wave-deploy reads {SCHEMA_VERSION})"
            )
        hashes = meta.get("sha256")
        if not isinstance(hashes, dict) or set(hashes) != set(tensors):
            raise InvalidInputError(f"{final}: the bank's sha256 list does not match the tensors it holds")
        for name, t in tensors.items():
            if tensor_sha256(t) != hashes[name]:
                raise InvalidInputError(f"{final}: tensor {name} does not match its sha256 (corrupt bank)")
        prefix = ("templates/", "aux_scalers/")
        if any(not name.startswith(prefix) for name in tensors):
            raise InvalidInputError(f"{final}: unexpected tensor names {sorted(tensors)}")
        aux_spec = meta.get("aux_spec")
        try:
            geometry = BankGeometry.from_dict(meta.get("geometry"))
            bank = cls(
                geometry=geometry,
                templates={n.split("/", 1)[1]: t for n, t in tensors.items() if n.startswith(prefix[0])},
                aux_scalers={n.split("/", 1)[1]: t for n, t in tensors.items() if n.startswith(prefix[1])},
                aux_spec=None if aux_spec is None else ViTSpec.from_dict(aux_spec),
                provenance=meta.get("provenance") or {},
            )
        except (InvalidInputError, TypeError) as exc:  # TypeError: a spec or geometry field is missing
            raise InvalidInputError(f"{final}: {getattr(exc, 'message', exc)}") from exc
        if spec is not None:
            geometry.check_spec(spec)
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
        kinds = []
        for kind in ALL_KINDS:
            t, s = self.templates[kind], self.aux_scalers.get(kind)
            kinds.append(
                {
                    "kind": kind,
                    "templates": t.shape[0],
                    "template_shape": list(t.shape[1:]),
                    "template_numel": t.numel(),
                    "template_bytes": t.numel() * t.element_size(),
                    "aux_scaler_shape": None if s is None else list(s.shape),
                    "aux_scaler_numel": 0 if s is None else s.numel(),
                    "aux_scaler_bytes": 0 if s is None else s.numel() * s.element_size(),
                }
            )
        return {
            "schema_version": SCHEMA_VERSION,
            "geometry": self.geometry.to_dict(),
            "valid_embed_dims": self.geometry.valid_embed_dims(),
            "kinds": kinds,
            "template_numel": sum(k["template_numel"] for k in kinds),
            "template_bytes": sum(k["template_bytes"] for k in kinds),
            "aux_scaler_numel": sum(k["aux_scaler_numel"] for k in kinds),
            "aux_scaler_bytes": sum(k["aux_scaler_bytes"] for k in kinds),
            "aux_spec": None if self.aux_spec is None else self.aux_spec.to_dict(),
            "provenance": self.provenance,
        }


def _check_tensor(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise InvalidInputError(f"bank tensor {name} must be a floating-point tensor")
    if tuple(t.shape) != tuple(shape):
        raise InvalidInputError(f"bank tensor {name} has shape {tuple(t.shape)}, the geometry needs {shape}")


def _read_safetensors(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """Header JSON and tensors of a safetensors file; other files (pickle, truncated): InvalidInputError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            # safe_open is not iterable: keys() is needed
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for every malformed file
        raise InvalidInputError(
            f"{path} is not a readable safetensors file (truncated, corrupt or another format): {exc}",
            hint="only safetensors template banks are loaded; pickle files are refused",
        ) from exc
    if METADATA_KEY not in header:
        raise InvalidInputError(
            f"{path} is a safetensors file but not a wave-deploy template bank (no {METADATA_KEY} header)"
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: bank metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise InvalidInputError(f"{path}: bank metadata must be a JSON object")
    return meta, tensors


def file_summary(path: str | Path) -> dict[str, Any]:
    final = _resolve(path)
    return {"path": str(final), "file_bytes": final.stat().st_size, "file_sha256": sha256_file(final)}
