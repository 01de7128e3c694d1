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
    does (upload, verify, configure, self-test, inventory), with :data:`RIG_SETTINGS`; on the
    virtual board also upload ``hil/virtual/simhal.py``, the hal the relay runs it with."""
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
        if board.virtual:
            simhal = Path(__file__).resolve().parent / "virtual" / "simhal.py"
            session.write_file("/simhal.py", simhal.read_bytes())
        if not board.virtual:
            session.soft_reset()  # a real board runs main.py and joins the broker by itself
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


_BOOT = """\
import sys
if '/' not in sys.path:
    sys.path.insert(0, '/')
import gc, json, simhal
from ngmeter.runner import Runner
_b = simhal.FakeBroker()
_bat = simhal.SimBattery(%(capacity)d, %(soc)d, pv_w=%(pv)d, load_w=%(load)d)
_hal = simhal.SimHal(simhal.WallClock(), _bat, lambda *a: simhal.FakeClient(_b, a[0]))
_r = Runner(_hal, '/')
"""

_STEP = """\
for _t, _p in %(inject)r:
    _b.inject(_t, _p)
for _i in range(%(steps)d):
    _r.step()
_o = [[t, p.decode(), r, q] for (t, p, r, q) in _b.published]
_b.published.clear()
print(json.dumps({"out": _o, "mem": gc.mem_alloc(), "connects": _r.connects,
                  "dropped": _r.dropped, "lock": _hal.lock_output,
                  "subs": [t for t, q in _b.subscriptions],
                  "will": list(_b.will[:3]) if _b.will else None}))
"""


class RelayedFirmware:
    """The firmware's own main loop (``ngmeter.runner.Runner``) on the virtual board, with its
    MQTT relayed through the host to a real broker.

    What it stands in for: the ESP32's WiFi and TCP stack. The WebAssembly VM has no sockets,
    so the board runs the firmware with ``hil/virtual/simhal.py`` (clock from the VM, a
    simulated battery) and its in-memory MQTT client; this relay, on the host, executes
    ``Runner.step()`` through the raw REPL, publishes what the firmware published to the real
    broker as the meter (its client id, credentials, retain flags and last will), and injects
    what the broker delivers on the meter's subscriptions. ``memory`` collects
    ``gc.mem_alloc()`` after every execution, ``connects`` the firmware's connect count.
    """

    def __init__(
        self,
        *,
        board: BoardTarget,
        meter: Provisioned,
        broker: Any,
        soc_bp: int = 8_000,
        pv_w: int = 0,
        load_w: int = 0,
        period: float = 0.05,
    ) -> None:
        self.board = board
        self.meter = meter
        self.broker = broker
        self.soc_bp, self.pv_w, self.load_w = soc_bp, pv_w, load_w
        self.period = period
        self.memory: list[int] = []
        self.connects = 0
        self.dropped = 0
        self.lock_output = False
        self._inbox: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._client: Any = None
        self.error: BaseException | None = None

    def start(self) -> RelayedFirmware:
        import paho.mqtt.client as mqtt

        from provisioning.board import Board

        self._session = Board(port=self.board.port, timeout=20)
        self._session.interrupt()
        self._session.exec(
            _BOOT
            % {
                "capacity": self.meter.capacity_wh,
                "soc": self.soc_bp,
                "pv": self.pv_w,
                "load": self.load_w,
            },
            timeout=30,
        )
        first = self._step([])
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.meter.meter_id, clean_session=True
        )
        client.username_pw_set(self.meter.meter_id, self.meter.password)
        if first["will"]:
            topic, payload, retain = first["will"]
            client.will_set(topic, payload, qos=1, retain=bool(retain))
        client.on_message = self._on_message
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        for topic in first["subs"]:
            client.subscribe(topic, qos=1)
        self._client = client
        time.sleep(0.2)  # let the SUBACK arrive before the first commands
        self._publish(first)
        self._thread = threading.Thread(target=self._run, name="hil-relay", daemon=True)
        self._thread.start()
        return self

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self._inbox.append((message.topic, bytes(message.payload)))

    def _step(self, inject: list[tuple[str, bytes]]) -> dict[str, Any]:
        import json as _json

        out = self._session.exec(_STEP % {"inject": inject, "steps": 2}, timeout=30)
        report: dict[str, Any] = _json.loads(out.strip().splitlines()[-1])
        self.memory.append(int(report["mem"]))
        self.connects = int(report["connects"])
        self.dropped = int(report["dropped"])
        self.lock_output = bool(report["lock"])
        return report

    def _publish(self, report: dict[str, Any]) -> None:
        for topic, payload, retain, qos in report["out"]:
            self._client.publish(topic, payload.encode(), qos=qos, retain=bool(retain))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    inject, self._inbox = self._inbox[:4], self._inbox[4:]
                self._publish(self._step(inject))
                time.sleep(self.period)
        except BaseException as err:  # reported by stop()/crash() to the test
            self.error = err

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def crash(self) -> None:
        """Power cut: the relay vanishes without a DISCONNECT, so the broker sends the will."""
        self._halt()
        if self._client is not None:
            sock = self._client.socket()
            if sock is not None:
                sock.close()
            self._client.loop_stop()
        if self._session is not None:
            self._session.close()

    def stop(self) -> None:
        self._halt()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._session is not None:
            self._session.close()
        if self.error is not None:
            raise AssertionError(f"the relay failed: {self.error!r}") from self.error


class RunningFirmware:
    """The firmware on a real ESP32: it runs ``main.py`` by itself and talks to the broker over
    WiFi; the rig only watches the broker. ``crash()`` pulls EN low (RTS), as a power cut."""

    def __init__(self, *, board: BoardTarget) -> None:
        self.board = board
        self.memory: list[int] = []
        self.connects = 0
        self.dropped = 0

    def start(self) -> RunningFirmware:
        return self

    def crash(self) -> None:
        link = serial.serial_for_url(self.board.port, baudrate=115200, exclusive=True)
        try:
            link.dtr = False
            link.rts = True
            time.sleep(0.1)
            link.rts = False
        finally:
            link.close()

    def stop(self) -> None:
        from provisioning.board import Board

        with Board(port=self.board.port) as session:
            session.interrupt()
            self.memory.append(int(session.eval_json("__import__('gc').mem_alloc()")))


class GatewayPeer:
    """The test's side of the broker, playing the gateway: it sees everything the meter
    publishes (parsed and MAC-checked with :mod:`edge.wire`) and sends it signed commands."""

    def __init__(self, *, broker: Any, meter: Provisioned) -> None:
        import paho.mqtt.client as mqtt

        self.meter = meter
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{meter.meter_id}"
        )
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
                    pytest.fail(f"no matching message on {topic} within {timeout} s", pytrace=False)
                self._cond.wait(left)

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


def start_firmware(board: BoardTarget, meter: Provisioned, broker: Any, **kwargs: Any) -> Any:
    """Start the provisioned firmware: relayed on the virtual board, as is on a real one."""
    if board.virtual:
        return RelayedFirmware(board=board, meter=meter, broker=broker, **kwargs).start()
    return RunningFirmware(board=board).start()


@pytest.fixture
def firmware(
    board: BoardTarget, meter: Provisioned, hil_broker: Any, gateway_peer: GatewayPeer
) -> Iterator[Any]:
    """The provisioned firmware running and connected to the broker (stopped after the test)."""
    run = start_firmware(board, meter, hil_broker)
    try:
        yield run
    finally:
        run.stop()
