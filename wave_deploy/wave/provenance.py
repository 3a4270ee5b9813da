"""Bank text made safe: provenance without absolute machine paths, and escaping for terminal output.

A bank's provenance travels with the bank to other machines and into reports, so stage 1 records paths relative
to the working directory (or only file names, with a sha256 where the file matters) and the command line as
``wave-deploy ...``. Text read back from a bank is untrusted: ``escape_control`` makes it safe to print.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any


def escape_control(text: Any) -> str:
    """``text`` with control and format characters (terminal escapes, bidi overrides, newlines) escaped."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            code = ord(ch)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
        else:
            out.append(ch)
    return "".join(out)


def portable_path(path: str | Path) -> str:
    """A path for provenance: relative to the working directory when under it, else only the file name."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return Path(text).as_posix()
    try:
        return Path(text).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return Path(text).name


def _portable_token(token: str) -> str:
    opt, eq, value = token.partition("=")
    if eq and opt.startswith("-") and os.path.isabs(value) and len(value) > 1:
        return f"{opt}={portable_path(value)}"
    return portable_path(token) if os.path.isabs(token) and len(token) > 1 else token


def portable_command(argv: list[str]) -> str:
    """The command line for provenance: ``wave-deploy`` and its arguments, absolute paths made portable."""
    return " ".join(["wave-deploy", *(_portable_token(arg) for arg in argv[1:])])


def portable_provenance(value: Any) -> Any:
    """``value`` (provenance JSON) with every absolute path in its strings made portable (``portable_path``)."""
    if isinstance(value, dict):
        return {k: portable_provenance(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_provenance(v) for v in value]
    if isinstance(value, str) and os.sep in value:
        return " ".join(_portable_token(token) for token in value.split(" "))
    return value
