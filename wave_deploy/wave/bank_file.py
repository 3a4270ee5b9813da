"""Reading a template bank file without torch: header, metadata, layout, hashes and finite values, bounded.

A bank is one safetensors file: 8 bytes (little-endian header length n), n bytes of JSON header, then the raw
tensor bytes. This module parses that header itself, with limits, before anything else touches the file:

- the header is at most ``MAX_HEADER_BYTES``; the bank metadata JSON nests at most ``MAX_JSON_DEPTH`` levels
  (checked by a scan before ``json.loads``, so deep nesting can never reach Python's recursion limit);
- every JSON value has the type its field needs (an object where an object belongs, integers for sizes);
- tensors are floating point (F16, BF16, F32, F64), at most ``MAX_NDIM`` dimensions, and their byte ranges
  tile the data area exactly (no gap, overlap, or range past the end of the file);
- the geometry is bounded (``BankGeometry``) and every tensor's shape must be the one the geometry and the
  auxiliary spec imply, so no number in the metadata can ask for more than the file itself holds;
- the JSON is strict: a duplicated key or a NaN/Infinity token is refused, and ``schema_version`` is exactly
  the integer 1 (not 1.0, not true);
- every tensor's bytes match the sha256 the metadata records and hold only finite values no larger in magnitude
  than ``MAX_ABS_VALUE`` (NaN/Inf, or a value beyond what a distillation can produce: refused).

``templates info`` and ``plan`` use this module directly (no torch import); ``TemplateBank.load`` turns the
verified bytes into tensors. Every problem raises InvalidInputError (exit 3) naming the file and the tensor.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from wave_deploy import strict_json
from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import sha256_file
from wave_deploy.spec import ViTSpec
from wave_deploy.wave.bank_values import FLOAT_DTYPES, value_problem
from wave_deploy.wave.geometry import ALL_KINDS, BankGeometry, kind_layouts, template_shape
from wave_deploy.wave.provenance import escape_control

SCHEMA_VERSION = 1
METADATA_KEY = "wave_deploy.bank"
DEFAULT_FILENAME = "bank.safetensors"

MAX_HEADER_BYTES = 1 << 20  # the whole safetensors JSON header, bank metadata included (shipped bank: 11 KB)
MAX_JSON_DEPTH = 32  # nesting of the bank metadata JSON (shipped bank: 4)
MAX_TENSORS = 256  # a bank has 2 x 20 tensors at most
MAX_FILE_BYTES = (
    2 << 30
)  # 2 GiB; a bank of ViT-B size holds a few MB. Reading a bank holds it in memory once.
MAX_NDIM = 8
CORRUPT_HINT = "rebuild it with `wave-deploy templates build`, or use the bank shipped with wave-deploy"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_JSON_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def default_bank_path() -> Path:
    """The bank shipped inside the package (built by scripts/build_default_bank.sh)."""

    return Path(str(resources.files("wave_deploy.assets") / "default_bank.safetensors"))


def resolve(path: str | Path) -> Path:
    """A .safetensors path as given; any other path is a directory holding bank.safetensors."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / DEFAULT_FILENAME


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return FLOAT_DTYPES[self.dtype][0]


@dataclass(frozen=True)
class BankFile:
    """A bank file whose header, metadata and layout are verified (tensor bytes: see ``read_tensors``)."""

    path: Path
    file_bytes: int
    geometry: BankGeometry
    aux_spec: ViTSpec | None
    provenance: dict[str, Any]
    sha256: dict[str, str]
    entries: dict[str, TensorEntry]

    def read_tensors(self) -> dict[str, bytes]:
        """Raw bytes of every tensor, each checked against its sha256, for NaN/Inf and against MAX_ABS_VALUE."""
        out = {}
        with open(self.path, "rb") as fh:
            for name, e in sorted(self.entries.items(), key=lambda item: item[1].start):
                fh.seek(e.start)
                raw = fh.read(e.end - e.start)
                if len(raw) != e.end - e.start:
                    self.fail(f"tensor {name} is cut short (the file changed while it was read)")
                if hashlib.sha256(raw).hexdigest() != self.sha256[name]:
                    self.fail(f"tensor {name} does not match its sha256 (corrupt bank)")
                problem = value_problem(raw, e.dtype)
                if problem:
                    self.fail(f"tensor {name} holds {problem}")
                out[name] = raw
        return out

    def fail(self, what: str) -> NoReturn:
        raise InvalidInputError(f"template bank {escape_control(self.path)}: {what}", hint=CORRUPT_HINT)

    def info(self) -> dict[str, Any]:
        shapes = {name: (e.shape, e.itemsize) for name, e in self.entries.items()}
        return describe(self.geometry, self.aux_spec, self.provenance, shapes)


