"""Test batches made by the real pipeline: edge.market matching, edge.zk proofs, edge.batch sealing.

:class:`GatewaySim` plays a gateway's part the way edge.gateway does it (edge/gateway/core.py):
order-log records ``{"seq": n, **event_to_dict(event)}``, trades from the market engine, for each
settled trade edge.market's settlement and a real commitment and at-least range proof bound to
:func:`edge.batch.proof_context`, then :func:`edge.batch.seal_batch` with a fresh Ed25519 key.
Shared by the coordinator's unit, integration and e2e tests and by bench/coordinator.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.verify import GatewayKey
from edge.batch import (
    GENESIS_HASH,
    Batch,
    DeliveryRecord,
    TradeRecord,
    batch_hash,
    canonical_bytes,
    proof_context,
    seal_batch,
)
from edge.market import (
    Cancel,
    Engine,
    Event,
    MarketParams,
    Order,
    Rates,
    Trade,
    Void,
    event_to_dict,
    settle,
)
from edge.zk import commit, prove_at_least

T0 = 1_700_000_000_000
CAPACITY_WH = 10_000
RESERVE_BP = 2000


def home_meter(gateway: str, home: str) -> str:
    """The meter :class:`GatewaySim`'s registration lists for ``home-<i>``: ``<gateway>-m<i>``."""
    return f"{gateway}-m{home.rsplit('-', 1)[-1]}"


