"""Atomic writes go only where a regular file may stand (issue 19): a device node, FIFO, socket or directory at
the final path is refused with InvalidInputError (exit 3) naming the path, and is left exactly as it was.
The command-line cases (plan --plot, report --html, calibrate --out, templates build --out, every --out
directory) are in the bad-input corpus, tests/test_bad_inputs.py."""

from __future__ import annotations

import os
import re
import socket
import stat
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