def open_bank(path: str | Path) -> BankFile:
    """Parse and check a bank's header, metadata and tensor layout (no tensor bytes are read)."""
    final = resolve(path)
    shown = escape_control(final)
    try:
        found = final.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        found = False
    if not found:
        raise InvalidInputError(
            f"template bank not found: {shown}",
            hint="give a .safetensors bank file, or a directory holding bank.safetensors",
        )
    header, data_start, size = _read_header(final, shown)

    def fail(what: str) -> NoReturn:
        raise InvalidInputError(f"template bank {shown}: {what}", hint=CORRUPT_HINT)

    extra = header.pop("__metadata__", None)
    if not isinstance(extra, dict) or not isinstance(extra.get(METADATA_KEY), str):
        raise InvalidInputError(
            f"{shown} is a safetensors file but not a wave-deploy template bank (no {METADATA_KEY} header)",
            hint="banks are written by `wave-deploy templates build`",
        )
    entries = _layout(header, data_start, size, lambda what: _unreadable(shown, what))
    meta = _parse_json(extra[METADATA_KEY], fail)
    version = meta.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # 1.0 and true compare equal to 1
        fail(
            f"bank schema_version {escape_control(repr(meta.get('schema_version')))[:40]} is not supported "
            f"(this wave-deploy reads {SCHEMA_VERSION})"
        )
    hashes = meta.get("sha256")
    if not isinstance(hashes, dict) or set(hashes) != set(entries):
        fail("the bank's sha256 list does not match the tensors it holds")
    if not all(isinstance(h, str) and _SHA256.fullmatch(h) for h in hashes.values()):
        fail("the bank's sha256 list holds a value that is not a sha256 hex digest")
    prefix = ("templates/", "aux_scalers/")
    odd = sorted(escape_control(n) for n in entries if not n.startswith(prefix))
    if odd:
        fail(f"unexpected tensor names {odd[:5]} (only templates/<kind> and aux_scalers/<kind>)")
    try:
        geometry = BankGeometry.from_dict(meta.get("geometry"))
        aux_spec = _aux_spec(meta.get("aux_spec"))
    except InvalidInputError as exc:
        fail(exc.message)
    except (TypeError, ValueError, ArithmeticError) as exc:  # a field of a type no check above foresaw
        fail(f"bank geometry or aux_spec is malformed: {escape_control(exc)[:120]}")
    provenance = meta.get("provenance")
    provenance = {} if provenance is None else provenance
    if not isinstance(provenance, dict):
        fail(f"provenance must be a JSON object, got {type(provenance).__name__}")
    data = provenance.get("data")
    if "data" in provenance and (  # init reads provenance.data.class_names to recognise the bank's task
        not isinstance(data, dict)
        or not isinstance(data.get("class_names", []), list)
        or not all(isinstance(c, str) for c in data.get("class_names", []))
    ):
        fail("provenance.data must be an object whose class_names is a list of strings")
    try:
        check_tensor_set(geometry, aux_spec, {n: (e.shape, True) for n, e in entries.items()})
    except InvalidInputError as exc:
        fail(exc.message)
    return BankFile(final, size, geometry, aux_spec, provenance, dict(hashes), entries)


def inspect_bank(path: str | Path) -> BankFile:
    """``open_bank`` plus every tensor's sha256 and finite values: a bank ``TemplateBank.load`` accepts."""
    bank = open_bank(path)
    bank.read_tensors()
    return bank


def file_summary(path: str | Path) -> dict[str, Any]:
    final = resolve(path)
    return {"path": str(final), "file_bytes": final.stat().st_size, "file_sha256": sha256_file(final)}


