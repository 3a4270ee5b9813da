"""Byte-level editing of template bank files for the bank hardening and fuzz tests (no safetensors writer).

A bank file is 8 bytes of little-endian header length, the JSON header, then the tensors' raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from wave_deploy.wave.bank_file import METADATA_KEY


def split(data: bytes) -> tuple[dict, bytes]:
    """(header JSON, data area) of a well-formed file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict | str, area: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + area


def meta_of(header: dict) -> dict:
    return json.loads(header["__metadata__"][METADATA_KEY])


def with_meta(header: dict, meta: dict | str) -> dict:
    text = meta if isinstance(meta, str) else json.dumps(meta)
    return {**header, "__metadata__": {METADATA_KEY: text}}


def with_values(data: bytes, name: str, edit) -> bytes:
    """The file with tensor ``name``'s float32 values edited in place by ``edit(array)``, sha256 updated."""
    header, area = split(data)
    start, end = header[name]["data_offsets"]
    values = np.frombuffer(area[start:end], dtype="<f4").copy()
    edit(values)
    raw = values.tobytes()
    meta = meta_of(header)
    meta["sha256"][name] = hashlib.sha256(raw).hexdigest()
    return join(with_meta(header, meta), area[:start] + raw + area[end:])


def with_geometry(data: bytes, **fields) -> bytes:
    header, area = split(data)
    meta = meta_of(header)
    meta["geometry"].update(fields)
    return join(with_meta(header, meta), area)


def write(directory: Path, name: str, data: bytes) -> Path:
    path = Path(directory) / name
    path.write_bytes(data)
    return path
