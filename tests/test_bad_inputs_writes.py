"""Atomic writes go only where a regular file may stand (issue 19): a device node, FIFO, socket or directory at
the final path is refused with InvalidInputError (exit 3) naming the path, and is left exactly as it was.
The command-line cases (plan --plot, report --html, calibrate --out, templates build --out, every --out
directory) are in the bad-input corpus, tests/test_bad_inputs.py.

And stdout that cannot be written (/dev/full, a pipe nobody reads, no stdout at all): a command that worked
exits 3 with one line (its result is lost, like an output file that cannot be written); a command that failed
keeps its own exit code and line. Never a traceback."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from wave_deploy.errors import InvalidInputError
from wave_deploy.fileio import atomic_path, check_writable_file, copy_file, write_bytes, write_json


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _link_to_dev_null(path: Path) -> Path:
    path.symlink_to("/dev/null")
    return path


def _char_device(path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(path, 0o600 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    return path


NODES = {
    "fifo": (_fifo, "a FIFO (named pipe)"),
    "socket": (_socket, "a socket"),
    "directory": (_directory, "a directory"),
    "link-to-dev-null": (_link_to_dev_null, "a character device"),
    "char-device": (_char_device, "a character device"),
}
WRITERS = {
    "write_json": lambda path, src: write_json(path, {"a": 1}),
    "write_bytes": lambda path, src: write_bytes(path, b"x"),
    "copy_file": lambda path, src: copy_file(src, path),
    "check_writable_file": lambda path, src: check_writable_file(path, "--out"),
}


def _kind(path: Path) -> int:
    return stat.S_IFMT(os.stat(path).st_mode)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("node", NODES)
def test_a_write_over_a_special_file_is_exit_3_and_leaves_it_as_it_was(tmp_path, node, writer):
    make, kind = NODES[node]
    path = make(tmp_path / "target")
    src = tmp_path / "src.txt"
    src.write_text("copied")
    before = _kind(path), os.lstat(path).st_ino
    with pytest.raises(InvalidInputError, match=re.escape(str(path))) as caught:
        WRITERS[writer](path, src)
    assert caught.value.exit_code == 3
    if writer != "check_writable_file" or node != "directory":  # (that check has its own directory line)
        assert f"is {kind}, not a regular file" in caught.value.message
    assert (_kind(path), os.lstat(path).st_ino) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.txt", "target"]  # no .part file left


def test_a_fifo_that_appears_during_the_write_is_refused_at_the_rename(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(InvalidInputError, match="FIFO"), atomic_path(final) as tmp:
        tmp.write_text("{}")
        os.mkfifo(final)
    assert stat.S_ISFIFO(os.stat(final).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_regular_file_and_a_link_to_one_are_replaced(tmp_path):
    existing = tmp_path / "old.json"
    existing.write_text("old")
    write_json(existing, {"new": 1})
    assert existing.read_text() == '{\n  "new": 1\n}\n'
    target = tmp_path / "target.txt"
    target.write_text("target")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_bytes(link, b"new")  # the link is replaced by the new file; what it pointed to is untouched
    assert link.read_bytes() == b"new" and not link.is_symlink() and target.read_text() == "target"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "nowhere")
    write_bytes(dangling, b"d")
    assert dangling.read_bytes() == b"d"


# --- stdout that cannot be written: a full disk (/dev/full), a reader that went away, no stdout at all ----------


def _cli_with_stdout(argv: list[str], where: str) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process whose stdout is /dev/full, a pipe with no reader, or closed."""
    command = [sys.executable, "-c", "from wave_deploy.cli.main import main; main()", *argv]
    if where == "dev-full":
        with open("/dev/full", "wb") as full:
            return subprocess.run(
                command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False
            )
    if where == "closed-pipe":
        read, write = os.pipe()
        os.close(read)  # nobody will ever read: every write gets EPIPE
        try:
            return subprocess.run(
                command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False
            )
        finally:
            os.close(write)
    return subprocess.run(  # "closed": the process starts without a file descriptor 1
        command, stdout=None, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip


@pytest.mark.parametrize("where, reason", [("dev-full", "No space left on device"),
                                           ("closed-pipe", "Broken pipe"), ("closed", "stdout is closed")])  # fmt: skip
@pytest.mark.parametrize(
    "argv",
    [["profiles", "list", "--json"], ["plan", "--profile", "jetson", "--json"], ["profiles", "list"]],
    ids=" ".join,
)
def test_a_result_that_cannot_be_written_to_stdout_is_exit_3_with_one_line(argv, where, reason):
    """The command worked but its result is lost: exit 3, like any output path that cannot be written."""
    proc = _cli_with_stdout(argv, where)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: cannot write the result to stdout: {reason} (nothing more was written there)"
    ]


@pytest.mark.parametrize("where", ["dev-full", "closed-pipe"])
@pytest.mark.parametrize(
    "argv, code, text",
    [
        (["plan", "--profile", "jetson", "--set", "budgets.latency_ms=0.0001", "--json"], 5, "no ViT size"),
        (["plan", "--profile", "no-such-device", "--json"], 3, "unknown profile"),
        (["init", "--depth", "1", "--embed-dim", "16", "--json"], 2, "Missing option '--out'"),
    ],
    ids=["no-fit", "bad-profile", "usage"],
)
def test_a_failing_command_keeps_its_own_exit_code_and_line_when_stdout_is_lost(argv, code, text, where):
    proc = _cli_with_stdout(argv, where)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], proc.stderr
