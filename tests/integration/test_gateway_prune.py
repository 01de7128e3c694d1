"""A gateway that runs across delivery intervals forgets the finished ones (docs/gateway.md,
"Memory"): on a real Mosquitto, a settled trade's interval is pruned once its batch is sealed,
the order log leaves memory as batches seal it, a restart starts from the snapshot saved with
the prune, and the coordinator accepts every batch, prune records included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordinator.verify import GatewayKey, Rules, verify_chain
from edge.batch import decode_batch
from edge.gateway.core import GatewayCore
from edge.market import Engine, parse_event
from tests.brokers import Broker
from tests.integration.gateway_harness import (
    SIGNING_KEY,
    Api,
    MeterStandIn,
    eventually,
    gateway_config,
    load,
    running_gateway,
)


class RecordingCore(GatewayCore):
    """The real core; keeps what :meth:`restore` rebuilt, before any tick changes it."""

    restored: tuple[int, int, bytes] | None = None  # (replayed_from, log_seq, engine snapshot)

    @classmethod
    def restore(cls, **kwargs: Any) -> tuple[GatewayCore, list[Any]]:
        core, effects = super().restore(**kwargs)
        RecordingCore.restored = (core.replayed_from, core.log_seq, core.engine.snapshot())
        return core, effects


def replayed(records: list[dict[str, Any]], params: Any) -> bytes:
    engine = Engine(params=params)
    for r in records:
        engine.submit(parse_event({k: v for k, v in r.items() if k != "seq"}, r["seq"]))
    return engine.snapshot()


async def test_finished_intervals_are_pruned_and_restart_from_the_snapshot(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    data = gateway_config(
        tmp_path,
        port=mosquitto.port,
        prefix=topic_prefix,
        market={"interval_s": 2},
        batch={"every_s": 1, "max_trades": 1},
    )
    config = load(data, tmp_path)
    async with (
        running_gateway(config) as gw,
        MeterStandIn("m-a", port=mosquitto.port, prefix=topic_prefix, soc_bp=8000).running(),
    ):
        api = Api(gw.api_port)
        await eventually(lambda: "m-a" in gw.core.telemetry)
        _, sell = await api.call(
            "POST", "/v1/orders", "alice", {"side": "sell", "wh": 1000, "price": 100}
        )
        _, buy = await api.call(
            "POST", "/v1/orders", "bob", {"side": "buy", "wh": 400, "price": 200}
        )
        assert buy["status"] == "filled"
        first_interval = sell["interval"]
        await eventually(lambda: gw.core.engine.pruned_through is not None, timeout=15)
        assert gw.core.engine.pruned_through is not None
        assert gw.core.engine.pruned_through >= first_interval
        assert gw.core.engine.order(sell["id"]) is None and gw.core.engine.trade("t1") is None
        _, orders = await api.call("GET", "/v1/orders", "alice")
        assert sell["id"] not in [o["id"] for o in orders["orders"]]
        # The settled trade's lock awaits its delivery (no report yet): the service's view of it
        # comes from the core's own record, not from the engine that forgot the trade.
        assert [(lk.trade, lk.buyer, lk.price, lk.wh) for lk in gw.locks()] == [
            ("t1", "bob", 100, 400)
        ]
        _, status = await api.call("GET", "/v1/status", "bob")
        assert status["pruned_through"] == gw.core.engine.pruned_through
        _, trades = await api.call("GET", "/v1/trades", "bob")
        assert [t["id"] for t in trades["trades"]] == ["t1"]  # the ledger keeps the trade

        async def all_sealed() -> bool:
            last = await gw.disk(gw.ledger.last_batch)
            return last is not None and last.log_last == gw.orderlog.last_seq

        await eventually(all_sealed, timeout=15)
        # Memory keeps no record a batch already holds; the file keeps them all.
        last_seq = gw.orderlog.last_seq
        assert gw.orderlog.base == last_seq and gw.orderlog.records == []
        on_disk = list(gw.orderlog.read())
        assert [r["seq"] for r in on_disk] == list(range(1, last_seq + 1))
        prunes = [r for r in on_disk if r["op"] == "prune"]
        assert prunes
        saved = await gw.disk(gw.ledger.load_snapshot)
        assert saved is not None and saved[0] == prunes[-1]["seq"]
        bodies = [b.body for b in await gw.disk(gw.ledger.outbox)]  # no coordinator: queued

    # The coordinator replays every batch, prunes included, and accepts them all.
    key = GatewayKey(
        id="gw1",
        public_key=SIGNING_KEY.public_key().public_bytes_raw(),
        meters=frozenset({"m-a", "m-b"}),
    )
    rules = Rules(rates=config.rates)  # the yield accrues over the 2 s interval
    results = verify_chain([decode_batch(b) for b in bodies], registry={"gw1": key}, rules=rules)
    assert results and [r.verdict for r in results] == ["accepted"] * len(results)
    assert results[-1].state is not None and results[-1].state.open_trades == frozenset()

    # A restart replays only the log after the snapshot, to the same state as the whole log.
    RecordingCore.restored = None
    async with running_gateway(config, core_class=RecordingCore) as again:
        assert RecordingCore.restored is not None
        replayed_from, log_seq, engine = RecordingCore.restored
        assert replayed_from == saved[0] and log_seq == last_seq
        assert engine == replayed(on_disk, config.market_params)
        assert again.orderlog.base == last_seq  # everything was sealed: nothing kept
