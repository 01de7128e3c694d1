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
``meter``      the board provisioned by the installer's own flow (:func:`provision_board`) and
               left running main.py; ``gateway_peer`` the test playing the gateway on the broker
               (:class:`GatewayPeer`); ``firmware`` the running firmware (:class:`Firmware`:
               ``crash()``, ``sample_memory()``); ``soak_seconds``.

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
import threading
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
        from hil.mosquitto import Broker

        yield Broker(match.group(1), int(match.group(2)), Path("."))
        return
    from hil.mosquitto import running_mosquitto

    with running_mosquitto(tmp_path_factory.mktemp("hil-broker")) as broker:
        yield broker


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """How long the soak test runs: ``--soak-minutes`` in seconds, else a 20-second burst."""
    minutes = _option(request, "--soak-minutes")
    return 20.0 if minutes is None else float(minutes) * 60.0


# -- the firmware under test, provisioned and running ------------------------------------------

DEVICE_DIR = Path(__file__).resolve().parent.parent / "device"
GATEWAY_ID = "gw-hil"
#: Firmware settings for the rig: telemetry every second, so tests do not wait 10 s per report.
RIG_SETTINGS = {"report_s": 1, "keepalive_s": 30, "backoff_base_ms": 200, "backoff_cap_ms": 2000}


@dataclass(frozen=True, kw_only=True)
class Provisioned:
    """A meter provisioned on the board by the installer's own flow (``provision_meter``)."""

    meter_id: str
    gateway_id: str
    key: bytes
    password: str
    capacity_wh: int
    reserve_bp: int
    self_test: str
    inventory: Path

    def topic(self, leaf: str) -> str:
        return f"ngrid/{self.gateway_id}/{self.meter_id}/{leaf}"


def provision_board(
    board: BoardTarget,
    *,
    broker_host: str,
    broker_port: int,
    directory: Path,
    capacity_wh: int = 10_000,
    reserve_bp: int = 2_000,
) -> Provisioned:
    """Provision ``board`` as a meter of gateway ``gw-hil`` exactly as ``ngrid provision meter``
    does (upload, verify, configure, self-test, inventory), with :data:`RIG_SETTINGS`, and
    leave it running main.py."""
    import json as _json

    from provisioning.board import Board, firmware_files
    from provisioning.gateway import provision_gateway
    from provisioning.inventory import Inventory
    from provisioning.meter import CONFIG_PATH, MeterSpec, provision_meter

    with Inventory(path=directory / "inventory.json") as inventory:
        provision_gateway(
            inventory=inventory,
            name=GATEWAY_ID,
            out_dir=directory / "bundle",
            broker_host=broker_host,
            broker_port=broker_port,
        )
        outcome = provision_meter(
            inventory=inventory,
            spec=MeterSpec(
                port=board.port, owner="bench", capacity_wh=capacity_wh, reserve_bp=reserve_bp
            ),
            gateway=GATEWAY_ID,
            files=firmware_files(DEVICE_DIR),
            settings=RIG_SETTINGS,
            new_identity=True,
        )
        assert outcome.record is not None
        key = inventory.keystore.get(outcome.record.id)
    with Board(port=board.port) as session:
        session.interrupt()
        config = _json.loads(session.read_file(CONFIG_PATH) or b"{}")
        session.soft_reset()  # the board runs main.py and joins the broker by itself
    return Provisioned(
        meter_id=outcome.record.id,
        gateway_id=GATEWAY_ID,
        key=key,
        password=str(config["broker_password"]),
        capacity_wh=capacity_wh,
        reserve_bp=reserve_bp,
        self_test=outcome.record.self_test,
        inventory=directory / "inventory.json",
    )


class Firmware:
    """The provisioned firmware running on the board: ``main.py`` started by the soft reset
    that ends provisioning. On a real ESP32 it reaches the broker over WiFi; on the virtual board
    the board itself bridges the firmware's MQTT to the broker its config.json names
    (hil/virtual/vhal.py). The rig only watches the broker.

    ``crash()`` is a power cut: the virtual board is hard-reset (a new VM on the same flash files,
    its MQTT connection dropped without a DISCONNECT), a real ESP32 has EN pulled low through RTS
    (as esptool's hard reset does); both boot main.py again by themselves. ``sample_memory()``
    interrupts main.py (Ctrl-C), records ``gc.mem_alloc()``/``gc.mem_free()`` and soft-resets
    the board back into the firmware.
    """

    def __init__(self, *, board: BoardTarget) -> None:
        self.board = board
        self.memory: list[tuple[int, int]] = []  # (allocated, free) bytes

    def crash(self) -> None:
        if self.board.virtual:
            self.board.handle.reset()
            return
        link = serial.serial_for_url(self.board.port, baudrate=115200, exclusive=True)
        try:
            link.dtr = False
            link.rts = True
            time.sleep(0.1)
            link.rts = False
        finally:
            link.close()

    def sample_memory(self, *, restart: bool = True) -> tuple[int, int]:
        from provisioning.board import Board

        with Board(port=self.board.port) as session:
            session.interrupt()
            sample = session.eval_json(
                "[__import__('gc').mem_alloc(), __import__('gc').mem_free()]"
            )
            if restart:
                session.soft_reset()
        self.memory.append((int(sample[0]), int(sample[1])))
        return self.memory[-1]