def make_record(
    gateway: str,
    trade: Trade,
    rates: Rates,
    soc_bp: int = 9000,
    reserved_bp: int = 0,
    settled_ts: int = T0,
    *,
    meter: str | None = None,
) -> TradeRecord:
    """A settled trade as edge.gateway's core records it, with a real commitment and proof;
    ``meter`` the seller's (default :func:`home_meter`)."""
    meter = meter if meter is not None else home_meter(gateway, trade.seller)
    threshold = RESERVE_BP + -(-trade.wh * 10_000 // CAPACITY_WH)
    context = proof_context(
        gateway=gateway,
        trade=trade.id,
        seller=trade.seller,
        meter=meter,
        wh=trade.wh,
        interval=trade.interval,
    )
    commitment, opening = commit(soc_bp)
    proof = prove_at_least(opening, threshold=threshold, reserved=reserved_bp, context=context)
    return TradeRecord.of(
        trade,
        settle(trade, rates),
        meter=meter,
        settled_ts=settled_ts,
        commitment=commitment,
        proof=proof,
        soc_threshold_bp=threshold,
        soc_reserved_bp=reserved_bp,
    )


def _record_args(args: tuple[str, Trade, Rates]) -> TradeRecord:
    return make_record(*args)


Prover = Callable[[Sequence[tuple[str, Trade, Rates]]], list[TradeRecord]]


def prove_serially(jobs: Sequence[tuple[str, Trade, Rates]]) -> list[TradeRecord]:
    return [_record_args(job) for job in jobs]


class GatewaySim:
    """A gateway's log, engine and batch chain, driven by the test.

    ``pair()`` logs a sell and a crossing buy (one trade); ``void()`` logs a void; ``seal()``
    settles the chosen matched trades (default: all) and seals the next batch.
    """

    def __init__(
        self,
        *,
        gateway: str = "gw-a",
        key: Ed25519PrivateKey | None = None,
        rates: Rates | None = None,
        params: MarketParams | None = None,
        homes: int = 6,
        meters: Iterable[str] | None = None,
        prover: Prover = prove_serially,
    ) -> None:
        self.gateway = gateway
        self.key = key if key is not None else Ed25519PrivateKey.generate()
        self.rates = rates if rates is not None else Rates()
        self.engine = Engine(params=params)
        self.homes = [f"home-{i}" for i in range(homes)]
        self.meters = frozenset(
            meters if meters is not None else (f"{gateway}-m{i}" for i in range(homes))
        )
        self.prover = prover
        self.log: list[dict[str, Any]] = []
        self.matched: dict[str, Trade] = {}
        self.settled: dict[str, TradeRecord] = {}
        self.batches: list[Batch] = []
        self.batched_log = 0
        self.ts = T0
        self._n = 0

    # -------------------------------------------------------------- identity

    @property
    def registry_key(self) -> GatewayKey:
        return GatewayKey(id=self.gateway, public_key=self.public_raw, meters=self.meters)

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def registration(self, created_at: str = "2026-11-21T00:00:00Z") -> dict[str, Any]:
        """The registration ``ngrid provision gateway`` writes (edge.gateway.registration)."""
        from edge.gateway.registration import registration

        return registration(
            self.key, gateway_id=self.gateway, meters=sorted(self.meters), created_at=created_at
        )

    # -------------------------------------------------------------- the log

    def event(self, event: Event) -> list[Trade]:
        self.log.append({"seq": len(self.log) + 1, **event_to_dict(event)})
        trades = self.engine.submit(event)
        for t in trades:
            self.matched[t.id] = t
        return trades

    def order(self, owner: str, side: str, wh: int, price: int) -> tuple[str, list[Trade]]:
        self.ts += 1
        oid = f"o{len(self.log) + 1}"
        return oid, self.event(Order(oid, owner, side, wh, price, self.ts, 0))

    def pair(self, *, wh: int | None = None, price: int | None = None) -> Trade:
        """A sell then a crossing buy from another home: one trade at the sell's price."""
        n = self._n
        self._n += 1
        seller = self.homes[n % len(self.homes)]
        buyer = self.homes[(n + 1) % len(self.homes)]
        wh = wh if wh is not None else 100 + (n * 37) % 400
        price = price if price is not None else 250 + (n * 13) % 100
        self.order(seller, "sell", wh, price)
        _, trades = self.order(buyer, "buy", wh, price + 5)
        assert len(trades) == 1, trades
        return trades[0]

    def rest(self) -> str:
        """A buy that rests on the book (nothing crosses it), then nothing else."""
        oid, trades = self.order(self.homes[0], "buy", 50, 1)
        assert not trades
        return oid

    def cancel(self, order_id: str) -> None:
        self.ts += 1
        self.event(Cancel(order_id, self.ts))

    def void(self, trade_id: str) -> list[Trade]:
        """Void a trade (its seller's meter did not lock), then cancel both orders' rests as
        the gateway cancels a seller that cannot cover (so the book stays as it was)."""
        trade = self.engine.trade(trade_id)
        assert trade is not None
        self.ts += 1
        self.matched.pop(trade_id, None)
        out = self.event(Void(trade_id, self.ts))
        for order_id in (trade.sell, trade.buy):
            state = self.engine.order(order_id)
            if state is not None and state.status == "open":
                self.cancel(order_id)
        return out

    # -------------------------------------------------------------- batches

    def records(self, trades: Sequence[Trade]) -> list[TradeRecord]:
        return self.prover([(self.gateway, t, self.rates) for t in trades])

    def seal(
        self,
        *,
        settle_ids: Iterable[str] | None = None,
        deliveries: Sequence[DeliveryRecord] = (),
        records: Sequence[TradeRecord] | None = None,
    ) -> Batch:
        """Settle ``settle_ids`` (default: every matched trade) and seal the next batch."""
        if records is None:
            ids = list(settle_ids) if settle_ids is not None else list(self.matched)
            trades = [self.matched[i] for i in ids]
            records = self.records(trades)
        for r in records:
            self.matched.pop(r.id, None)
            self.settled[r.id] = r
        prev = self.batches[-1] if self.batches else None
        first = self.batched_log + 1
        self.ts += 1
        batch = seal_batch(
            gateway=self.gateway,
            seq=len(self.batches) + 1,
            prev_hash=batch_hash(prev) if prev else GENESIS_HASH,
            created_ts=self.ts,
            log_first=first,
            trades=records,
            deliveries=deliveries,
            log=self.log[first - 1 :],
            key=self.key,
        )
        self.batched_log = len(self.log)
        self.batches.append(batch)
        return batch

    def delivery(self, trade_id: str, delivered_wh: int | None = None) -> DeliveryRecord:
        wh = self.settled[trade_id].wh
        got = wh if delivered_wh is None else delivered_wh
        return DeliveryRecord(
            trade=trade_id,
            status="delivered" if got >= wh else "defaulted",
            wh=wh,
            delivered_wh=got,
            ts=self.ts,
        )


def resign(batch: Batch, key: Ed25519PrivateKey, **header: Any) -> Batch:
    """``batch`` with header fields replaced and the header signed again with ``key``.

    A dishonest gateway signs whatever it sends: tampering tests re-sign, so that the finding
    they expect is the one the tampering causes, not a broken signature.
    """
    new_header = dataclasses.replace(batch.header, **header)
    return dataclasses.replace(
        batch, header=new_header, signature=key.sign(canonical_bytes(new_header.to_json()))
    )


def reseal(batch: Batch, key: Ed25519PrivateKey, **contents: Any) -> Batch:
    """``batch`` with trades, deliveries or log replaced, sealed again (digests, totals, sig)."""
    trades = contents.get("trades", batch.trades)
    deliveries = contents.get("deliveries", batch.deliveries)
    log = contents.get("log", batch.log)
    h = batch.header
    return seal_batch(
        gateway=h.gateway,
        seq=h.seq,
        prev_hash=contents.get("prev_hash", h.prev_hash),
        created_ts=h.created_ts,
        log_first=h.log_first,
        trades=trades,
        deliveries=deliveries,
        log=log,
        key=key,
    )
