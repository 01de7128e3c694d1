"""Wire formats shared by meters and gateway: canonical payloads, MACs, topics (docs/wire.md).

The meter's side of the same format is ``device/ngmeter/wire.py``; :func:`load_vectors` returns the
golden vectors (``edge/wire/vectors.json``) that both sides are tested against.
"""

from __future__ import annotations

from edge.wire.messages import (
    COMMAND_KINDS,
    FIELDS,
    KEY_BYTES,
    MAX_PAYLOAD,
    METER_KINDS,
    METER_MAX_LOCKS,
    REASONS,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    TOPIC_ROOT,
    VERSION,
    Ack,
    Command,
    Delivery,
    Telemetry,
    Topic,
    WireError,
    build_lock,
    build_ping,
    build_release,
    canonical,
    mac_hex,
    open_payload,
    parse_command,
    parse_meter_message,
    parse_topic,
    seal,
    topic,
)
from edge.wire.vectors import VECTORS_PATH, load_vectors

__all__ = [
    "COMMAND_KINDS",
    "FIELDS",
    "KEY_BYTES",
    "MAX_PAYLOAD",
    "METER_KINDS",
    "METER_MAX_LOCKS",
    "REASONS",
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "TOPIC_ROOT",
    "VECTORS_PATH",
    "VERSION",
    "Ack",
    "Command",
    "Delivery",
    "Telemetry",
    "Topic",
    "WireError",
    "build_lock",
    "build_ping",
    "build_release",
    "canonical",
    "load_vectors",
    "mac_hex",
    "open_payload",
    "parse_command",
    "parse_meter_message",
    "parse_topic",
    "seal",
    "topic",
]
