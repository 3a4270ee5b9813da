"""User-facing output for CLI commands: JSON on stdout, human text and tables via rich; shared options."""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import IO, Any, cast

import click


def is_quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root and root.obj and root.obj.get("quiet"))


_json_state: dict[str, Any] = {"printed": False, "stdout_error": None}


def print_json(data: Any) -> None:
    """One machine-readable object on stdout (the CLI prints an error object instead when none was)."""
    write_stdout(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    _json_state["printed"] = True


def echo(line: str) -> None:
    """A line of a command's result on stdout (through the same guard as print_json)."""
    write_stdout(line + "\n")


def json_printed() -> bool:
    return _json_state["printed"]


def reset_json() -> None:
    _json_state.update(printed=False, stdout_error=None)


def stdout_error() -> OSError | None:
    """Why stdout could not be written in this command (a closed pipe, a full disk, /dev/full), or None."""
    return _json_state["stdout_error"]


def write_stdout(text: str) -> None:
    """Write and flush ``text`` on stdout. A failure is recorded (``stdout_error``), not raised: the command
    finishes and the CLI exits with its own error, or with exit 3 (an output that cannot be written) when
    it had none. Nothing more is written once stdout has failed."""
    if _json_state["stdout_error"] is not None:
        return
    stream = sys.stdout
    try:
        if stream is None:  # the process was started with stdout closed
            raise OSError(errno.EBADF, "stdout is closed")
        stream.write(text)
        stream.flush()
    except (OSError, ValueError) as exc:  # ValueError: a closed file object
        _json_state["stdout_error"] = exc if isinstance(exc, OSError) else OSError(errno.EBADF, str(exc))
        _silence(stream)


def _silence(stream) -> None:
    """Point a failed stdout's file descriptor at /dev/null, so that the interpreter's last flush of what is
    still buffered cannot fail again (a second error line) at exit."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's captured stream)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class _GuardedStdout:
    """stdout for rich consoles: writes go through ``write_stdout``."""

    def write(self, text: str) -> int:
        write_stdout(text)
        return len(text)

    def flush(self) -> None:
        pass  # write_stdout flushes

    def isatty(self) -> bool:
        try:
            return bool(sys.stdout and sys.stdout.isatty())
        except (OSError, ValueError):
            return False

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


def console(stderr: bool = False):
    """A rich console; piped or captured output gets 140 columns instead of being squeezed into 80."""
    from rich.console import Console

    file = None if stderr else cast(IO[str], _GuardedStdout())
    out = Console(stderr=stderr, highlight=False, soft_wrap=False, file=file)
    if not out.is_terminal:
        out.width = max(out.width, 140)
    return out


def table(title: str | None, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
