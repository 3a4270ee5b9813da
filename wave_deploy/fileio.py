"""Atomic file writes and hashing: no half-written file ever stands at a final path (DESIGN section 7)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wave_deploy.errors import InvalidInputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_SPECIAL_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("a character device", "a FIFO (named pipe)",
    ...), following symbolic links; None for a regular file, a link to one, or a path that does not exist."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to /dev/full is a character device
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing there (or a dangling link): a rename creates a regular file
    except (OSError, ValueError):
        return None  # unreadable: the write itself reports it
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "not a regular file")


def refuse_special(path: str | Path, what: str = "output file") -> None:
    """InvalidInputError (exit 3) naming ``path`` when it exists and is not a regular file: a write there would
    replace a device node, a FIFO, a socket or a directory with a regular file (atomic writes rename)."""
    kind = special_kind(path)
    if kind is not None:
        raise InvalidInputError(
            f"{what} {path} is {kind}, not a regular file: refusing to replace it",
            hint="give the path of a regular file, or of one to create",
        )


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success fsync it and rename it over ``final``.

    On any exception the temporary file is removed and ``final`` is left untouched. ``final`` must be a regular
    file, a link to one, or absent: anything else (a device node, FIFO, socket, directory) raises
    InvalidInputError (exit 3) before the temporary file is made, and again just before the rename.
    """
    final = Path(final)
    refuse_special(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; final files get the usual permissions
        refuse_special(final)  # again: something may have appeared there while the file was written
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically: ``dst`` is the old file or the whole copy, never a part."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


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


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself, or its nearest ancestor that exists (the directory a ``mkdir -p`` would write into)."""
    current = path
    while not current.exists() and current != current.parent:
        if current.is_symlink():  # a dangling link: mkdir would fail on it
            return current
        current = current.parent
    return current


def check_writable_dir(path: str | Path, what: str = "output directory") -> Path:
    """Check, before any work, that directory ``path`` exists or can be created, and that files can be
    written in it. Creates nothing. Raises ``InvalidInputError`` (exit 3) naming the path and the reason.
    """

    path = Path(path)
    if str(path) == "":
        raise InvalidInputError(f"{what}: the path is empty")
    if path.exists() and not path.is_dir():
        kind = special_kind(path) or "an existing file"
        raise InvalidInputError(f"{what} {path} is {kind}, not a directory")
    base = _existing_ancestor(path.absolute())
    if not base.is_dir():
        raise InvalidInputError(f"{what} {path} cannot be created: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{what} {path} is not writable: no write permission in {base}")
    # os.access trusts permission bits; pseudo and read-only file systems (/proc, /sys, ro mounts) need a try.
    try:
        fd, probe = tempfile.mkstemp(prefix=".wave-deploy-probe.", suffix=".part", dir=base)
    except OSError as exc:
        raise InvalidInputError(f"{what} {path} is not writable: {exc.strerror or exc} in {base}") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def check_writable_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any work, that file ``path`` can be written (its directory exists or can be created and
    is writable; the path is not a directory, device node, FIFO or socket, links followed). Creates nothing.
    Raises ``InvalidInputError`` (exit 3)."""

    path = Path(path)
    if str(path) in ("", "."):
        raise InvalidInputError(f"{what}: the path is empty")
    if path.is_dir():
        raise InvalidInputError(f"{what} {path} is a directory, expected a file name")
    refuse_special(path, what)
    check_writable_dir(path.parent if str(path.parent) else Path("."), what=f"{what} {path}: directory")
    return path


PART_GLOB = ".*.part"


def remove_stale_parts(directory: str | Path, *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that ``atomic_path`` leaves behind when a process is killed mid-write.

    Only names of the form ``.<name>.<random>.part`` are removed (never a final file). Call it at the start of
    a run that owns ``directory``: a write in progress by a concurrent run into the same directory would lose
    its temporary file (two builds into one output directory at once are not supported). Returns the paths
    removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = directory.rglob(PART_GLOB) if recursive else directory.glob(PART_GLOB)
    removed = []
    for path in sorted(found):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
