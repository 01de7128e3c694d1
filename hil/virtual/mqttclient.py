"""umqtt.simple's ``MQTTClient`` on CPython: the one adapter over paho-mqtt.

The firmware (device/ngmeter) talks to its broker through umqtt.simple (vendored in
device/lib/umqtt); CPython has no such module, so every CPython host of the firmware -- the
virtual meter (:mod:`hil.virtual.meter`), the simulation's fleet (:mod:`neighbourgrid.simulate`)
and the simulation's relay for meters in the MicroPython VM -- uses :class:`PahoClient`.
"""

from __future__ import annotations

import collections
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

__all__ = ["PahoClient"]


class PahoClient:
    """umqtt.simple's MQTTClient API over paho-mqtt, driven synchronously (no paho thread).

    Stands in for umqtt.simple (device/lib/umqtt/simple.py), speaking MQTT 3.1.1 to a real
    broker. Like umqtt: connect() returns after CONNACK, check_msg() hands the callback at most
    one message, publish(qos=1) hands it every message that arrives before the PUBACK and
    returns after the PUBACK; each raises OSError when the connection fails. As umqtt does, a
    QoS 1 message is PUBACKed only after the callback returns (paho's ``manual_ack``), never if
    it raises. Messages paho has read but not yet handed over wait here unacknowledged, as bytes
    wait in a board's socket; the broker sends at most its ``max_inflight_messages`` of them.
    These receive rules are what the firmware's inbox relies on (docs/wire.md, "Inbox").

    ``wait_puback=False`` (keyword-only; for hosts that step many meters in one thread, such
    as the simulation) is the one difference from umqtt.simple: a QoS 1 publish sends the
    packet, reads what the socket already holds without blocking, hands every waiting message
    to the callback (one at a time, each PUBACKed after its callback returns) and returns
    without waiting for the broker's PUBACK, which paho then tracks (and resends on
    reconnect). The receive rules above hold either way.

    ``nodelay=True`` (keyword-only) turns Nagle's algorithm off on the socket. With it on, a
    meter's ack written right after the PUBACK of the command it answers waits for the broker's
    TCP ACK of that PUBACK, which Linux delays by up to 40 ms: one such stall per lock in a
    host that waits for each ack (the simulation). lwIP on the ESP32 has Nagle on by default
    too, and the firmware does not turn it off.

    Positional arguments are those of the firmware's ``hal.mqtt_client`` (device/hal.py):
    ``client_id``, ``host``, ``port``, ``user`` and ``password`` ("" for none), ``keepalive`` s.
    """

    TIMEOUT_S = 5.0

    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        user: str,
        password: str,
        keepalive: int,
        *,
        wait_puback: bool = True,
        nodelay: bool = False,
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            manual_ack=True,
        )
        if user:
            self._client.username_pw_set(user, password or None)
        self._host, self._port, self._keepalive = host, port, keepalive
        self.wait_puback = wait_puback
        self.nodelay = nodelay
        self._cb: Callable[[bytes, bytes], None] | None = None
        self._connected: int | None = None  # reason code once CONNACK arrived
        self._waiting: collections.deque[mqtt.MQTTMessage] = collections.deque()
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect
        self.sock = self

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._waiting.append(msg)

    def _deliver(self) -> bool:
        if not self._waiting:
            return False
        msg = self._waiting.popleft()
        if self._cb is not None:
            self._cb(msg.topic.encode(), bytes(msg.payload))
        self._check(self._client.ack(msg.mid, msg.qos))
        return True

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected = int(rc.value) if hasattr(rc, "value") else int(rc)

    def set_callback(self, cb: Callable[[bytes, bytes], None]) -> None:
        self._cb = cb

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self._client.will_set(topic, msg, qos=qos, retain=retain)

    def _loop(self, timeout: float) -> None:
        # paho's own loop() uses select() (no descriptor above 1023, so no large fleets) and a
        # socket pair per client; poll() and the read/write/misc steps have neither limit.
        sock = self._client.socket()
        if sock is None:
            raise OSError("mqtt: not connected")
        poller = select.poll()
        poller.register(sock, select.POLLIN | (select.POLLOUT if self._client.want_write() else 0))
        for _, events in poller.poll(int(timeout * 1000)):
            if events & (select.POLLIN | select.POLLERR | select.POLLHUP):
                self._check(self._client.loop_read())
            if events & select.POLLOUT:
                self._check(self._client.loop_write())
        if self._client.want_write():
            self._check(self._client.loop_write())
        self._check(self._client.loop_misc())

    @staticmethod
    def _check(rc: MQTTErrorCode) -> None:
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"mqtt: {mqtt.error_string(rc)}")

    def connect(self, clean_session: bool = True) -> None:
        try:
            self._client.connect(self._host, self._port, self._keepalive)
        except OSError as err:
            raise OSError(f"mqtt: cannot reach {self._host}:{self._port}: {err}") from None
        sock = self._client.socket()
        if self.nodelay and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + self.TIMEOUT_S
        while self._connected is None:
            if time.monotonic() > deadline:
                raise OSError("mqtt: no CONNACK")
            self._loop(0.05)
        if self._connected != 0:
            raise OSError(f"mqtt: connection refused ({self._connected})")

    def subscribe(self, topic: str, qos: int = 0) -> None:
        rc, _ = self._client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"mqtt: {mqtt.error_string(rc)}")

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        info = self._client.publish(topic, msg, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"mqtt: {mqtt.error_string(info.rc)}")
        if qos != 1:
            return
        if not self.wait_puback:
            self._loop(0)
            while self._deliver():
                pass
            return
        deadline = time.monotonic() + self.TIMEOUT_S
        while True:
            while self._deliver():  # umqtt's wait_msg() loop before the PUBACK
                pass
            if info.is_published():
                return
            if time.monotonic() > deadline:
                raise OSError("mqtt: no PUBACK")
            self._loop(0.05)

    def check_msg(self) -> None:
        if not self._waiting:
            self._loop(0)
        self._deliver()

    def ping(self) -> None:
        self._loop(0)  # paho sends PINGREQ itself from its loop

    def pending(self) -> int:
        """Messages received and not yet handed to the callback, after reading what the socket
        already holds (never blocks; raises OSError when the connection failed)."""
        self._loop(0)
        return len(self._waiting)

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` s for network activity (the host's idle)."""
        self._loop(0 if self._waiting else timeout)

    def socket(self) -> Any:
        """The connection's socket (None when not connected), for a host to wait until it is
        readable instead of polling."""
        return self._client.socket()

    def close(self) -> None:
        """Drop the link without a DISCONNECT (a power cut: the broker publishes the will)."""
        sock = self._client.socket()
        if sock is not None:
            sock.close()

    def disconnect(self) -> None:
        """A clean DISCONNECT (no will), then the socket is closed."""
        self._client.disconnect()
        self.close()
