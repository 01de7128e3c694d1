"""The firmware boots and reports authenticated telemetry to a real broker."""

from __future__ import annotations

from typing import Any

from hil.plugin import GatewayPeer, Provisioned


def test_boots_and_reports_authenticated_telemetry(
    meter: Provisioned, firmware: Any, gateway_peer: GatewayPeer
) -> None:
    assert gateway_peer.wait("status", lambda s: s == "online") == "online"
    first = gateway_peer.wait("state")  # parse_meter_message checked its MAC with the meter's key
    second = gateway_peer.wait("state", lambda t: t.seq > first.seq)
    assert first.meter == second.meter == meter.meter_id
    assert 0 <= first.soc_bp <= 10_000
    assert second.ts >= first.ts
    assert first.locked_wh == 0


def test_telemetry_under_another_key_is_refused(
    meter: Provisioned, firmware: Any, gateway_peer: GatewayPeer
) -> None:
    """The gateway side must refuse the meter's telemetry under any key but the meter's own."""
    import pytest

    from edge.wire.messages import WireError, parse_meter_message

    gateway_peer.wait("state")
    topic = meter.topic("state")
    payload = next(p for t, p in gateway_peer.messages if t == topic)
    with pytest.raises(WireError, match="bad_mac"):
        parse_meter_message(payload, key=bytes(32), meter=meter.meter_id)
