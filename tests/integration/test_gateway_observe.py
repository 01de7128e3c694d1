"""The service's public view for a driver that needs to know when the gateway is quiet
(``idle``, ``quiesce``) and what it holds (``locks``, ``interval``, ``telemetry_seq``,
``reference_price``, ``status``), as ``ngrid simulate`` uses it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.brokers import Broker
from tests.integration.gateway_harness import (
    Api,
    MeterStandIn,
    eventually,
    gateway_config,
    load,
    now_ms,
    running_gateway,
)


async def test_idle_quiesce_and_locks(mosquitto: Broker, topic_prefix: str, tmp_path: Path) -> None:
    data = gateway_config(tmp_path, port=mosquitto.port, prefix=topic_prefix)
    meter = MeterStandIn("m-a", port=mosquitto.port, prefix=topic_prefix, ack=False)
    async with running_gateway(load(data, tmp_path)) as gw, meter.running(period=0.2):
        api = Api(gw.api_port)
        assert gw.interval == now_ms() // 900_000
        await eventually(lambda: gw.telemetry_seq("m-a") is not None)
        assert gw.telemetry_seq("m-b") is None
        await eventually(lambda: gw.telemetry_seq("m-a") == meter.seq)  # the latest accepted
        assert gw.reference_price == 100 + 100 * (10_000 - 8000) // 10_000  # SoC 80 %
        await eventually(lambda: gw.idle)
        await api.call("POST", "/v1/orders", "alice", {"side": "sell", "wh": 900, "price": 100})
        await api.call("POST", "/v1/orders", "bob", {"side": "buy", "wh": 300, "price": 150})
        # Matched, the lock command out, no ack: busy until the lock times out and is voided.
        assert not gw.idle and gw.status()["pending_locks"] == 1
        await eventually(lambda: any(c.get("cmd") == "lock" for c in meter.commands))
        assert not gw.idle and gw.locks() == []
        await eventually(lambda: gw.idle, timeout=10)
        assert gw.status()["voids"] == {"timeout": 1} and gw.locks() == []

        meter.ack = True
        await api.call("POST", "/v1/orders", "bob", {"side": "buy", "wh": 200, "price": 150})
        await eventually(lambda: gw.locks())  # settled in the core ...
        await gw.quiesce()  # ... and, once quiesced, in the ledger too
        assert (await gw.disk(gw.ledger.totals))["trades"] == 1
        (lock,) = gw.locks()
        assert (lock.seller, lock.buyer, lock.meter) == ("alice", "bob", "m-a")
        assert (lock.wh, lock.price, lock.interval) == (200, 100, gw.interval)
        assert gw.locks(interval=gw.interval + 1) == []
        assert gw.idle

        # A seal in progress: quiesce returns once it is recorded.
        sealing = asyncio.create_task(gw.seal("test"))
        await asyncio.sleep(0)
        await gw.quiesce()
        assert sealing.done() and sealing.result() == 1
        last = await gw.disk(gw.ledger.last_batch)
        assert last is not None and last.seq == 1