class GatewayPeer:
    """The test's side of the broker, playing the gateway: it sees everything the meter
    publishes (parsed and MAC-checked with :mod:`edge.wire`) and sends it signed commands."""

    def __init__(self, *, broker: Any, meter: Provisioned) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.meter = meter
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{meter.meter_id}")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(f"ngrid/{meter.gateway_id}/{meter.meter_id}/#", qos=1)
        time.sleep(0.2)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def wait(
        self, leaf: str, predicate: Any = None, *, timeout: float = 20.0, after: int = 0
    ) -> Any:
        """The first verified message on ``leaf`` (state/ack/status) after index ``after`` that
        satisfies ``predicate``; fails the test after ``timeout`` seconds."""
        from edge.wire.messages import parse_meter_message

        topic = self.meter.topic(leaf)
        deadline = time.monotonic() + timeout
        seen = after
        with self._cond:
            while True:
                while seen < len(self.messages):
                    name, payload = self.messages[seen]
                    seen += 1
                    if name != topic:
                        continue
                    value = (
                        payload.decode()
                        if leaf == "status"
                        else parse_meter_message(
                            payload, key=self.meter.key, meter=self.meter.meter_id
                        )
                    )
                    if predicate is None or predicate(value):
                        return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message on {topic} within {timeout} s")
                self._cond.wait(left)

    def parsed(self, leaf: str, *, after: int = 0) -> list[Any]:
        """Every verified message on ``leaf`` received after index ``after``."""
        from edge.wire.messages import parse_meter_message

        topic = self.meter.topic(leaf)
        with self._cond:
            payloads = [p for t, p in self.messages[after:] if t == topic]
        if leaf == "status":
            return [p.decode() for p in payloads]
        return [
            parse_meter_message(p, key=self.meter.key, meter=self.meter.meter_id) for p in payloads
        ]

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def send(self, payload: bytes) -> None:
        self.client.publish(self.meter.topic("cmd"), payload, qos=1).wait_for_publish(5)

    def lock(
        self,
        *,
        trade: str,
        wh: int,
        seconds: int = 600,
        seq: int | None = None,
        expires_in: int = 60,
        key: bytes | None = None,
    ) -> tuple[int, bytes]:
        """Send a lock for ``wh`` Wh over the next ``seconds``; returns (seq, payload)."""
        from edge.wire.messages import build_lock

        now = int(time.time())
        seq = self.next_seq() if seq is None else seq
        payload = build_lock(
            key=key or self.meter.key,
            meter=self.meter.meter_id,
            seq=seq,
            ts=now,
            exp=now + expires_in,
            trade=trade,
            wh=wh,
            start=now,
            end=now + seconds,
        )
        self.send(payload)
        return seq, payload

    def release(self, *, trade: str) -> int:
        from edge.wire.messages import build_release

        now = int(time.time())
        seq = self.next_seq()
        self.send(
            build_release(
                key=self.meter.key,
                meter=self.meter.meter_id,
                seq=seq,
                ts=now,
                exp=now + 60,
                trade=trade,
            )
        )
        return seq

    def ping(self) -> int:
        from edge.wire.messages import build_ping

        now = int(time.time())
        seq = self.next_seq()
        self.send(
            build_ping(key=self.meter.key, meter=self.meter.meter_id, seq=seq, ts=now, exp=now + 60)
        )
        return seq

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def meter(board: BoardTarget, hil_broker: Any, tmp_path: Path) -> Provisioned:
    """The board provisioned as a fresh meter of ``gw-hil`` reporting to ``hil_broker``."""
    return provision_board(
        board, broker_host=hil_broker.host, broker_port=hil_broker.port, directory=tmp_path
    )


@pytest.fixture
def gateway_peer(hil_broker: Any, meter: Provisioned) -> Iterator[GatewayPeer]:
    """The test playing the gateway on the broker (see :class:`GatewayPeer`)."""
    peer = GatewayPeer(broker=hil_broker, meter=meter)
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def firmware(
    board: BoardTarget, meter: Provisioned, hil_broker: Any, gateway_peer: GatewayPeer
) -> Iterator[Any]:
    """The provisioned firmware, running (see :class:`Firmware`)."""
    yield Firmware(board=board)
