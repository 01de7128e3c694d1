"""The gateway with real virtual meters: the firmware (device/ngmeter, CPython-hosted by
hil.virtual) on a real Mosquitto. Order -> lock -> the firmware's ack -> settlement -> the
firmware's delivery report decides the trade; a meter that loses power lets the lock time out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from hil.virtual.meter import SimSettings, VirtualMeter
from tests.brokers import Broker
from tests.integration.gateway_harness import (
    KEYS,
    Api,
    eventually,
    gateway_config,
    load,
    running_gateway,
)

INTERVAL_S = 6


def meter_config(broker: Broker, meter: str, gateway: str) -> dict[str, Any]:
    return {
        "device_id": meter,
        "gateway_id": gateway,
        "broker_host": broker.host,
        "broker_port": broker.port,
        "mac_key": KEYS[meter].hex(),
        "capacity_wh": 10_000,
        "report_s": 1,
        "persist_wh": 1,
        "backoff_base_ms": 100,
        "backoff_cap_ms": 1000,
    }


async def start_of_interval() -> None:
    """Wait until an interval has just begun, so a lock has most of it to deliver."""
    while time.time() % INTERVAL_S > 0.5:
        await asyncio.sleep(0.05)


async def trades(api: Api, home: str) -> list[dict[str, Any]]:
    _, body = await api.call("GET", "/v1/trades", home)
    return list(body["trades"])


async def test_firmware_locks_acks_and_reports_delivery(mosquitto: Broker, tmp_path: Path) -> None:
    gateway_id = "gwv" + uuid.uuid4().hex[:8]
    data = gateway_config(
        tmp_path / "gw",
        port=mosquitto.port,
        prefix=f"ngrid/{gateway_id}",
        market={"interval_s": INTERVAL_S},
        locks={"timeout_ms": 5000},  # the firmware shares this process's GIL here
    )
    data["gateway"]["id"] = gateway_id
    sim = SimSettings(soc_bp=8000, lock_export_w=3600)  # 1 Wh per second while locked
    meter = VirtualMeter(
        config=meter_config(mosquitto, "m-a", gateway_id), flash=tmp_path / "flash", sim=sim
    )
    async with running_gateway(load(data, tmp_path / "gw")) as gw:
        meter.start()
        try:
            api = Api(gw.api_port)
            await eventually(lambda: "m-a" in gw.core.telemetry, timeout=20)
            assert gw.core.telemetry["m-a"].soc_bp == 8000
            await start_of_interval()
            interval = gw.core.current_interval(int(time.time() * 1000))
            await api.call("POST", "/v1/orders", "alice", {"side": "sell", "wh": 500, "price": 100})
            # 2 Wh can be delivered in the interval, 400 Wh cannot (1 Wh/s for < 6 s).
            await api.call("POST", "/v1/orders", "bob", {"side": "buy", "wh": 2, "price": 300})
            # bob's trade settles first so the two trades' order is known (a burst of locks
            # for one meter is tests/integration/test_gateway_busy.py).
            await eventually(lambda: trades(api, "bob"), timeout=10)
            await api.call("POST", "/v1/orders", "carol", {"side": "buy", "wh": 400, "price": 300})

            async def decided() -> list[dict[str, Any]] | None:
                rows = await trades(api, "alice")
                done = [r for r in rows if r["status"] != "pending"]
                return rows if len(rows) == 2 and len(done) == 2 else None

            rows = await eventually(decided, timeout=30)
        finally:
            await asyncio.to_thread(meter.stop)
    by_buyer = {r["buyer"]: r for r in rows}
    assert (by_buyer["bob"]["status"], by_buyer["bob"]["delivered_wh"]) == ("delivered", 2)
    carol = by_buyer["carol"]
    assert carol["status"] == "defaulted" and 0 < carol["delivered_wh"] < 400
    assert {r["interval"] for r in rows} == {interval}
    assert gw.core.refusals == {} and gw.core.voids == {}


async def test_meter_power_cut_lets_the_lock_time_out(mosquitto: Broker, tmp_path: Path) -> None:
    gateway_id = "gwv" + uuid.uuid4().hex[:8]
    data = gateway_config(
        tmp_path / "gw",
        port=mosquitto.port,
        prefix=f"ngrid/{gateway_id}",
        locks={"timeout_ms": 1000},
    )
    data["gateway"]["id"] = gateway_id
    meter = VirtualMeter(
        config=meter_config(mosquitto, "m-a", gateway_id),
        flash=tmp_path / "flash",
        sim=SimSettings(soc_bp=8000),
    )
    async with running_gateway(load(data, tmp_path / "gw")) as gw:
        meter.start()
        api = Api(gw.api_port)
        await eventually(lambda: "m-a" in gw.core.telemetry, timeout=20)
        await asyncio.to_thread(meter.stop)  # power cut: telemetry is still fresh
        _, sell = await api.call(
            "POST", "/v1/orders", "alice", {"side": "sell", "wh": 50, "price": 100}
        )
        _, buy = await api.call(
            "POST", "/v1/orders", "bob", {"side": "buy", "wh": 50, "price": 300}
        )
        await eventually(lambda: gw.core.voids["timeout"] == 1, timeout=10)
        _, orders = await api.call("GET", "/v1/orders", "bob")
        assert [(o["id"], o["remaining"], o["status"]) for o in orders["orders"]] == [
            (buy["id"], 50, "open")
        ]
        _, orders = await api.call("GET", "/v1/orders", "alice")
        assert [(o["id"], o["remaining"]) for o in orders["orders"]] == [(sell["id"], 50)]
        assert await trades(api, "bob") == []
