"""The gateway's side of the meter wire format defined in docs/wire.md.

Pure: bytes in, typed records out (and the reverse); no clock, sockets or asyncio. The meter's
side is ``device/ngmeter/wire.py`` (MicroPython); golden vectors in ``edge/wire/vectors.json``
prove the two produce the same canonical bytes and MACs.

Canonical bytes: the message's fields (ints, or ASCII strings of at most 64 characters from
``[A-Za-z0-9_.:-]``), keys sorted, compact JSON (``json.dumps(sort_keys=True,
separators=(",", ":"))``). MAC: HMAC-SHA256 (RFC 2104) under the meter's 32-byte key over the
canonical bytes of every field but ``mac``. Payload: the canonical bytes of the fields plus
``mac`` (64 lower-case hex digits).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Final, Literal

from edge.errors import GatewayError

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
    "mac_hex",
    "open_payload",
    "parse_command",
    "parse_meter_message",
    "parse_topic",
    "seal",
    "topic",
]

VERSION: Final = 1
KEY_BYTES: Final = 32
MAX_PAYLOAD: Final = 512
MAX_STR: Final = 64
#: Locks a meter holds at once (device/ngmeter/locks.py MAX_LOCKS, held equal by a test); the
#: next is refused ``too_many_locks``, so the gateway sends no more than this (docs/wire.md).
METER_MAX_LOCKS: Final = 8
TOPIC_ROOT: Final = "ngrid"
STATUS_ONLINE: Final = b"online"
STATUS_OFFLINE: Final = b"offline"

Scalar = int | str
Leaf = Literal["state", "cmd", "ack", "status"]
_LEAVES: Final = ("state", "cmd", "ack", "status")

#: Every refusal reason a meter may put in an ack, and "ok".
REASONS: Final = frozenset(
    {
        "ok",
        "bad_mac",
        "expired",
        "replay",
        "insufficient_reserve",
        "malformed",
        "wrong_meter",
        "unknown_trade",
        "conflict",
        "too_many_locks",
        "busy",  # the meter's inbox was full; the command was not read (docs/wire.md, "Inbox")
    }
)

#: The fields of each message kind (``mac`` excluded), sorted.
FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
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
METER_KINDS: Final = frozenset({"state", "delivery", "ack"})
COMMAND_KINDS: Final = frozenset({"lock", "release", "ping"})

_SAFE: Final = re.compile(r"[A-Za-z0-9_.:\-]{0,64}")
_ID: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


class WireError(GatewayError, ValueError):
    """A payload or topic that cannot be accepted.

    ``reason`` is one of :data:`REASONS` (``"malformed"``, ``"bad_mac"``, ``"wrong_meter"``);
    the message says which field or check failed.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, kw_only=True)
class Topic:
    """A parsed topic ``ngrid/<gateway>/<meter>/<leaf>``."""

    gateway: str
    meter: str
    leaf: Leaf


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    """A verified ``state`` message: seq, ts (Unix s), SoC (bp), counters (Wh), power (W)."""

    meter: str
    seq: int
    ts: int
    soc_bp: int
    import_wh: int
    export_wh: int
    power_w: int
    locked_wh: int
    fw: str


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """A verified ``delivery`` report: ``delivered_wh`` exported against lock ``trade``."""

    meter: str
    seq: int
    ts: int
    trade: str
    wh: int
    delivered_wh: int
    start: int
    end: int


@dataclass(frozen=True, kw_only=True)
class Ack:
    """A verified ``ack`` of command ``cmd`` (its seq) of kind ``op``; ``reason`` in REASONS."""

    meter: str
    seq: int
    ts: int
    cmd: int
    op: str
    trade: str
    ok: bool
    reason: str
    locked_wh: int


@dataclass(frozen=True, kw_only=True)
class Command:
    """A verified gateway command (``kind`` lock, release or ping); unused fields are 0 / ""."""

    kind: str
    meter: str
    seq: int
    ts: int
    exp: int
    trade: str = ""
    wh: int = 0
    start: int = 0
    end: int = 0


def topic(gateway: str, meter: str, leaf: Leaf) -> str:
    """The topic ``ngrid/<gateway>/<meter>/<leaf>``; WireError if an id is not a safe id."""
    for name, value in (("gateway", gateway), ("meter", meter)):
        if not _ID.fullmatch(value):
            raise WireError("malformed", f"{name} id {value!r}")
    if leaf not in _LEAVES:
        raise WireError("malformed", f"topic leaf {leaf!r}")
    return f"{TOPIC_ROOT}/{gateway}/{meter}/{leaf}"


