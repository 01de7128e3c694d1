"""`Board` against serial peers that are not a healthy MicroPython REPL.

The peers are pseudo-terminals driven by a thread of this test. What they stand in for:
``silent`` -- a USB-serial adapter with nothing behind it (or a board in download mode), which
never answers; ``chatty`` -- a board whose main.py prints in a loop and catches
KeyboardInterrupt, so Ctrl-C never reaches the REPL. The healthy case, the real MicroPython VM's
REPL, is tests/integration/test_provision_meter.py.
"""

from __future__ import annotations

import os
import pty
import threading
import time
import tty
from collections.abc import Iterator

import pytest

from provisioning.board import Board
from provisioning.errors import BoardBusyError, BoardStuckError, NoBoardError


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[str]:
    behaviour = request.param
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    name = os.ttyname(terminal)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            if behaviour == "chatty":
                os.write(controller, b"reading BMS... 5123 bp\r\n")
            time.sleep(0.05)
            try:  # swallow whatever the host sends (Ctrl-C, Ctrl-A): nothing happens
                os.set_blocking(controller, False)
                os.read(controller, 1024)
            except (BlockingIOError, OSError):
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield name
    finally:
        stop.set()
        thread.join(timeout=2)
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize("peer", ["silent"], indirect=True)
def test_nothing_answering_is_no_board(peer: str) -> None:
    with (
        Board(port=peer, timeout=2) as board,
        pytest.raises(NoBoardError, match="no MicroPython board answers"),
    ):
        board.interrupt(attempts=2)


@pytest.mark.parametrize("peer", ["chatty"], indirect=True)
def test_a_program_ignoring_ctrl_c_is_a_stuck_board(peer: str) -> None:
    with (
        Board(port=peer, timeout=2) as board,
        pytest.raises(BoardStuckError, match="ignores Ctrl-C") as caught,
    ):
        board.interrupt(attempts=2)
    assert "reading BMS" in str(caught.value)  # the installer sees what the board printed


@pytest.mark.parametrize("peer", ["silent"], indirect=True)
def test_a_port_held_by_another_program_is_busy(peer: str) -> None:
    with Board(port=peer, timeout=2), pytest.raises(BoardBusyError, match="in use"):
        Board(port=peer, timeout=2)
