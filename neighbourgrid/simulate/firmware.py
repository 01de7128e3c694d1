"""The homes' meters: the real firmware (device/ngmeter), hosted on CPython by the simulation.

Each battery home runs ``ngmeter.runner.Runner`` -- the very modules that run on the ESP32,
imported from device/ by :func:`hil.virtual.firmware.import_firmware` -- with:

- :class:`PhysicsHal`, the hal the Runner expects (device/hal.py's functions), whose sensors are
  the simulation's physics (:mod:`neighbourgrid.simulate.physics`) and whose clock is the
  simulated one: ``read_soc_bp`` is the home battery's state of charge, ``take_pulses`` the import
  and export energy (Wh) the physics produced since the last call, ``epoch``/``ticks_ms`` the
  simulated time. The lock output (``set_lock``) is recorded; the energy a sale moves is decided
  by the physics from the settled trades, and the firmware measures it through its export pulses.
- :class:`PahoMQTTClient`, umqtt.simple's ``MQTTClient`` API over paho-mqtt (the board uses
  umqtt.simple; CPython has no such module), connected to the real broker. It differs from
  umqtt.simple in one way: a QoS 1 publish returns without waiting for the PUBACK (paho
  retransmits), so the simulation's event loop is never blocked on the broker.

The firmware is stepped by the simulation (``Runner.step()``), as the MicroPython VM host and
the CPython virtual meter do; nothing here is a stand-in for the firmware's logic.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["FirmwareMeter", "PahoMQTTClient", "PhysicsHal"]

log = logging.getLogger("neighbourgrid.simulate.firmware")

TICKS_PERIOD = 1 << 30  # MicroPython's ticks wrap at 2**30


class _Sock:
    def __init__(self, client: PahoMQTTClient) -> None:
        self._client = client

    def close(self) -> None:
        self._client.disconnect()


class PahoMQTTClient:
    """umqtt.simple's client API (the subset the firmware uses) over a paho-mqtt client.

    ``connect()`` blocks until the broker's CONNACK (at most ``timeout`` s) and raises OSError
    when it fails, as umqtt.simple does; ``check_msg()`` hands at most one received message to
    the callback and never blocks.
    """

    def __init__(
        self,
        client_id: str,
        server: str,
        port: int = 1883,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        timeout: float = 10.0,
    ) -> None:
        self.client_id = client_id
        self.server = server
        self.port = port
        self.keepalive = keepalive
        self.timeout = timeout
        self.cb: Callable[[bytes, bytes], None] | None = None
        self.sock = _Sock(self)
        self._inbox: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
        )
        if user:
            self._client.username_pw_set(user, password or None)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, p: Any) -> None:
        self._lost.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._inbox.put((message.topic.encode(), bytes(message.payload)))

    def set_callback(self, cb: Callable[[bytes, bytes], None]) -> None:
        self.cb = cb

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self._client.will_set(topic, msg, qos=qos, retain=retain)

    def connect(self, clean_session: bool = True) -> int:
        try:
            self._client.connect(self.server, self.port, keepalive=self.keepalive)
        except OSError as err:
            raise OSError(f"cannot reach {self.server}:{self.port}: {err}") from None
        self._client.loop_start()
        if not self._connected.wait(self.timeout):
            self._client.loop_stop()
            raise OSError("no CONNACK from the broker")
        return 0

    def _check(self) -> None:
        if self._lost.is_set():
            raise OSError("connection lost")

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self._check()
        self._client.subscribe(topic, qos=qos)

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self._check()
        self._client.publish(topic, bytes(msg), qos=qos, retain=retain)

    def check_msg(self) -> None:
        self._check()
        try:
            topic, payload = self._inbox.get_nowait()
        except queue.Empty:
            return
        if self.cb is not None:
            self.cb(topic, payload)

    def take(self) -> tuple[bytes, bytes] | None:
        """The next received (topic, payload), or None (for hosts that relay messages)."""
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def pending(self) -> int:
        """Messages received and not yet handed to the firmware."""
        return self._inbox.qsize()

    def ping(self) -> None:
        self._check()

    def disconnect(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class PhysicsHal:
    """The firmware's hal over the simulation: see the module docstring.

    ``soc`` returns the battery's state of charge (basis points); ``clock`` the simulated time in
    ms since the epoch. :meth:`add_energy` queues the import/export Wh of an interval for the
    next ``take_pulses``.
    """

    def __init__(
        self,
        *,
        soc: Callable[[], int],
        clock: Callable[[], int],
        client_factory: Callable[..., PahoMQTTClient],
        seed: int = 1,
    ) -> None:
        self._soc = soc
        self._clock = clock
        self._client_factory = client_factory
        self._rand = seed
        self._import = 0
        self._export = 0
        self.power_w = 0
        self.lock_output = False
        self.client: PahoMQTTClient | None = None
        self.logs: list[str] = []

    # -- simulation side
    def add_energy(self, *, import_wh: int, export_wh: int, seconds: int) -> None:
        self._import += import_wh
        self._export += export_wh
        self.power_w = (import_wh - export_wh) * 3600 // seconds

    # -- the hal the firmware calls
    def init(self, cfg: dict[str, Any]) -> None:
        pass

    def ticks_ms(self) -> int:
        return self._clock() % TICKS_PERIOD

    def ticks_diff(self, a: int, b: int) -> int:
        half = TICKS_PERIOD // 2
        return ((a - b + half) % TICKS_PERIOD) - half

    def ticks_add(self, a: int, b: int) -> int:
        return (a + b) % TICKS_PERIOD

    def sleep_ms(self, ms: int) -> None:
        pass  # the simulation decides when the firmware runs

    def epoch(self) -> int:
        return self._clock() // 1000

    def random_below(self, n: int) -> int:
        self._rand = (self._rand * 1103515245 + 12345) & 0x7FFFFFFF
        return self._rand % n if n > 0 else 0

    def read_soc_bp(self) -> int:
        return self._soc()

    def read_power_w(self) -> int:
        return self.power_w

    def take_pulses(self) -> tuple[int, int]:
        out = (self._import, self._export)
        self._import = self._export = 0
        return out

    def set_lock(self, active: bool) -> None:
        self.lock_output = bool(active)

    def watchdog(self, ms: int) -> None:
        pass

    def feed(self) -> None:
        pass

    def network_up(self) -> bool:
        return True

    def mqtt_client(
        self, client_id: str, host: str, port: int, user: str, password: str, keepalive: int
    ) -> PahoMQTTClient:
        self.client = self._client_factory(
            client_id,
            host,
            port=port,
            user=user or None,
            password=password or None,
            keepalive=keepalive,
        )
        return self.client

    def log(self, msg: str) -> None:
        if len(self.logs) < 200:
            self.logs.append(msg)

    def reset(self) -> None:
        raise SystemExit("reset")


class FirmwareMeter:
    """One home's meter: its flash directory (config.json, state.json), hal and Runner.

    ``config`` is the meter's config.json content (the installer's format, device/ngmeter/
    config.py). Raises the firmware's ConfigError for a bad config.
    """

    def __init__(
        self,
        *,
        directory: Path,
        config: dict[str, Any],
        soc: Callable[[], int],
        clock: Callable[[], int],
        seed: int,
    ) -> None:
        from hil.virtual.firmware import import_firmware

        fw_config = import_firmware("ngmeter.config")
        runner_mod = import_firmware("ngmeter.runner")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config, indent=1))
        self.id = config["device_id"]
        self.directory = directory
        self.hal = PhysicsHal(soc=soc, clock=clock, client_factory=PahoMQTTClient, seed=seed)
        cfg = fw_config.parse((directory / "config.json").read_text())
        self.runner = runner_mod.Runner(self.hal, str(directory), cfg)

    def step(self) -> None:
        """Run the firmware until it has handled every message received so far."""
        for _ in range(64):
            self.runner.step()
            client = self.hal.client
            if client is None or client.pending() == 0:
                return

    def busy(self) -> bool:
        client = self.hal.client
        return client is not None and client.pending() > 0

    @property
    def connected(self) -> bool:
        return self.runner.client is not None

    def close(self) -> None:
        if self.hal.client is not None:
            self.hal.client.disconnect()
