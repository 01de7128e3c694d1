"""The hardware-in-loop rig as a pytest plugin, in the style of pytest-embedded.

Fixtures form a chain, each resolved from the test's parametrization, then the command line,
then a default (as pytest-embedded resolves its options):

``board``      where the device is: a real ESP32 on ``--board PORT``, or by default the virtual
               board (:class:`hil.virtual.board.VirtualBoard`, the real MicroPython VM's REPL on
               a pseudo-terminal). Session-scoped: one board for the run.
``transport``  the open serial link to it (pyserial), closed after each test.
``dut``        the device under test: ``dut.expect(pattern)`` waits for output (pexpect over the
               serial file descriptor, like pytest-embedded's ``dut.expect``), ``dut.write``,
               ``dut.repl()`` for a raw-REPL session (:class:`provisioning.board.Board`, i.e.
               mpremote's transport), ``dut.hard_reset()``.
``hil_broker`` a Mosquitto the board can reach (``--hil-broker mqtt://host:port`` for a bench
               broker, else one started for the session).

Markers: ``@pytest.mark.hardware`` for tests that need a real ESP32 (GPIO, the lock relay, a
power cut); on the virtual board they are skipped with that reason -- a legitimate skip, since
the VM has no pins. ``--soak-minutes N`` sets how long the soak test streams commands (default: a
short burst that keeps ``pytest hil`` quick).

Registered by ``hil/conftest.py`` (``pytest_plugins = ["hil.plugin"]``), so ``pytest hil`` finds
it; ``pytest -p hil.plugin`` loads it anywhere else.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pexpect.fdpexpect
import pytest
import serial

__all__ = ["BoardTarget", "Dut"]

HARDWARE_REASON = (
    "needs a real ESP32 (GPIO, relay, power): run `pytest hil --board /dev/ttyUSB0` on a bench"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-loop rig (neighbourgrid)")
    group.addoption(
        "--board",
        default=None,
        metavar="PORT",
        help="serial port of a real ESP32 with MicroPython (default: the virtual board)",
    )
    group.addoption(
        "--hil-broker",
        default=None,
        metavar="URL",
        help="mqtt://host:port the board can reach (default: start a Mosquitto on this host)",
    )
    group.addoption(
        "--soak-minutes",
        type=float,
        default=None,
        metavar="N",
        help="stream commands for N minutes in the soak test (default: a 20-second burst)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hardware: needs a real ESP32 on --board (skipped on the virtual board)"
    )
    config.addinivalue_line("markers", "soak: long-running command stream (see --soak-minutes)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--board"):
        return
    skip = pytest.mark.skip(reason=HARDWARE_REASON)
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    port = config.getoption("--board")
    return f"hil: board {port} (real ESP32)" if port else "hil: virtual board (MicroPython VM)"


@dataclass(frozen=True, kw_only=True)
class BoardTarget:
    """Where the device under test is: its serial ``port``, and whether it is ``virtual``.

    ``handle`` is the :class:`hil.virtual.board.VirtualBoard` for the virtual board, else None.
    """

    port: str
    virtual: bool
    handle: Any = None

    @property
    def name(self) -> str:
        return "virtual board" if self.virtual else f"ESP32 on {self.port}"


def _option(request: pytest.FixtureRequest, name: str) -> Any:
    """Parametrization first (``indirect`` params on the fixture), then the command line."""
    param = getattr(request, "param", None)
    if isinstance(param, dict) and name in param:
        return param[name]
    return request.config.getoption(name)


@pytest.fixture(scope="session")
def board(request: pytest.FixtureRequest) -> Iterator[BoardTarget]:
    """The board for this session: ``--board PORT``, or the virtual board (see module doc)."""
    port = _option(request, "--board")
    if port:
        yield BoardTarget(port=str(port), virtual=False)
        return
    try:
        from hil.virtual.board import VirtualBoard
    except ImportError as err:  # the firmware issue's virtual board is not installed
        pytest.fail(f"the virtual board is unavailable ({err}); pass --board PORT", pytrace=False)
    with VirtualBoard() as virtual:
        yield BoardTarget(port=virtual.port, virtual=True, handle=virtual)


@pytest.fixture
def transport(board: BoardTarget) -> Iterator[serial.Serial]:
    """The serial link to ``board`` (115200 8N1), exclusive, closed after the test."""
    link = serial.serial_for_url(board.port, baudrate=115200, timeout=0.1, exclusive=True)
    try:
        yield link
    finally:
        with contextlib.suppress(OSError, serial.SerialException):
            link.close()


class Dut:
    """The device under test on an open serial ``link`` (see module doc).

    ``expect(pattern, timeout=...)`` consumes output up to and including the first match and
    returns the :class:`re.Match`; on timeout it fails the test showing the last output.
    """

    def __init__(self, *, board: BoardTarget, link: serial.Serial) -> None:
        self.board = board
        self.link = link
        self._spawn = pexpect.fdpexpect.fdspawn(link.fileno(), timeout=10, encoding=None)
        self.log = bytearray()

    def write(self, data: bytes | str) -> None:
        self.link.write(data.encode() if isinstance(data, str) else data)
        self.link.flush()

    def expect(self, pattern: str | bytes | re.Pattern[bytes], *, timeout: float = 10) -> Any:
        if isinstance(pattern, str):
            pattern = pattern.encode()
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
        try:
            self._spawn.expect(compiled, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as err:
            seen = bytes(self._spawn.before or b"")[-400:].decode("utf-8", "replace")
            kind = "timed out" if isinstance(err, pexpect.TIMEOUT) else "lost the board"
            pytest.fail(
                f"{self.board.name}: {kind} waiting for {compiled.pattern!r}; last output:\n{seen}",
                pytrace=False,
            )
        self.log += (self._spawn.before or b"") + (self._spawn.after or b"")
        return self._spawn.match

    def interrupt(self) -> None:
        """Ctrl-C twice: stop the running program and land in the friendly REPL (``>>>``)."""
        self.write(b"\r\x03\x03")
        self.expect(rb">>> ", timeout=10)

    def hard_reset(self) -> None:
        """Reset the board as its EN button would: the virtual board restarts its VM, a real
        ESP32 gets an RTS pulse (EN low for 100 ms, as esptool's hard reset does)."""
        if self.board.virtual:
            self.board.handle.reset()
            return
        self.link.dtr = False
        self.link.rts = True
        time.sleep(0.1)
        self.link.rts = False

    @contextlib.contextmanager
    def repl(self) -> Iterator[Any]:
        """A raw-REPL session (:class:`provisioning.board.Board`) with the program stopped.

        The dut's own link is closed meanwhile (the port is exclusive) and reopened after.
        """
        from provisioning.board import Board

        self.link.close()
        try:
            with Board(port=self.board.port) as session:
                session.interrupt()
                yield session
        finally:
            self.link.open()
            self._spawn = pexpect.fdpexpect.fdspawn(self.link.fileno(), timeout=10)


@pytest.fixture
def dut(board: BoardTarget, transport: serial.Serial) -> Dut:
    """The device under test (see :class:`Dut`)."""
    return Dut(board=board, link=transport)


@pytest.fixture(scope="session")
def hil_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A broker the board can reach: ``--hil-broker URL`` or a Mosquitto started here.

    Yields an object with ``host``, ``port`` and ``url`` (:class:`tests.brokers.Broker`).
    """
    url = _option(request, "--hil-broker")
    if url:
        match = re.fullmatch(r"mqtt://([^:/]+):(\d+)/?", url)
        if match is None:
            pytest.fail(f"--hil-broker {url!r} is not mqtt://host:port", pytrace=False)
        from tests.brokers import Broker

        yield Broker(match.group(1), int(match.group(2)), Path("."))
        return
    from tests.brokers import running_mosquitto

    with running_mosquitto(tmp_path_factory.mktemp("hil-broker")) as broker:
        yield broker


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """How long the soak test runs: ``--soak-minutes`` in seconds, else a 20-second burst."""
    minutes = _option(request, "--soak-minutes")
    return 20.0 if minutes is None else float(minutes) * 60.0
