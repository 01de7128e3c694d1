"""A deliberately naive model of the market rules, for the property tests to check the engine.

It keeps every order in one dict and, for each match, scans all of them for the best eligible
counterpart: slow and obviously faithful to docs/market.md, with none of the engine's data
structures (sorted price keys, deques, heaps, lazy deletion). It assumes the events are valid:
the tests feed it only events the engine accepted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from edge.market import Cancel, CloseInterval, Order, Prune, ReferencePrice, Void


@dataclass
class MOrder:
    id: str
    owner: str
    buy: bool
    price: int
    wh: int
    interval: int
    seq: int
    ts: int
    rem: int
    status: str = "open"
    excl: set[str] = field(default_factory=set)


class Model:
    def __init__(self, policy: str = "price-time", max_matches: int | None = None) -> None:
        self.value_time = policy == "value-time"
        self.limit = max_matches or sys.maxsize
        self.orders: dict[str, MOrder] = {}
        self.trades: list[dict[str, Any]] = []  # the trades not pruned, in execution order
        self.trade_count = 0  # every trade ever made
        self.voided: set[str] = set()
        self.closed: set[int] = set()
        self.ref = 0
        self.seq = 0

    def priority(self, o: MOrder) -> tuple[int, ...]:
        price_key = -o.price if o.buy else o.price
        if self.value_time:
            return (price_key, -o.rem, o.seq)
        return (price_key, o.seq)

    def resting(self, interval: int, buy: bool) -> list[MOrder]:
        found = [
            o
            for o in self.orders.values()
            if o.status == "open" and o.interval == interval and o.buy == buy
        ]
        return sorted(found, key=self.priority)

    def take(self, o: MOrder, ts: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while o.rem > 0 and len(out) < self.limit:
            if o.buy and o.price < self.ref:
                break
            candidates = [
                r
                for r in self.resting(o.interval, not o.buy)
                if r.owner != o.owner
                and r.id not in o.excl
                and (r.price <= o.price if o.buy else r.price >= max(o.price, self.ref))
            ]
            if not candidates:
                break
            r = candidates[0]
            q = min(o.rem, r.rem)
            maker = r if r.seq < o.seq else o
            buy, sell = (o, r) if o.buy else (r, o)
            trade = {
                "id": f"t{self.trade_count + 1}",
                "buy": buy.id,
                "sell": sell.id,
                "buyer": buy.owner,
                "seller": sell.owner,
                "wh": q,
                "price": maker.price,
                "interval": o.interval,
                "ts": ts,
                "maker": "buy" if maker.buy else "sell",
            }
            self.trade_count += 1
            self.trades.append(trade)
            out.append(trade)
            o.rem -= q
            r.rem -= q
            if r.rem == 0:
                r.status = "filled"
        if o.rem == 0:
            o.status = "filled"
        return out

    def submit(self, ev: Any) -> list[dict[str, Any]]:
        if isinstance(ev, Order):
            self.seq += 1
            o = MOrder(
                ev.id,
                ev.owner,
                ev.side == "buy",
                ev.price,
                ev.wh,
                ev.interval,
                self.seq,
                ev.ts,
                ev.wh,
            )
            self.orders[o.id] = o
            return self.take(o, ev.ts)
        if isinstance(ev, Cancel):
            o = self.orders[ev.id]
            if o.status == "open":
                o.status = "cancelled"
            return []
        if isinstance(ev, CloseInterval):
            self.closed.add(ev.interval)
            for o in self.orders.values():
                if o.interval == ev.interval and o.status == "open":
                    o.status = "expired"
            return []
        if isinstance(ev, ReferencePrice):
            old, self.ref = self.ref, ev.price
            out: list[dict[str, Any]] = []
            if ev.price < old:
                intervals = sorted({o.interval for o in self.orders.values() if o.status == "open"})
                for interval in intervals:
                    unblocked = [
                        o for o in self.resting(interval, True) if ev.price <= o.price < old
                    ]
                    for o in unblocked:
                        if o.status == "open":
                            out += self.take(o, ev.ts)
            return out
        if isinstance(ev, Void):
            t = next(t for t in self.trades if t["id"] == ev.trade)
            self.voided.add(ev.trade)
            buy, sell = self.orders[t["buy"]], self.orders[t["sell"]]
            for o, other in ((buy, sell), (sell, buy)):
                o.rem += t["wh"]
                o.excl.add(other.id)
                if o.status == "filled":
                    o.status = "expired" if o.interval in self.closed else "open"
            out = []
            for o in sorted((buy, sell), key=lambda x: x.seq):
                if o.status == "open":
                    out += self.take(o, ev.ts)
            return out
        if isinstance(ev, Prune):
            k = ev.interval
            self.orders = {oid: o for oid, o in self.orders.items() if o.interval > k}
            gone = {t["id"] for t in self.trades if t["interval"] <= k}
            self.trades = [t for t in self.trades if t["id"] not in gone]
            self.voided -= gone
            self.closed = {i for i in self.closed if i > k}
            return []
        raise TypeError(ev)
