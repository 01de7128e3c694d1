"""Sealing is single-flight: on a fast clock with a slow disk, the batch timer never starts a
second seal over a log slice already being sealed, and seals asked for at once run in turn.
Every batch's log slice continues the previous one (what the coordinator checks as
``chain.log``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from edge.batch import check_batch, decode_batch
from tests.brokers import Broker
from tests.integration.gateway_harness import (
    SIGNING_KEY,
    Api,
    eventually,
    gateway_config,
    load,
    now_ms,
    running_gateway,
)


async def test_seals_never_overlap_on_a_fast_clock(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    start, t0 = now_ms(), time.monotonic()

    def fast_clock() -> int:  # 100 simulated seconds per real second
        return start + int((time.monotonic() - t0) * 100_000)

    data = gateway_config(tmp_path, port=mosquitto.port, prefix=topic_prefix, batch={"every_s": 1})
    async with running_gateway(load(data, tmp_path), clock=fast_clock, tick_s=0.02) as gw:
        unbatched = gw.ledger.unbatched
        calls = 0

        def slow_unbatched() -> Any:  # a disk slower than several timer ticks
            nonlocal calls
            calls += 1
            time.sleep(0.15)
            return unbatched()

        gw.ledger.unbatched = slow_unbatched  # type: ignore[method-assign]
        api = Api(gw.api_port)
        for n in range(6):
            status, _ = await api.call(
                "POST", "/v1/orders", "bob", {"side": "buy", "wh": 10 + n, "price": 50}
            )
            assert status == 201
            if n % 2:  # seals asked for at once, while the timer seals too
                await asyncio.gather(gw.seal("a"), gw.seal("b"), gw.seal("c"))
            await asyncio.sleep(0.1)

        async def all_sealed() -> bool:
            last = await gw.disk(gw.ledger.last_batch)
            return last is not None and last.log_last == gw.orderlog.last_seq

        await eventually(all_sealed, timeout=20)
        bodies = [b.body for b in await gw.disk(gw.ledger.outbox)]  # no coordinator: all queued
        log = list(gw.orderlog.read())

    assert calls >= 3
    batches = [decode_batch(body) for body in bodies]
    assert [b.header.seq for b in batches] == list(range(1, len(batches) + 1))
    previous = None
    slices: list[dict[str, Any]] = []
    for batch in batches:
        check_batch(batch, public_key=SIGNING_KEY.public_key(), prev=previous)  # chain, log
        previous = batch
        slices += [dict(e) for e in batch.log]
    assert slices == log[: len(slices)] and len(slices) == len(log)
