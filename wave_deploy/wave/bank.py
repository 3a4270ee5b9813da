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

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import atomic_path, sha256_file
from wave_deploy.spec import ViTSpec

SCHEMA_VERSION = 1
METADATA_KEY = "wave_deploy.bank"
DEFAULT_FILENAME = "bank.safetensors"

# Kinds, in timm's parameter names. Block kinds live at blocks.{l}.<kind>; global kinds at <kind>.
BLOCK_MATRIX_KINDS = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")
BLOCK_VECTOR_KINDS = (
    *("norm1.weight", "norm1.bias", "attn.qkv.bias", "attn.proj.bias"),  # attention half of a block
    *("norm2.weight", "norm2.bias", "mlp.fc1.bias", "mlp.fc2.bias"),  # mlp half
)
GLOBAL_MATRIX_KINDS = ("patch_embed.proj.weight", "cls_token", "pos_embed", "head.weight")
GLOBAL_VECTOR_KINDS = ("patch_embed.proj.bias", "norm.weight", "norm.bias", "head.bias")
BLOCK_KINDS = BLOCK_MATRIX_KINDS + BLOCK_VECTOR_KINDS
ALL_KINDS = BLOCK_KINDS + GLOBAL_MATRIX_KINDS + GLOBAL_VECTOR_KINDS
HEAD_KINDS = ("head.weight", "head.bias")


@dataclass(frozen=True)
class KindLayout:
    """How one kind is produced for one spec. Shapes exclude the template axis N and the layer axis L."""

    kind: str
    per_layer: bool  # True: one scaler set per block, param at blocks.{l}.<kind>
    vector: bool  # True: expand_vec with 1-D templates; False: block-form expand
    template_shape: tuple[int, ...]  # (u, v) or (w,)
    grid: tuple[int, ...]  # scaler grid (a, b) or (m/w,)
    param_shape: tuple[int, ...]  # timm's shape of the parameter

    def scaler_shape(self, n: int, depth: int) -> tuple[int, ...]:
        return ((depth,) if self.per_layer else ()) + (n, *self.grid)


