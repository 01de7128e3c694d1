"""The gateway on a real Mosquitto: order -> lock -> ack -> settlement, lock timeouts, refusals."""

from __future__ import annotations

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


async def test_order_lock_ack_settlement(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    config = load(gateway_config(tmp_path, port=mosquitto.port, prefix=topic_prefix), tmp_path)
    async with (
        running_gateway(config) as gw,
        MeterStandIn(
            "m-a", port=mosquitto.port, prefix=topic_prefix, soc_bp=8000
        ).running() as meter,
    ):
        api = Api(gw.api_port)
        await eventually(lambda: "m-a" in gw.core.telemetry)
        status, sell = await api.call(
            "POST", "/v1/orders", "alice", {"side": "sell", "wh": 1000, "price": 100}
        )
        assert status == 201 and sell["status"] == "open"
        status, buy = await api.call(
            "POST", "/v1/orders", "bob", {"side": "buy", "wh": 400, "price": 200}
        )
        assert status == 201 and buy["status"] == "filled"
        # The order is in the durable log before the API answered.
        assert [r["id"] for r in gw.orderlog.read() if r["op"] == "order"] == [
            sell["id"],
            buy["id"],
        ]

        async def settled() -> list[dict] | None:
            _, trades = await api.call("GET", "/v1/trades", "bob")
            return trades["trades"] or None

        (trade,) = await eventually(settled)
        assert (trade["wh"], trade["price"], trade["status"], trade["chain_ref"]) == (
            400,
            100,
            "pending",
            "pending",
        )
        (lock,) = [c for c in meter.commands if c.get("cmd") == "lock"]  # its MAC verified
        assert lock["trade"] == trade["id"] and lock["wh"] == 400
        assert lock["qos"] == 1 and lock["retain"] is False
        assert now_ms() // 1000 - 60 < lock["exp"] <= now_ms() // 1000 + 2
        _, statement = await api.call("GET", "/v1/statement", "alice")
        assert statement["sold_wh"] == 400 and statement["carbon_mg"] == 400 * 820
        _, bob_statement = await api.call("GET", "/v1/statement", "bob")
        assert bob_statement["paid_microticks"] == trade["buyer_pays"]
        totals = await gw.disk(gw.ledger.totals)
        assert (totals["trades"], totals["fills"], totals["yields"], totals["burn_records"]) == (
            1,
            2,
            2,
            1,
        )
        _, state = await api.call("GET", "/v1/meter", "alice")
        assert state["locked_wh"] == 400 and state["telemetry"]["soc_bp"] == 8000
        status, _ = await api.call("GET", "/v1/orders", "nobody")
        assert status == 401


async def test_lock_timeout_voids_and_restores(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    data = gateway_config(
        tmp_path, port=mosquitto.port, prefix=topic_prefix, locks={"timeout_ms": 400}
    )
    config = load(data, tmp_path)
    async with (
        running_gateway(config) as gw,
        MeterStandIn("m-a", port=mosquitto.port, prefix=topic_prefix, ack=False).running() as meter,
    ):
        api = Api(gw.api_port)
        await eventually(lambda: "m-a" in gw.core.telemetry)
        await api.call("POST", "/v1/orders", "alice", {"side": "sell", "wh": 1000, "price": 100})
        _, buy = await api.call(
            "POST", "/v1/orders", "bob", {"side": "buy", "wh": 400, "price": 200}
        )
        _, later = await api.call(
            "POST", "/v1/orders", "carol", {"side": "buy", "wh": 50, "price": 90}
        )
        await eventually(lambda: gw.core.voids["timeout"] == 1)
        _, orders = await api.call("GET", "/v1/orders", "bob")
        assert [(o["id"], o["remaining"], o["status"]) for o in orders["orders"]] == [
            (buy["id"], 400, "open")
        ]
        book = [o.id for o in gw.core.engine.book(gw.core.interval, "buy")]
        assert book == [buy["id"], later["id"]]  # original priority kept
        assert any(r["op"] == "void" for r in gw.orderlog.read())
        await eventually(lambda: any(c.get("cmd") == "release" for c in meter.commands))
        assert (await gw.disk(gw.ledger.totals))["trades"] == 0


async def test_bad_telemetry_is_refused_and_counted(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    config = load(gateway_config(tmp_path, port=mosquitto.port, prefix=topic_prefix), tmp_path)
    async with running_gateway(config) as gw:
        meter = MeterStandIn("m-a", port=mosquitto.port, prefix=topic_prefix)
        async with meter.running(period=60):
            await eventually(lambda: "m-a" in gw.core.telemetry)
            good = meter.telemetry()
            await meter.publish(good)
            await eventually(lambda: gw.core.telemetry["m-a"].seq == meter.seq)
            await meter.publish(good)  # replayed
            forged = bytearray(meter.telemetry(soc_bp=9999))
            forged[forged.index(b'"soc_bp":9999') + 9] = ord("8")  # soc 8999 under the old MAC
            await meter.publish(bytes(forged))
            await meter.publish(b"\xff not json")
            await meter.publish(meter.telemetry(ts=now_ms() // 1000 - 3600))  # an hour old
            await meter.publish(meter.telemetry(), meter="m-b")  # m-a's key on m-b's topic
            await meter.publish(meter.telemetry(), meter="m-zz")  # unregistered
            expected = {"replay": 1, "bad_mac": 2, "malformed": 1, "stale": 1, "unknown_meter": 1}
            await eventually(lambda: gw.core.refusals == expected)
            _, status = await Api(gw.api_port).call("GET", "/v1/status", "alice")
            assert status["refusals"] == expected
            assert gw.core.telemetry["m-a"].soc_bp == 8000
