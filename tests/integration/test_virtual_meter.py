"""Virtual meters (CPython-hosted and in the MicroPython VM) against a real Mosquitto.

The test plays the gateway: it reads the meter's telemetry, verifies it with edge.wire,
sends a lock built with edge.wire and checks the authenticated ack and the delivery report.
"""

from __future__ import annotations

import functools
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge import wire
from hil.virtual import simhal
from hil.virtual.meter import SimSettings, VirtualMeter
from hil.virtual.mqttclient import PahoClient
from hil.virtual.vm import vm_available
from tests.brokers import Broker

KEY = bytes(range(32, 64))


def meter_config(broker: Broker, meter: str, gateway: str) -> dict[str, Any]:
    return {
        "device_id": meter,
        "gateway_id": gateway,
        "broker_host": broker.host,
        "broker_port": broker.port,
        "mac_key": KEY.hex(),
        "capacity_wh": 10000,
        "report_s": 1,
        "persist_wh": 1,
        "backoff_base_ms": 100,
        "backoff_cap_ms": 1000,
    }


class Gateway:
    """A test stand-in for the gateway's MQTT side: subscribes to one meter's topics."""

    def __init__(self, broker: Broker, gateway: str, meter: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{meter}")
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"ngrid/{gateway}/{meter}/#", qos=1)
        self.client.loop_start()
        self.base = f"ngrid/{gateway}/{meter}"
        self.meter = meter

    def next(self, leaf: str, timeout: float = 20.0) -> tuple[bytes, bool]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, payload, retain = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if topic == f"{self.base}/{leaf}":
                return payload, retain
        raise AssertionError(f"no message on {leaf} within {timeout} s")

    def parsed(self, leaf: str, kind: type, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            payload, _ = self.next(leaf, max(0.1, deadline - time.monotonic()))
            message = wire.parse_meter_message(payload, key=KEY, meter=self.meter)
            if isinstance(message, kind):
                return message

    def send(self, payload: bytes) -> None:
        self.client.publish(f"{self.base}/cmd", payload, qos=1, retain=False).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(params=["cpython", "vm"])
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "vm" and not vm_available():
        pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
    return str(request.param)


@pytest.fixture
def gateway(mosquitto: Broker, topic_prefix: str) -> Iterator[Gateway]:
    gw = Gateway(mosquitto, "gw-" + topic_prefix.rsplit("/", 1)[-1], "m-1")
    yield gw
    gw.close()


def test_meter_reports_and_honours_a_lock(
    mosquitto: Broker, gateway: Gateway, mode: str, tmp_path: Path
) -> None:
    gw_id = gateway.base.split("/")[1]
    config = meter_config(mosquitto, "m-1", gw_id)
    sim = SimSettings(soc_bp=8000, pv_w=0, load_w=0, lock_export_w=7200)
    with VirtualMeter(config=config, flash=tmp_path / "flash", sim=sim, vm=mode == "vm") as vm:
        status, _ = gateway.next("status")
        assert status == b"online"
        telemetry = gateway.parsed("state", wire.Telemetry)
        assert telemetry.soc_bp == 8000 and telemetry.meter == "m-1"

        now = int(time.time())
        gateway.send(
            wire.build_lock(
                key=KEY,
                meter="m-1",
                seq=1,
                ts=now,
                exp=now + 30,
                trade="t-1",
                wh=500,
                start=now,
                end=now + 3,
            )
        )
        ack = gateway.parsed("ack", wire.Ack)
        assert (ack.ok, ack.reason, ack.cmd, ack.trade, ack.locked_wh) == (
            True,
            "ok",
            1,
            "t-1",
            500,
        )
        locked = gateway.parsed("state", wire.Telemetry)
        assert locked.locked_wh > 0
        delivery = gateway.parsed("state", wire.Delivery, timeout=30)
        assert delivery.trade == "t-1" and delivery.wh == 500
        assert 0 < delivery.delivered_wh <= 500  # 7.2 kW for ~3 s is about 6 Wh

        # A forged lock is refused, and says so.
        forged = bytearray(
            wire.build_lock(
                key=bytes(32),
                meter="m-1",
                seq=2,
                ts=now,
                exp=now + 30,
                trade="t-2",
                wh=5,
                start=now,
                end=now + 60,
            )
        )
        gateway.send(bytes(forged))
        refusal = gateway.parsed("ack", wire.Ack)
        assert (refusal.ok, refusal.reason) == (False, "bad_mac")
        assert vm.error is None

    # Stopped without a clean disconnect: the broker publishes the will.
    assert gateway.next("status") == (b"offline", False)


def test_a_burst_of_commands_is_acked_every_one(
    mosquitto: Broker, gateway: Gateway, mode: str, tmp_path: Path
) -> None:
    """Twenty commands published back to back (five times the meter's inbox): every one gets
    exactly one ack, ``ok`` or ``busy``; the meter stays connected (no will, no overflow)."""
    gw_id = gateway.base.split("/")[1]
    config = meter_config(mosquitto, "m-1", gw_id) | {"report_s": 60}
    sim = SimSettings(soc_bp=8000, pv_w=0, load_w=0)
    with VirtualMeter(config=config, flash=tmp_path / "flash", sim=sim, vm=mode == "vm") as vm:
        assert gateway.next("status")[0] == b"online"
        gateway.parsed("state", wire.Telemetry)
        now = int(time.time())
        commands = [
            wire.build_lock(
                key=KEY,
                meter="m-1",
                seq=n,
                ts=now,
                exp=now + 60,
                trade=f"t-{n}",
                wh=10,
                start=now + 600,
                end=now + 1200,
            )
            if n <= 6
            else wire.build_ping(key=KEY, meter="m-1", seq=n, ts=now, exp=now + 60)
            for n in range(1, 21)
        ]
        sent = [
            gateway.client.publish(f"{gateway.base}/cmd", c, qos=1, retain=False) for c in commands
        ]
        for info in sent:
            info.wait_for_publish(5)
        got = [gateway.parsed("ack", wire.Ack) for _ in commands]
        assert sorted(a.cmd for a in got) == list(range(1, 21))
        assert {a.reason for a in got} <= {"ok", "busy"}
        assert all(a.trade == f"t-{a.cmd}" for a in got if a.cmd <= 6)
        assert vm.error is None
        with pytest.raises(queue.Empty):  # nothing on status: the meter never went offline
            while True:
                topic, payload, _ = gateway.messages.get(timeout=0.5)
                assert not topic.endswith("/status"), payload


class MpSocket:
    """Stands in for MicroPython's ``usocket.socket`` on CPython, for the vendored umqtt.simple:
    the stream ``read(n)`` (blocks for n bytes; non-blocking, None when nothing waits) and
    ``write(buf, n)`` umqtt.simple calls, over a real TCP socket (10 s timeout when blocking)."""

    def __init__(self, *args: Any) -> None:
        self._sock = socket.socket()
        self._sock.settimeout(10)

    def connect(self, addr: Any) -> None:
        self._sock.connect(addr)

    def setblocking(self, flag: bool) -> None:
        self._sock.settimeout(10 if flag else 0)

    def write(self, data: Any, n: int | None = None) -> int:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        raw = raw if n is None else raw[:n]
        timeout = self._sock.gettimeout()
        self._sock.settimeout(10)
        self._sock.sendall(raw)
        self._sock.settimeout(timeout)
        return len(raw)

    def read(self, n: int) -> bytes | None:
        if self._sock.gettimeout() == 0:
            try:
                return self._sock.recv(n)
            except BlockingIOError:
                return None
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def umqtt_simple(monkeypatch: pytest.MonkeyPatch) -> Any:
    """device/lib/umqtt/simple.py (the vendored micropython-lib client) loaded on CPython."""
    import binascii
    import importlib.util
    import struct
    import types

    from hil.virtual.firmware import DEVICE_DIR

    usocket = types.ModuleType("usocket")
    usocket.socket = MpSocket  # type: ignore[attr-defined]
    usocket.getaddrinfo = socket.getaddrinfo  # type: ignore[attr-defined]
    for name, module in (("usocket", usocket), ("ustruct", struct), ("ubinascii", binascii)):
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(
        "umqtt_simple", DEVICE_DIR / "lib/umqtt/simple.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _burst_through(client: Any, broker: Broker, gateway: Gateway, flash: Path) -> Any:
    """The Runner on ``client`` (a hal.mqtt_client factory) against ``broker``: 20 pings
    published back to back, each must be answered once (ok or busy). Returns the Runner."""
    from hil.virtual.firmware import import_firmware

    gw_id = gateway.base.split("/")[1]
    flash.mkdir()
    (flash / "config.json").write_text(
        json.dumps(meter_config(broker, "m-1", gw_id) | {"report_s": 60})
    )
    runner_mod = import_firmware("ngmeter.runner")
    hal = simhal.SimHal(simhal.WallClock(), simhal.SimBattery(10000, 8000), client)
    runner = runner_mod.Runner(hal, str(flash))
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                time.sleep(runner.step() / 1000)
        except BaseException as err:  # the test reports it
            errors.append(err)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        assert gateway.next("status")[0] == b"online"
        gateway.parsed("state", wire.Telemetry)
        now = int(time.time())
        commands = [
            wire.build_ping(key=KEY, meter="m-1", seq=n, ts=now, exp=now + 60) for n in range(1, 21)
        ]
        for info in [gateway.client.publish(f"{gateway.base}/cmd", c, qos=1) for c in commands]:
            info.wait_for_publish(5)
        got = [gateway.parsed("ack", wire.Ack) for _ in commands]
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert sorted(a.cmd for a in got) == list(range(1, 21))
    assert {a.reason for a in got} <= {"ok", "busy"}
    assert runner.connects == 1 and runner.overflows == 0
    return runner


def test_a_burst_through_the_firmwares_own_mqtt_client(
    mosquitto: Broker, gateway: Gateway, umqtt_simple: Any, tmp_path: Path
) -> None:
    """The Runner with micropython-lib's umqtt.simple (the client device/hal.py uses on a board)
    against Mosquitto: 20 commands back to back, each answered once (ok or busy)."""

    def client(client_id: str, host: str, port: int, user: str, password: str, keep: int) -> Any:
        # as device/hal.py:mqtt_client builds it
        return umqtt_simple.MQTTClient(
            client_id, host, port=port, user=user or None, password=password or None, keepalive=keep
        )

    runner = _burst_through(client, mosquitto, gateway, tmp_path / "flash")
    print(f"\n20 pings through umqtt.simple: {runner.busy} answered busy")


@pytest.mark.parametrize("wait_puback", [True, False], ids=["waits-for-puback", "no-wait"])
def test_a_burst_through_the_paho_adapter(
    mosquitto: Broker, gateway: Gateway, tmp_path: Path, wait_puback: bool
) -> None:
    """The same burst through PahoClient, in both of its publish modes (the virtual meter's and
    the simulation's): every command answered once, the inbox never overflows."""
    client = functools.partial(PahoClient, wait_puback=wait_puback)
    runner = _burst_through(client, mosquitto, gateway, tmp_path / "flash")
    print(f"\n20 pings through PahoClient(wait_puback={wait_puback}): {runner.busy} busy")


@pytest.mark.parametrize("wait_puback", [True, False], ids=["waits-for-puback", "no-wait"])
def test_the_paho_adapter_hands_over_messages_as_umqtt_simple_does(
    mosquitto: Broker, topic_prefix: str, wait_puback: bool
) -> None:
    """One message per check_msg(); a QoS 1 publish hands over every message waiting; a
    callback that raises gets the exception out of the call (the message is not handed over
    twice); a published message reaches the broker in either mode."""
    got: list[bytes] = []
    client = PahoClient(
        f"pc-{wait_puback}", mosquitto.host, mosquitto.port, "", "", 30, wait_puback=wait_puback
    )
    client.set_callback(lambda topic, payload: got.append(payload))
    client.connect()
    client.subscribe(f"{topic_prefix}/in", 1)
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ps-{wait_puback}")
    out: queue.Queue[bytes] = queue.Queue()
    sender.on_message = lambda c, u, m: out.put(m.payload)
    sender.connect(mosquitto.host, mosquitto.port)
    sender.subscribe(f"{topic_prefix}/out", 1)
    sender.loop_start()
    try:
        time.sleep(0.3)  # both subscriptions in place

        def send(n: int) -> None:
            for i in range(n):
                sender.publish(f"{topic_prefix}/in", b"m%d" % i, qos=1).wait_for_publish(5)

        send(3)
        deadline = time.monotonic() + 5
        while client.pending() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.pending() == 3
        client.check_msg()
        assert got == [b"m0"]
        client.publish(f"{topic_prefix}/out", b"ack", qos=1)
        assert got == [b"m0", b"m1", b"m2"]
        assert out.get(timeout=5) == b"ack"

        def refuse(topic: bytes, payload: bytes) -> None:
            raise OSError("inbox full")

        client.set_callback(refuse)
        send(1)
        deadline = time.monotonic() + 5
        while client.pending() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(OSError, match="inbox full"):
            client.check_msg()
        assert client.pending() == 0
    finally:
        client.close()
        sender.loop_stop()
        sender.disconnect()


def test_cli_runs_a_virtual_meter(mosquitto: Broker, gateway: Gateway, tmp_path: Path) -> None:
    gw_id = gateway.base.split("/")[1]
    config = meter_config(mosquitto, "m-1", gw_id) | {"broker_port": 1}
    path = tmp_path / "meter.json"
    path.write_text(json.dumps(config))
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,pv_w,load_w\n0,3000,500\n60,0,800\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neighbourgrid.cli",
            "meter",
            "virtual",
            "--config",
            str(path),
            "--broker",
            mosquitto.url,
            "--trace",
            str(trace),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        telemetry = gateway.parsed("state", wire.Telemetry)
        assert telemetry.meter == "m-1" and telemetry.fw
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "meter m-1 (CPython)" in out


def test_cli_names_the_bad_key(tmp_path: Path, mosquitto: Broker) -> None:
    config = meter_config(mosquitto, "m-1", "gw") | {"mac_key": "abc"}
    path = tmp_path / "meter.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "neighbourgrid.cli", "meter", "virtual", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ngrid: error: mac_key: must be 64 hex digits (a 32-byte key)"


def test_compressed_time(mosquitto: Broker, gateway: Gateway, tmp_path: Path) -> None:
    """A meter on a clock 60x faster: telemetry every simulated 30 s arrives twice a second,
    and its timestamps advance by simulated time."""
    gw_id = gateway.base.split("/")[1]
    config = meter_config(mosquitto, "m-1", gw_id) | {"report_s": 30}
    clock = simhal.ScaledClock(60, 1767225600)
    with VirtualMeter(config=config, flash=tmp_path / "flash", clock=clock):
        first = gateway.parsed("state", wire.Telemetry)
        second = gateway.parsed("state", wire.Telemetry, timeout=5)
        third = gateway.parsed("state", wire.Telemetry, timeout=5)
    assert first.ts >= 1767225600
    assert 25 <= third.ts - second.ts <= 35
