"""The seam between the gateway core and the meters' wire format.

PROVISIONAL: the one wire format is edge.wire (issue 5: canonical payload bytes, HMAC-SHA256,
golden vectors shared with the firmware). Until it lands this module implements the format as
issue 5 describes it -- canonical JSON (edge.batch.canonical) with an ``mac`` field holding
HMAC-SHA256 over the canonical bytes of the other fields -- and nothing else in the gateway
knows the format: swapping in edge.wire changes only this file.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from edge.batch import CanonicalError, canonical_bytes, parse_canonical
from edge.gateway.config import Meter
from edge.gateway.core import Ack, Telemetry, WireRefused

__all__ = ["JsonHmacCodec", "sign_payload"]

_TELEMETRY = ("dev", "seq", "ts", "soc_bp", "import_wh", "export_wh", "power_w", "locked_wh")


def sign_payload(key: bytes, body: dict[str, Any]) -> bytes:
    """``body`` plus ``mac`` = HMAC-SHA256(key, canonical(body)), as canonical JSON bytes."""
    mac = hmac.new(key, canonical_bytes(body), hashlib.sha256).hexdigest()
    return canonical_bytes({**body, "mac": mac})


def _open(meter: Meter, payload: bytes) -> dict[str, Any]:
    try:
        obj = parse_canonical(payload)
    except CanonicalError as err:
        raise WireRefused("malformed", str(err)) from err
    if not isinstance(obj, dict) or not isinstance(obj.get("mac"), str):
        raise WireRefused("malformed", "expected an object with a mac")
    mac = obj.pop("mac")
    want = hmac.new(meter.key, canonical_bytes(obj), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, want):
        raise WireRefused("bad_mac")
    return obj


def _ints(obj: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if type(obj.get(name)) is not int:
            raise WireRefused("malformed", f"{name} must be an integer")


class JsonHmacCodec:
    """Telemetry/ack parsing with MAC verification, and command building (see module doc)."""

    def __init__(self, *, gateway: str) -> None:
        self.gateway = gateway

    def telemetry(self, meter: Meter, payload: bytes) -> Telemetry:
        obj = _open(meter, payload)
        if not isinstance(obj.get("dev"), str):
            raise WireRefused("malformed", "dev must be a string")
        _ints(obj, _TELEMETRY[1:])
        return Telemetry(
            meter=obj["dev"],
            seq=obj["seq"],
            ts=obj["ts"],
            soc_bp=obj["soc_bp"],
            import_wh=obj["import_wh"],
            export_wh=obj["export_wh"],
            power_w=obj["power_w"],
            locked_wh=obj["locked_wh"],
        )

    def ack(self, meter: Meter, payload: bytes) -> Ack:
        obj = _open(meter, payload)
        if not isinstance(obj.get("dev"), str) or not isinstance(obj.get("trade"), str):
            raise WireRefused("malformed", "dev and trade must be strings")
        _ints(obj, ("seq",))
        if not isinstance(obj.get("ok"), bool):
            raise WireRefused("malformed", "ok must be true or false")
        reason = obj.get("reason", "")
        return Ack(
            meter=obj["dev"],
            seq=obj["seq"],
            trade=obj["trade"],
            ok=obj["ok"],
            reason=reason if isinstance(reason, str) else "",
        )

    def lock(
        self, meter: Meter, *, seq: int, trade: str, wh: int, interval: int, expiry: int
    ) -> bytes:
        body = {
            "cmd": "lock",
            "gw": self.gateway,
            "dev": meter.id,
            "seq": seq,
            "trade": trade,
            "wh": wh,
            "interval": interval,
            "exp": expiry,
        }
        return sign_payload(meter.key, body)

    def release(self, meter: Meter, *, seq: int, trade: str, expiry: int) -> bytes:
        body = {
            "cmd": "release",
            "gw": self.gateway,
            "dev": meter.id,
            "seq": seq,
            "trade": trade,
            "exp": expiry,
        }
        return sign_payload(meter.key, body)