@dataclass(frozen=True)
class BankGeometry:
    """What a bank's templates look like and which ViTSpecs they can produce."""

    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int  # of the bank's own task (the templated head)
    w: int  # template size
    head_dim: int
    mlp_ratio: float
    templates: dict[str, int]  # kind -> N
    max_depth: int
    max_embed_dim: int

    def __post_init__(self) -> None:
        for name in [f.name for f in dataclasses.fields(self) if f.type == "int"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"bank geometry: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise InvalidInputError(f"bank geometry: mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if self.img_size % self.patch_size:
            raise InvalidInputError("bank geometry: img_size must be a multiple of patch_size")
        if not isinstance(self.templates, dict):
            raise InvalidInputError("bank geometry: templates must map each kind to its template count")
        missing = sorted(set(ALL_KINDS) - set(self.templates))
        unknown = sorted(set(self.templates) - set(ALL_KINDS))
        if missing or unknown:
            raise InvalidInputError(
                f"bank geometry: templates per kind: missing {missing}, unknown {unknown}"
            )
        for kind, n in self.templates.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise InvalidInputError(f"bank geometry: templates[{kind!r}] must be a positive integer")

    @classmethod
    def create(cls, *, n_matrix: int = 4, n_vector: int = 2, **fields: Any) -> BankGeometry:
        """Geometry with n_matrix templates for every matrix kind and n_vector for every vector kind."""
        vectors = set(BLOCK_VECTOR_KINDS + GLOBAL_VECTOR_KINDS)
        templates = {k: (n_vector if k in vectors else n_matrix) for k in ALL_KINDS}
        return cls(templates=templates, **fields)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def problems(self, spec: ViTSpec) -> list[str]:
        """Every reason this bank cannot produce ``spec`` (empty when it can)."""
        out = []
        for name in ("img_size", "patch_size", "in_chans", "mlp_ratio"):
            if getattr(spec, name) != getattr(self, name):
                out.append(f"{name}={getattr(spec, name)} differs from the bank's {getattr(self, name)}")
        d = spec.embed_dim
        if d % self.w:
            out.append(f"embed_dim={d} is not a multiple of the template size w={self.w}")
        elif spec.mlp_hidden % self.w:
            out.append(f"mlp hidden size {spec.mlp_hidden} is not a multiple of w={self.w}")
        if d % self.head_dim:
            out.append(f"embed_dim={d} is not a multiple of the bank's head_dim={self.head_dim}")
        if spec.depth > self.max_depth:
            out.append(f"depth={spec.depth} exceeds the bank's max_depth={self.max_depth}")
        if d > self.max_embed_dim:
            out.append(f"embed_dim={d} exceeds the bank's max_embed_dim={self.max_embed_dim}")
        return out

    def check_spec(self, spec: ViTSpec) -> None:
        """Raise InvalidInputError explaining why ``spec`` cannot be produced from this bank."""
        problems = self.problems(spec)
        if problems:
            raise InvalidInputError(f"the template bank cannot produce {spec.name}: " + "; ".join(problems))

    def valid_embed_dims(self) -> list[int]:
        step = self.w * self.head_dim // math.gcd(self.w, self.head_dim)
        return [d for d in range(step, self.max_embed_dim + 1, step) if (d * self.mlp_ratio) % self.w == 0]

    def make_spec(
        self, depth: int, embed_dim: int, num_heads: int | None = None, num_classes: int | None = None
    ) -> ViTSpec:
        """A checked ViTSpec of this geometry (num_heads defaults to embed_dim / head_dim)."""
        if num_heads is None:
            if embed_dim % self.head_dim:
                raise InvalidInputError(
                    f"embed_dim={embed_dim} is not a multiple of head_dim={self.head_dim}"
                )
            num_heads = embed_dim // self.head_dim
        spec = ViTSpec(
            depth=depth,
            embed_dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=self.mlp_ratio,
            patch_size=self.patch_size,
            img_size=self.img_size,
            in_chans=self.in_chans,
            num_classes=self.num_classes if num_classes is None else num_classes,
        )
        self.check_spec(spec)
        return spec

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BankGeometry:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != known:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InvalidInputError(f"bank geometry must have exactly the fields {sorted(known)}, got {got}")
        return cls(**data)


def template_shape(geom: BankGeometry, kind: str) -> tuple[int, ...]:
    w, c, p = geom.w, geom.in_chans, geom.patch_size
    special = {
        "patch_embed.proj.weight": (w, c * p * p),
        "cls_token": (1, w),
        "pos_embed": (geom.num_patches + 1, w),
        "head.weight": (geom.num_classes, w),
        "head.bias": (geom.num_classes,),
    }
    if kind in special:
        return special[kind]
    return (w, w) if kind in BLOCK_MATRIX_KINDS else (w,)


def kind_layouts(geom: BankGeometry, spec: ViTSpec, templated_head: bool = True) -> dict[str, KindLayout]:
    """Layout of every templated kind for ``spec`` (head kinds only when ``templated_head``)."""
    geom.check_spec(spec)
    if templated_head and spec.num_classes != geom.num_classes:
        raise InvalidInputError(
            f"a templated head needs num_classes={geom.num_classes} (the bank's task), got {spec.num_classes}"
        )
    w, d, h = geom.w, spec.embed_dim, spec.mlp_hidden
    c, p, k, tokens = spec.in_chans, spec.patch_size, spec.num_classes, spec.seq_len
    # kind -> (grid, timm param shape)
    table = {
        "attn.qkv.weight": ((3 * d // w, d // w), (3 * d, d)),
        "attn.proj.weight": ((d // w, d // w), (d, d)),
        "mlp.fc1.weight": ((h // w, d // w), (h, d)),
        "mlp.fc2.weight": ((d // w, h // w), (d, h)),
        "attn.qkv.bias": ((3 * d // w,), (3 * d,)),
        "mlp.fc1.bias": ((h // w,), (h,)),
        "patch_embed.proj.weight": ((d // w, 1), (d, c, p, p)),
        "cls_token": ((1, d // w), (1, 1, d)),
        "pos_embed": ((1, d // w), (1, tokens, d)),
        "head.weight": ((1, d // w), (k, d)),
        "head.bias": ((1,), (k,)),
    }
    out = {}
    for kind in ALL_KINDS:
        if kind in HEAD_KINDS and not templated_head:
            continue
        grid, shape = table.get(kind, ((d // w,), (d,)))  # the remaining kinds are length-D vectors
        t_shape = template_shape(geom, kind)
        out[kind] = KindLayout(kind, kind in BLOCK_KINDS, len(t_shape) == 1, t_shape, grid, shape)
    return out


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
