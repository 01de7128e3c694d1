"""A burst of locks for one meter, against the real firmware (device/ngmeter, CPython-hosted by
hil.virtual) on a real Mosquitto: eight trades for alice's meter are matched by one order, so
eight lock commands are due at once, twice the meter's inbox (docs/wire.md, "Inbox").

- With the gateway's default bound (4 unacknowledged commands per meter) the rest wait in the
  gateway's queue and every trade settles.
- With the bound raised to 8 the meter answers some locks ``busy``; the gateway sends those
  again (new seq) and every trade still settles: a ``busy`` never voids a trade.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from hil.virtual.meter import SimSettings, VirtualMeter
from tests.brokers import Broker
from tests.integration.gateway_harness import Api, eventually, gateway_config, load, running_gateway
from tests.integration.test_gateway_virtual import meter_config

BUYS = 8  # the firmware's maximum of held locks (docs/wire.md, too_many_locks)


async def burst(gw: Any, api: Api) -> list[dict[str, Any]]:
    """BUYS resting buys, then one sell that matches them all: BUYS locks due at once."""
    for n in range(BUYS):
        home = "bob" if n % 2 else "carol"
        status, _ = await api.call(
            "POST", "/v1/orders", home, {"side": "buy", "wh": 10 + n, "price": 300}
        )
        assert status == 201
    status, _ = await api.call(
        "POST", "/v1/orders", "alice", {"side": "sell", "wh": 1000, "price": 100}
    )
    assert status == 201

    async def settled() -> list[dict[str, Any]] | None:
        _, body = await api.call("GET", "/v1/trades", "alice")
        return body["trades"] if len(body["trades"]) == BUYS and not body["locking"] else None

    rows: list[dict[str, Any]] = await eventually(settled, timeout=30)
    return rows


@pytest.mark.parametrize("in_flight", [4, 8])
async def test_a_burst_of_locks_for_one_meter_all_settle(
    mosquitto: Broker, tmp_path: Path, in_flight: int
) -> None:
    gateway_id = "gwb" + uuid.uuid4().hex[:8]
    data = gateway_config(
        tmp_path / "gw",
        port=mosquitto.port,
        prefix=f"ngrid/{gateway_id}",
        # Locks straight after the SoC check, so all eight go out in one burst; the firmware
        # shares this process's GIL, hence the generous timeout.
        locks={"timeout_ms": 5000, "prove_before_lock": False, "max_in_flight": in_flight},
    )
    data["gateway"]["id"] = gateway_id
    meter = VirtualMeter(
        config=meter_config(mosquitto, "m-a", gateway_id) | {"report_s": 60},
        flash=tmp_path / "flash",
        sim=SimSettings(soc_bp=8000),
    )
    async with running_gateway(load(data, tmp_path / "gw")) as gw:
        meter.start()
        try:
            api = Api(gw.api_port)
            await eventually(lambda: "m-a" in gw.core.telemetry, timeout=20)
            rows = await burst(gw, api)
            status = gw.status()
        finally:
            await asyncio.to_thread(meter.stop)
    assert meter.error is None
    assert sorted(r["wh"] for r in rows) == [10 + n for n in range(BUYS)]
    assert {r["seller"] for r in rows} == {"alice"}
    assert gw.core.voids == {}  # none voided, busy or not
    busy_acks = meter.runner.busy  # what the firmware counted, against what the gateway did
    assert status["commands"]["busy"].get("m-a", 0) == busy_acks
    assert status["commands"]["resent"].get("m-a", 0) == busy_acks
    if in_flight == 4:
        # Never more than the meter's inbox unacknowledged: the meter had no reason for busy.
        assert busy_acks == 0
    else:
        assert busy_acks > 0  # the burst did overflow the inbox, and nothing was lost
