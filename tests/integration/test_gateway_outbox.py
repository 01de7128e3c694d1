"""Store and forward: batches queue while the coordinator is down, then upload exactly once.

The coordinator here is a small aiohttp server speaking the agreed endpoint
(``POST {coordinator_url}/batches`` with the canonical batch bytes; 2xx = accepted, anything
else = try again; an identical re-upload answers 200).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from aiohttp import web

from edge.batch import check_batch, decode_batch
from tests.brokers import Broker, free_port
from tests.integration.gateway_harness import (
    SIGNING_KEY,
    Api,
    MeterStandIn,
    eventually,
    gateway_config,
    load,
    running_gateway,
)


class Coordinator:
    def __init__(self) -> None:
        self.up = False
        self.lose_first_answer_of = 2  # store batch 2 but answer 500, as if the reply was lost
        self.stored: dict[int, bytes] = {}
        self.posts: Counter[int] = Counter()
        self.refused = 0

    async def batches(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.up:
            self.refused += 1
            return web.json_response({"error": "down"}, status=503)
        batch = decode_batch(body)
        seq = batch.header.seq
        self.posts[seq] += 1
        if seq in self.stored:
            assert self.stored[seq] == body  # an idempotent re-upload is byte-identical
            return web.json_response({"seq": seq, "duplicate": True})
        self.stored[seq] = body
        if seq == self.lose_first_answer_of:
            return web.json_response({"error": "reply lost"}, status=500)
        return web.json_response({"seq": seq}, status=201)


async def test_batches_queue_while_down_then_upload_once(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    coordinator = Coordinator()
    app = web.Application()
    app.add_routes([web.post("/api/batches", coordinator.batches)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        data = gateway_config(
            tmp_path,
            port=mosquitto.port,
            prefix=topic_prefix,
            coordinator=f"http://127.0.0.1:{port}/api",
            batch={"every_s": 3600},  # batches only when the test seals one
        )
        async with (
            running_gateway(load(data, tmp_path)) as gw,
            MeterStandIn("m-a", port=mosquitto.port, prefix=topic_prefix).running(),
        ):
            api = Api(gw.api_port)

            async def trades_are(n: int) -> bool:
                return (await gw.disk(gw.ledger.totals))["trades"] == n

            async def queued_at_least(n: int, empty: bool = False) -> bool:
                outbox = await gw.disk(gw.ledger.outbox)
                if empty:
                    return outbox == []
                return len(outbox) >= n and coordinator.refused >= n

            await eventually(lambda: "m-a" in gw.core.telemetry)
            await api.call(
                "POST", "/v1/orders", "alice", {"side": "sell", "wh": 3000, "price": 100}
            )

            async def trade_and_seal(n: int) -> None:
                """The n-th trade (1-based), settled, then sealed into batch n."""
                await api.call(
                    "POST", "/v1/orders", "bob", {"side": "buy", "wh": 100, "price": 300}
                )
                await eventually(lambda: trades_are(n))
                assert await gw.seal("test") == n
                assert not (await gw.disk(gw.ledger.unbatched))[0]

            for n in range(1, 4):  # trading goes on while the uplink is down
                await trade_and_seal(n)
            await eventually(lambda: queued_at_least(3))
            queued = len(await gw.disk(gw.ledger.outbox))
            coordinator.up = True
            await eventually(lambda: queued_at_least(0, empty=True), timeout=15)
            # Nothing already accepted is sent again: the uploader takes the outbox in seq
            # order on each pass, so once a batch sealed now is stored, a pass that would have
            # re-sent an earlier batch has run.
            await trade_and_seal(4)
            await eventually(lambda: queued_at_least(0, empty=True), timeout=15)
            last = await gw.disk(gw.ledger.last_batch)
            assert last is not None
            settled = {t["id"] for t in await gw.disk(gw.ledger.trades_of, "bob")}
            log = list(gw.orderlog.read())
            sealed = last.seq
    finally:
        await runner.cleanup()

    assert queued == 3
    assert sorted(coordinator.stored) == list(range(1, sealed + 1))
    # Each batch was accepted once; only the one whose reply was "lost" was sent twice.
    assert coordinator.posts == {seq: 2 if seq == 2 else 1 for seq in coordinator.stored}
    previous = None
    trades: list[str] = []
    per_batch: list[int] = []
    slices: list[dict] = []
    for seq in sorted(coordinator.stored):
        batch = decode_batch(coordinator.stored[seq])
        check_batch(batch, public_key=SIGNING_KEY.public_key(), prev=previous)
        previous = batch
        trades += [t.id for t in batch.trades]
        per_batch += [len(batch.trades)] if batch.trades else []
        slices += [dict(e) for e in batch.log]
    assert sorted(trades) == sorted(settled) and len(trades) == len(set(trades)) == 4
    assert per_batch == [1, 1, 1, 1]  # each trade sealed before the next was made
    assert slices == log[: len(slices)]
