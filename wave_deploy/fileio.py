"""Atomic file writes and hashing: no half-written file ever stands at a final path (DESIGN section 7)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it and rename it over ``final``.

    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; final files get the usual permissions
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


REJECTED_DIR = "rejected"


def reject_file(path: str | Path, reason: str) -> Path:
    """Move an artifact that failed a gate out of its final path, into ``rejected/`` beside it.

    The file keeps its name (``out/model.int8.onnx`` -> ``out/rejected/model.int8.onnx``) and
    ``rejected/<name>.why.txt`` says which gate it failed, so nothing that failed a gate ever sits at a final
    path and a person can still inspect it. Returns the new path.
    """
    path = Path(path)
    target_dir = path.parent / REJECTED_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    os.replace(path, target)
    write_text(target_dir / f"{path.name}.why.txt", " ".join(reason.split()) + "\n")
    return target
