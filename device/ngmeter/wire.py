"""The meter's side of the wire format (docs/wire.md): canonical bytes, HMAC-SHA256, messages.

Runs unchanged on MicroPython and CPython: it imports only ``hashlib``, ``json`` and ``binascii``.
The gateway's side is :mod:`edge.wire`; ``edge/wire/vectors.json`` holds golden vectors both
sides are tested against.

Canonical bytes of a message: its fields (values are ints or short ASCII strings from
``[A-Za-z0-9_.:-]``), keys sorted, written as compact JSON ``{"k":v,...}`` with no spaces. The
MAC is HMAC-SHA256 (RFC 2104) under the meter's 32-byte key over the canonical bytes of every
field but ``mac``; the payload on the wire is the canonical bytes of the fields plus ``mac``
(64 lower-case hex digits).
"""

import binascii
import hashlib
import json

VERSION = 1
MAX_STR = 64
MAX_PAYLOAD = 512

# Refusal reasons carried in acks (docs/wire.md, "Acks").
OK = "ok"
BAD_MAC = "bad_mac"
EXPIRED = "expired"
REPLAY = "replay"
INSUFFICIENT_RESERVE = "insufficient_reserve"
MALFORMED = "malformed"
WRONG_METER = "wrong_meter"
UNKNOWN_TRADE = "unknown_trade"
CONFLICT = "conflict"
TOO_MANY_LOCKS = "too_many_locks"
BUSY = "busy"  # the meter's inbox was full: the command was not read (docs/wire.md, "Inbox")

# Fields of each kind, mac excluded (docs/wire.md). Commands come from the gateway.
FIELDS = {
    "state": (
        "export_wh",
        "fw",
        "import_wh",
        "kind",
        "locked_wh",
        "meter",
        "power_w",
        "seq",
        "soc_bp",
        "ts",
        "v",
    ),
    "delivery": ("delivered_wh", "end", "kind", "meter", "seq", "start", "trade", "ts", "v", "wh"),
    "ack": ("cmd", "kind", "locked_wh", "meter", "ok", "op", "reason", "seq", "trade", "ts", "v"),
    "lock": ("end", "exp", "kind", "meter", "seq", "start", "trade", "ts", "v", "wh"),
    "release": ("exp", "kind", "meter", "seq", "trade", "ts", "v"),
    "ping": ("exp", "kind", "meter", "seq", "ts", "v"),
}
COMMANDS = ("lock", "release", "ping")

_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
_BLOCK = 64


class WireError(ValueError):
    """A message that cannot be accepted; ``reason`` is one of the refusal reasons above."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def safe_str(value):
    """True if ``value`` is a str the canonical form can carry without escaping."""
    if not isinstance(value, str) or len(value) > MAX_STR:
        return False
    for ch in value.encode():
        if ch not in _SAFE:
            return False
    return True


def canonical(fields):
    """The canonical bytes of ``fields`` (a dict of str -> int | safe str); ValueError if unfit."""
    parts = []
    for key in sorted(fields):
        value = fields[key]
        if isinstance(value, bool) or not (isinstance(value, int) or safe_str(value)):
            raise WireError(MALFORMED, key)
        if isinstance(value, int):
            parts.append('"%s":%d' % (key, value))
        else:
            parts.append('"%s":"%s"' % (key, value))
    return ("{" + ",".join(parts) + "}").encode()


def hmac_sha256(key, msg):
    """HMAC-SHA256 per RFC 2104 over ``hashlib.sha256`` (ESP32 builds ship no ``hmac``)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def mac_hex(key, fields):
    """The MAC of ``fields`` (mac excluded) as 64 lower-case hex digits."""
    return binascii.hexlify(hmac_sha256(key, canonical(fields))).decode()


def _equal(a, b):
    # Constant-time comparison of two equal-length hex strings.
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= ord(a[i]) ^ ord(b[i])
    return diff == 0


def seal(key, fields):
    """The payload for ``fields``: their canonical bytes with ``mac`` added."""
    body = dict(fields)
    body["mac"] = mac_hex(key, fields)
    return canonical(body)


def open_payload(key, payload):
    """Parse and authenticate a payload; return its fields (mac removed).

    Raises WireError(MALFORMED) for bytes that are not a canonical message of a known kind with
    exactly its fields, WireError(BAD_MAC) when the MAC does not verify.
    """
    if len(payload) > MAX_PAYLOAD:
        raise WireError(MALFORMED, "too long")
    try:
        fields = json.loads(payload)
    except (ValueError, UnicodeError):
        raise WireError(MALFORMED, "not JSON") from None
    if not isinstance(fields, dict):
        raise WireError(MALFORMED, "not an object")
    mac = fields.pop("mac", None)
    kind = fields.get("kind")
    names = FIELDS.get(kind) if isinstance(kind, str) else None
    if names is None or tuple(sorted(fields)) != names or not isinstance(mac, str):
        raise WireError(MALFORMED, "fields")
    if fields["v"] != VERSION:
        raise WireError(MALFORMED, "version")
    body_with_mac = dict(fields)
    body_with_mac["mac"] = mac
    if canonical(body_with_mac) != bytes(payload):
        raise WireError(MALFORMED, "not canonical")
    if not _equal(mac, mac_hex(key, fields)):
        raise WireError(BAD_MAC)
    return fields


def peek(payload):
    """Best-effort (kind, seq) of a payload that failed to open, for the refusal ack."""
    kind, seq, _ = peek_command(payload)
    return (kind, seq)


def peek_command(payload):
    """Best-effort (kind, seq, trade) of a payload, unverified: what a refusal ack echoes."""
    try:
        fields = json.loads(payload)
        kind = fields.get("kind")
        seq = fields.get("seq")
        trade = fields.get("trade", "")
        return (
            kind if safe_str(kind) else "",
            seq if type(seq) is int else 0,
            trade if safe_str(trade) else "",
        )
    except Exception:
        return ("", 0, "")


def state(meter, seq, ts, soc_bp, import_wh, export_wh, power_w, locked_wh, fw):
    """Fields of a telemetry message (units: s, bp, Wh, W)."""
    return {
        "v": VERSION,
        "kind": "state",
        "meter": meter,
        "seq": seq,
        "ts": ts,
        "soc_bp": soc_bp,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "power_w": power_w,
        "locked_wh": locked_wh,
        "fw": fw,
    }


def delivery(meter, seq, ts, trade, wh, delivered_wh, start, end):
    """Fields of a delivery report: Wh exported against a lock over [start, end)."""
    return {
        "v": VERSION,
        "kind": "delivery",
        "meter": meter,
        "seq": seq,
        "ts": ts,
        "trade": trade,
        "wh": wh,
        "delivered_wh": delivered_wh,
        "start": start,
        "end": end,
    }


def ack(meter, seq, ts, cmd, op, trade, ok, reason, locked_wh):
    """Fields of an ack: ``cmd``/``op`` echo the command's seq and kind, ``ok`` is 1 or 0."""
    return {
        "v": VERSION,
        "kind": "ack",
        "meter": meter,
        "seq": seq,
        "ts": ts,
        "cmd": cmd,
        "op": op,
        "trade": trade,
        "ok": 1 if ok else 0,
        "reason": reason,
        "locked_wh": locked_wh,
    }
