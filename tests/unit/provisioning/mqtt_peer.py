"""A stand-in ``usocket`` for the MicroPython VM, which has no network stack, and a parser for the
MQTT 3.1.1 CONNECT packet a client writes to it.

``USOCKET`` is MicroPython source for ``/usocket.py``: it stands in for the board's socket module
only so that micropython-lib's ``umqtt.simple`` (uploaded to ``/lib``) can be imported and run
in the VM. It records every byte the client writes and answers with a CONNACK (return code 0),
so ``MQTTClient.connect()`` completes without a broker.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["USOCKET", "Connect", "parse_connect"]

USOCKET = """\
# test stand-in for the board's socket module (see tests/unit/provisioning/mqtt_peer.py)
written = []
class socket:
    def __init__(self, *args):
        self.rx = bytearray(b"\\x20\\x02\\x00\\x00")  # CONNACK, accepted
    def connect(self, addr):
        pass
    def write(self, data, n=None):
        if isinstance(data, str):
            data = data.encode()
        data = bytes(data) if n is None else bytes(data)[:n]
        written.append(data)
        return len(data)
    def read(self, n):
        out = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return out
    def setblocking(self, flag):
        pass
    def close(self):
        pass
def getaddrinfo(host, port, *args):
    return [(2, 1, 0, "", (host, port))]
"""


@dataclass(frozen=True, kw_only=True)
class Connect:
    """The fields of an MQTT 3.1.1 CONNECT packet (OASIS MQTT 3.1.1, section 3.1)."""

    protocol: bytes
    level: int
    flags: int
    keepalive: int
    client_id: bytes
    will_topic: bytes | None
    will_message: bytes | None
    username: bytes | None
    password: bytes | None


def parse_connect(packet: bytes) -> Connect:
    """Parse one CONNECT packet; raises ValueError if it is not exactly one."""
    if not packet or packet[0] != 0x10:
        raise ValueError(f"not a CONNECT packet: {packet[:1]!r}")
    length, shift, i = 0, 0, 1
    while True:
        byte = packet[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
    body = packet[i:]
    if len(body) != length:
        raise ValueError(f"remaining length {length}, got {len(body)} bytes")
    pos = 0

    def text() -> bytes:
        nonlocal pos
        (size,) = struct.unpack_from("!H", body, pos)
        value = body[pos + 2 : pos + 2 + size]
        pos += 2 + size
        return bytes(value)

    protocol = text()
    level, flags = body[pos], body[pos + 1]
    (keepalive,) = struct.unpack_from("!H", body, pos + 2)
    pos += 4
    client_id = text()
    will_topic = will_message = username = password = None
    if flags & 0x04:
        will_topic, will_message = text(), text()
    if flags & 0x80:
        username = text()
    if flags & 0x40:
        password = text()
    if pos != len(body):
        raise ValueError("bytes left after the CONNECT payload")
    return Connect(
        protocol=protocol,
        level=level,
        flags=flags,
        keepalive=keepalive,
        client_id=client_id,
        will_topic=will_topic,
        will_message=will_message,
        username=username,
        password=password,
    )
