"""The virtual board (the MicroPython VM's REPL on a pty) driven by the real mpremote."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.virtual.board import VirtualBoard
from hil.virtual.firmware import DEVICE_DIR
from hil.virtual.vm import vm_available


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    if not vm_available():
        pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
    with VirtualBoard(root=tmp_path / "flash") as vboard:
        yield vboard


def mpremote(board: VirtualBoard, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", board.port, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_mpremote_exec_runs_on_micropython(board: VirtualBoard) -> None:
    out = mpremote(board, "exec", "import sys; print(sys.implementation.name, 6 * 7)")
    assert out.strip() == "micropython 42"


def test_mpremote_copies_the_firmware_and_it_runs_after_a_reset(
    board: VirtualBoard, tmp_path: Path
) -> None:
    mpremote(board, "fs", "mkdir", "lib")
    mpremote(board, "fs", "cp", "-r", str(DEVICE_DIR / "ngmeter"), ":lib/")
    mpremote(board, "fs", "cp", str(DEVICE_DIR / "boot.py"), ":boot.py")
    listing = mpremote(board, "fs", "ls", "lib/ngmeter")
    assert "wire.py" in listing and "runner.py" in listing
    assert (board.files / "lib" / "ngmeter" / "wire.py").read_bytes() == (
        DEVICE_DIR / "ngmeter" / "wire.py"
    ).read_bytes()

    board.reset()  # a hard reset keeps the files, like flash
    out = mpremote(
        board,
        "exec",
        "from ngmeter import wire; print(wire.mac_hex(bytes(range(32)), {'kind': 'x', 'n': 1}))",
    )
    import hmac
    from hashlib import sha256

    expected = hmac.new(bytes(range(32)), b'{"kind":"x","n":1}', sha256).hexdigest()
    assert out.strip() == expected


def test_missing_files_raise_micropython_errnos(board: VirtualBoard, tmp_path: Path) -> None:
    code = (
        "import os, errno\n"
        "try:\n os.stat('nope')\n"
        "except OSError as e:\n print(e.errno == errno.ENOENT)"
    )
    out = mpremote(board, "exec", code)
    assert out.strip() == "True"
    mpremote(board, "fs", "cp", str(DEVICE_DIR / "boot.py"), ":x.py")
    mpremote(board, "fs", "rm", "x.py")
    assert not (board.files / "x.py").exists()
    copied = tmp_path / "back.py"
    mpremote(board, "fs", "cp", str(DEVICE_DIR / "main.py"), ":main.py")
    mpremote(board, "fs", "cp", ":main.py", str(copied))
    assert copied.read_bytes() == (DEVICE_DIR / "main.py").read_bytes()