def parse_topic(name: str) -> Topic:
    """Split ``ngrid/<gateway>/<meter>/<leaf>``; WireError("malformed") for anything else."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT:
        raise WireError("malformed", f"topic {name!r}")
    _, gateway, meter, leaf = parts
    if not (_ID.fullmatch(gateway) and _ID.fullmatch(meter)) or leaf not in _LEAVES:
        raise WireError("malformed", f"topic {name!r}")
    if leaf == "state":
        return Topic(gateway=gateway, meter=meter, leaf="state")
    if leaf == "cmd":
        return Topic(gateway=gateway, meter=meter, leaf="cmd")
    if leaf == "ack":
        return Topic(gateway=gateway, meter=meter, leaf="ack")
    return Topic(gateway=gateway, meter=meter, leaf="status")


def canonical(fields: Mapping[str, Scalar]) -> bytes:
    """Sorted-key compact JSON of ``fields``; WireError("malformed") for a value it cannot carry."""
    for key, value in fields.items():
        if type(value) is int:  # the common case first: isinstance on a union is slow
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise WireError("malformed", f"{key}: not an int or string")
        if isinstance(value, str) and not _SAFE.fullmatch(value):
            raise WireError("malformed", f"{key}: string outside [A-Za-z0-9_.:-]{{0,64}}")
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":")).encode("ascii")


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise WireError("malformed", f"MAC key must be {KEY_BYTES} bytes, got {len(key)}")


def mac_hex(key: bytes, fields: Mapping[str, Scalar]) -> str:
    """HMAC-SHA256 under ``key`` (32 bytes) of ``canonical(fields)``, as lower-case hex."""
    _check_key(key)
    return hmac.new(key, canonical(fields), sha256).hexdigest()


def seal(key: bytes, fields: Mapping[str, Scalar]) -> bytes:
    """The wire payload of ``fields``: canonical bytes of the fields plus their ``mac``."""
    if "mac" in fields:
        raise WireError("malformed", "fields already carry a mac")
    return canonical({**fields, "mac": mac_hex(key, fields)})


def open_payload(key: bytes, payload: bytes, *, kinds: frozenset[str]) -> dict[str, Scalar]:
    """Parse and authenticate ``payload`` of one of ``kinds``; return its fields without mac.

    Raises WireError("malformed") unless the payload is exactly the canonical bytes of a message
    of a kind in ``kinds`` with that kind's fields, WireError("bad_mac") if the MAC fails.
    """
    _check_key(key)
    if len(payload) > MAX_PAYLOAD:
        raise WireError("malformed", f"payload longer than {MAX_PAYLOAD} bytes")
    try:
        decoded = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as err:
        raise WireError("malformed", "not JSON") from err
    if not isinstance(decoded, dict):
        raise WireError("malformed", "not a JSON object")
    mac = decoded.pop("mac", None)
    kind = decoded.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise WireError("malformed", f"kind {kind!r}")
    if tuple(sorted(decoded)) != FIELDS[kind]:
        raise WireError("malformed", f"fields of {kind} must be {', '.join(FIELDS[kind])}")
    if not isinstance(mac, str):
        raise WireError("malformed", "mac missing")
    fields: dict[str, Scalar] = {}
    for name, value in decoded.items():
        if type(value) is not int and type(value) is not str:  # JSON gives exact types
            raise WireError("malformed", f"{name}: not an int or string")
        fields[name] = value
    if fields["v"] != VERSION:
        raise WireError("malformed", f"version {fields['v']!r}")
    if canonical({**fields, "mac": mac}) != payload:
        raise WireError("malformed", "not in canonical form")
    # The MAC covers canonical(fields): the payload less its ``,"mac":"..."`` pair. Every kind
    # has a field sorting before "mac" and one after, and no value can hold a quote or a comma
    # (canonical() checked them), so the pair occurs once, comma first.
    signed = payload.replace(b',"mac":"' + mac.encode("ascii") + b'"', b"", 1)
    if not hmac.compare_digest(mac, hmac.digest(key, signed, "sha256").hex()):
        raise WireError("bad_mac")
    return fields


def _int(fields: Mapping[str, Scalar], name: str, low: int, high: int | None = None) -> int:
    value = fields[name]
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise WireError("malformed", f"{name}: want an integer {bound}, got {value!r}")
    return value


def _str(fields: Mapping[str, Scalar], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise WireError("malformed", f"{name}: want a string, got {value!r}")
    return value


def _meter(fields: Mapping[str, Scalar], meter: str) -> str:
    if _str(fields, "meter") != meter:
        raise WireError("wrong_meter", f"message names meter {fields['meter']!r}, not {meter!r}")
    return meter


def parse_meter_message(payload: bytes, *, key: bytes, meter: str) -> Telemetry | Delivery | Ack:
    """Verify a message from ``meter`` (on its state or ack topic) and return it typed.

    Raises WireError with reason "malformed" (shape, form or a value out of range: soc_bp outside
    0..10000, a negative seq, ts or Wh), "bad_mac" or "wrong_meter". Sequence and freshness
    checks are the caller's (they need state and a clock).
    """
    fields = open_payload(key, payload, kinds=METER_KINDS)
    name = _meter(fields, meter)
    seq, ts = _int(fields, "seq", 0), _int(fields, "ts", 0)
    if fields["kind"] == "state":
        return Telemetry(
            meter=name,
            seq=seq,
            ts=ts,
            soc_bp=_int(fields, "soc_bp", 0, 10000),
            import_wh=_int(fields, "import_wh", 0),
            export_wh=_int(fields, "export_wh", 0),
            power_w=_int(fields, "power_w", -(10**9), 10**9),
            locked_wh=_int(fields, "locked_wh", 0),
            fw=_str(fields, "fw"),
        )
    if fields["kind"] == "delivery":
        start, end = _int(fields, "start", 0), _int(fields, "end", 0)
        if end <= start:
            raise WireError("malformed", "end must be after start")
        return Delivery(
            meter=name,
            seq=seq,
            ts=ts,
            trade=_str(fields, "trade"),
            wh=_int(fields, "wh", 0),
            delivered_wh=_int(fields, "delivered_wh", 0),
            start=start,
            end=end,
        )
    reason = _str(fields, "reason")
    if reason not in REASONS:
        raise WireError("malformed", f"reason {reason!r}")
    ok = _int(fields, "ok", 0, 1) == 1
    if ok != (reason == "ok"):
        raise WireError("malformed", "ok and reason disagree")
    return Ack(
        meter=name,
        seq=seq,
        ts=ts,
        cmd=_int(fields, "cmd", 0),
        op=_str(fields, "op"),
        trade=_str(fields, "trade"),
        ok=ok,
        reason=reason,
        locked_wh=_int(fields, "locked_wh", 0),
    )


def parse_command(payload: bytes, *, key: bytes, meter: str) -> Command:
    """Verify a gateway command addressed to ``meter`` (used by host-side tools and tests).

    Raises WireError as :func:`parse_meter_message`; expiry and replay are the meter's checks.
    """
    fields = open_payload(key, payload, kinds=COMMAND_KINDS)
    kind = _str(fields, "kind")
    name = _meter(fields, meter)
    seq, ts, exp = _int(fields, "seq", 1), _int(fields, "ts", 0), _int(fields, "exp", 0)
    if kind == "ping":
        return Command(kind=kind, meter=name, seq=seq, ts=ts, exp=exp)
    trade = _str(fields, "trade")
    if not trade:
        raise WireError("malformed", "trade id is empty")
    if kind == "release":
        return Command(kind=kind, meter=name, seq=seq, ts=ts, exp=exp, trade=trade)
    start, end = _int(fields, "start", 0), _int(fields, "end", 0)
    if end <= start:
        raise WireError("malformed", "end must be after start")
    return Command(
        kind=kind,
        meter=name,
        seq=seq,
        ts=ts,
        exp=exp,
        trade=trade,
        wh=_int(fields, "wh", 1),
        start=start,
        end=end,
    )


def _command(key: bytes, kind: str, fields: dict[str, Scalar]) -> bytes:
    payload = seal(key, {"v": VERSION, "kind": kind, **fields})
    # Building through the parser keeps the builder and the checks from drifting apart.
    parse_command(payload, key=key, meter=str(fields["meter"]))
    return payload


def build_lock(
    *,
    key: bytes,
    meter: str,
    seq: int,
    ts: int,
    exp: int,
    trade: str,
    wh: int,
    start: int,
    end: int,
) -> bytes:
    """Payload of a lock: hold ``wh`` Wh (>= 1) for ``trade`` over [start, end) (Unix s).

    ``seq`` is the gateway's command sequence for this meter (>= 1, strictly increasing),
    ``exp`` the Unix time after which the meter must refuse it. WireError on bad values.
    """
    return _command(
        key,
        "lock",
        {
            "meter": meter,
            "seq": seq,
            "ts": ts,
            "exp": exp,
            "trade": trade,
            "wh": wh,
            "start": start,
            "end": end,
        },
    )


def build_release(*, key: bytes, meter: str, seq: int, ts: int, exp: int, trade: str) -> bytes:
    """Payload of a release of the lock held for ``trade``."""
    return _command(
        key, "release", {"meter": meter, "seq": seq, "ts": ts, "exp": exp, "trade": trade}
    )


def build_ping(*, key: bytes, meter: str, seq: int, ts: int, exp: int) -> bytes:
    """Payload of a ping (the meter answers with an ok ack and its locked Wh)."""
    return _command(key, "ping", {"meter": meter, "seq": seq, "ts": ts, "exp": exp})
