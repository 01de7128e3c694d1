"""The seam between the gateway core and the meters' wire format (edge.wire, docs/wire.md).

The core works in milliseconds since the epoch; the wire carries Unix seconds. This adapter
converts (``ts`` s -> ms on the way in; ``exp``, ``start``, ``end`` ms -> s, floored, on the
way out, so that a meter never accepts a command after the gateway's own deadline) and maps
edge.wire's refusals (``malformed``, ``bad_mac``, ``wrong_meter``) onto the core's counters.
"""

from __future__ import annotations

from edge.gateway.config import Meter
from edge.gateway.core import Ack, DeliveryReport, Telemetry, WireRefused
from edge.wire import Ack as WireAck
from edge.wire import Delivery, WireError, build_lock, build_release, parse_meter_message
from edge.wire import Telemetry as WireTelemetry

__all__ = ["WireCodec"]


def _parse(meter: Meter, payload: bytes) -> WireTelemetry | Delivery | WireAck:
    try:
        return parse_meter_message(payload, key=meter.key, meter=meter.id)
    except WireError as err:
        raise WireRefused(err.reason, str(err)) from err


class WireCodec:
    """:class:`edge.gateway.core.MeterCodec` over edge.wire."""

    def telemetry(self, meter: Meter, payload: bytes) -> Telemetry | DeliveryReport:
        message = _parse(meter, payload)
        if isinstance(message, WireTelemetry):
            return Telemetry(
                meter=message.meter,
                seq=message.seq,
                ts=message.ts * 1000,
                soc_bp=message.soc_bp,
                import_wh=message.import_wh,
                export_wh=message.export_wh,
                power_w=message.power_w,
                locked_wh=message.locked_wh,
            )
        if isinstance(message, Delivery):
            return DeliveryReport(
                meter=message.meter,
                seq=message.seq,
                ts=message.ts * 1000,
                trade=message.trade,
                wh=message.wh,
                delivered_wh=message.delivered_wh,
            )
        raise WireRefused("malformed", "an ack on the state topic")

    def ack(self, meter: Meter, payload: bytes) -> Ack:
        message = _parse(meter, payload)
        if not isinstance(message, WireAck):
            raise WireRefused("malformed", f"a {type(message).__name__} on the ack topic")
        return Ack(
            meter=message.meter,
            seq=message.seq,
            trade=message.trade,
            op=message.op,
            ok=message.ok,
            reason=message.reason,
            cmd=message.cmd,
        )

    def lock(
        self,
        meter: Meter,
        *,
        seq: int,
        trade: str,
        wh: int,
        start: int,
        end: int,
        expiry: int,
        now: int,
    ) -> bytes:
        return build_lock(
            key=meter.key,
            meter=meter.id,
            seq=seq,
            ts=now // 1000,
            exp=expiry // 1000,
            trade=trade,
            wh=wh,
            start=start // 1000,
            end=end // 1000,
        )

    def release(self, meter: Meter, *, seq: int, trade: str, expiry: int, now: int) -> bytes:
        return build_release(
            key=meter.key,
            meter=meter.id,
            seq=seq,
            ts=now // 1000,
            exp=expiry // 1000,
            trade=trade,
        )