def expected_shapes(geometry: BankGeometry, aux_spec: ViTSpec | None) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a bank of this geometry (and auxiliary spec) must hold."""
    g = geometry
    out = {f"templates/{k}": (g.templates[k], *template_shape(g, k)) for k in ALL_KINDS}
    if aux_spec is not None:
        layouts = kind_layouts(g, aux_spec, templated_head=aux_spec.num_classes == g.num_classes, aux=True)
        for kind, lay in layouts.items():
            out[f"aux_scalers/{kind}"] = lay.scaler_shape(g.templates[kind], aux_spec.depth)
    return out


def check_tensor_set(
    geometry: BankGeometry, aux_spec: ViTSpec | None, tensors: dict[str, tuple[tuple[int, ...], bool]]
) -> None:
    """Names, shapes and float-ness (name -> (shape, is_float)) against what the geometry implies."""
    templates = {n.split("/", 1)[1] for n in tensors if n.startswith("templates/")}
    aux = {n.split("/", 1)[1] for n in tensors if n.startswith("aux_scalers/")}
    if templates != set(ALL_KINDS):
        raise InvalidInputError(
            f"bank templates: missing {sorted(set(ALL_KINDS) - templates)}, "
            f"unknown {[escape_control(k) for k in sorted(templates - set(ALL_KINDS))][:5]}"
        )
    expected = expected_shapes(geometry, aux_spec)
    if aux_spec is None and aux:
        raise InvalidInputError("bank has auxiliary scalers but no aux_spec saying which model they fit")
    want_aux = {n.split("/", 1)[1] for n in expected if n.startswith("aux_scalers/")}
    if aux_spec is not None and aux != want_aux:
        raise InvalidInputError(
            f"bank aux scalers: expected kinds {sorted(want_aux)}, got {[escape_control(k) for k in sorted(aux)]}"
        )
    for name, shape in expected.items():
        got, is_float = tensors[name]
        if not is_float:
            raise InvalidInputError(f"bank tensor {name} must be a floating-point tensor")
        if tuple(got) != tuple(shape):
            raise InvalidInputError(
                f"bank tensor {name} has shape {tuple(got)}, the geometry needs {tuple(shape)}"
            )


def describe(
    geometry: BankGeometry,
    aux_spec: ViTSpec | None,
    provenance: dict[str, Any],
    shapes: dict[str, tuple[tuple[int, ...], int]],
) -> dict[str, Any]:
    """Geometry, counts and bytes per kind, totals, aux spec and provenance (``templates info``).

    ``shapes``: tensor name -> (shape, bytes per element).
    """
    kinds = []
    for kind in ALL_KINDS:
        t_shape, t_size = shapes[f"templates/{kind}"]
        s = shapes.get(f"aux_scalers/{kind}")
        s_numel = 0 if s is None else math.prod(s[0])
        kinds.append(
            {
                "kind": kind,
                "templates": t_shape[0],
                "template_shape": list(t_shape[1:]),
                "template_numel": math.prod(t_shape),
                "template_bytes": math.prod(t_shape) * t_size,
                "aux_scaler_shape": None if s is None else list(s[0]),
                "aux_scaler_numel": s_numel,
                "aux_scaler_bytes": 0 if s is None else s_numel * s[1],
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "geometry": geometry.to_dict(),
        "valid_embed_dims": geometry.valid_embed_dims(),
        "kinds": kinds,
        "template_numel": sum(k["template_numel"] for k in kinds),
        "template_bytes": sum(k["template_bytes"] for k in kinds),
        "aux_scaler_numel": sum(k["aux_scaler_numel"] for k in kinds),
        "aux_scaler_bytes": sum(k["aux_scaler_bytes"] for k in kinds),
        "aux_spec": None if aux_spec is None else aux_spec.to_dict(),
        "provenance": provenance,
    }


def _unreadable(shown: str, what: str) -> None:
    raise InvalidInputError(
        f"{shown} is not a readable safetensors file (truncated, corrupt or another format): {what}",
        hint="only safetensors template banks are loaded; pickle files are refused",
    )


def _read_header(path: Path, shown: str) -> tuple[dict[str, Any], int, int]:
    def unreadable(what: str) -> None:
        _unreadable(shown, what)

    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_FILE_BYTES:
                unreadable(f"it has {size} bytes, more than a template bank may hold ({MAX_FILE_BYTES})")
            prefix = fh.read(8)
            if len(prefix) < 8:
                unreadable(f"the file has {size} bytes, fewer than the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n < 2 or n > MAX_HEADER_BYTES or n > size - 8:
                unreadable(
                    f"its first 8 bytes give a header length of {n}, which does not fit a file of {size} bytes "
                    f"(a bank header is 2..{MAX_HEADER_BYTES} bytes)"
                )
            raw = fh.read(n)
    except OSError as exc:
        raise InvalidInputError(f"cannot read template bank {shown}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        unreadable("the header is not UTF-8")
    header = _parse_json(text, unreadable, what="header")
    return header, 8 + n, size


def _parse_json(text: str, fail, what: str = "bank metadata") -> dict[str, Any]:
    """A JSON object, its nesting checked before parsing (never a RecursionError)."""
    if len(text) > MAX_HEADER_BYTES:
        fail(f"{what} is {len(text)} characters, over the limit of {MAX_HEADER_BYTES}")
    depth, in_string = 0, False
    for match in _JSON_TOKENS.finditer(text):  # one linear pass; escapes are consumed as pairs
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif not in_string and token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                fail(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
        elif not in_string and token in "]}":
            depth -= 1
    try:
        value = strict_json.parse(text)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, a duplicate key, > 4300 digits
        fail(f"{what} is not valid JSON: {escape_control(exc)}")
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _layout(header: dict[str, Any], data_start: int, size: int, fail) -> dict[str, TensorEntry]:
    """Every tensor entry checked: float dtype, int shape, byte range = numel x itemsize, ranges tile the data."""
    if len(header) > MAX_TENSORS:
        fail(f"the header lists {len(header)} tensors, more than a bank holds ({MAX_TENSORS})")
    entries = {}
    for name, info in header.items():
        shown = escape_control(name)[:80]
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            fail(f"tensor {shown}: the header entry must be an object with dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in FLOAT_DTYPES:
            fail(
                f"tensor {shown} has dtype {escape_control(dtype)[:20]}; bank tensors are F16, BF16, F32 or F64"
            )
        ints = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        if not ints or len(shape) > MAX_NDIM or any(d < 0 or d > size for d in shape):
            fail(f"tensor {shown} has an invalid shape (at most {MAX_NDIM} sizes, each 0..file size)")
        ok = isinstance(offsets, list) and len(offsets) == 2
        ok = ok and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        if not ok or not 0 <= offsets[0] <= offsets[1] <= size - data_start:
            fail(f"tensor {shown} has data_offsets outside the file's {size - data_start} data bytes")
        entry = TensorEntry(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
        if entry.numel * entry.itemsize != entry.end - entry.start:
            fail(
                f"tensor {shown}: shape {entry.shape} of {dtype} needs {entry.numel * entry.itemsize} bytes, "
                f"its data_offsets span {entry.end - entry.start}"
            )
        entries[name] = entry
    position = data_start
    for e in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if e.start != position:
            fail(
                f"tensor {escape_control(e.name)[:80]}: data ranges overlap or leave a gap at byte {position}"
            )
        position = e.end
    if position != size:
        fail(f"the tensors cover {position - data_start} data bytes, the file holds {size - data_start}")
    return entries


def _aux_spec(data: Any) -> ViTSpec | None:
    if data is None:
        return None
    fields = {
        "depth",
        "embed_dim",
        "num_heads",
        "mlp_ratio",
        "patch_size",
        "img_size",
        "in_chans",
        "num_classes",
    }
    if not isinstance(data, dict) or set(data) != fields:
        got = sorted(escape_control(k) for k in data)[:10] if isinstance(data, dict) else type(data).__name__
        raise InvalidInputError(f"aux_spec must have exactly the fields {sorted(fields)}, got {got}")
    ratio = data["mlp_ratio"]
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 64:
        raise InvalidInputError(
            f"aux_spec.mlp_ratio must be a number in (0, 64], got {escape_control(repr(ratio))[:40]}"
        )
    for name in fields - {"mlp_ratio"}:
        value = data[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 20:
            raise InvalidInputError(
                f"aux_spec.{name} must be an integer in 1..{1 << 20}, got {escape_control(repr(value))[:40]}"
            )
    return ViTSpec.from_dict(data)
