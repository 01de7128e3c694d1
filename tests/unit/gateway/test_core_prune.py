"""The gateway core forgets finished intervals: ``Prune`` once every trade of a closed interval is
voided or sealed in a batch, never before; a snapshot saved with it; restart from that snapshot
and the log's tail (docs/gateway.md, "Memory")."""

from __future__ import annotations

from typing import Any

import pytest

from edge.gateway.config import GatewayConfig
from edge.gateway.core import (
    Append,
    Effect,
    GatewayCore,
    LogNotKept,
    Prove,
    SaveSnapshot,
)
from edge.gateway.meterwire import WireCodec
from tests.unit.gateway.conftest import INTERVAL_MS, KEY_A, T0, ack, make_config
from tests.unit.gateway.test_core import log_ops, new_core, of, prove, report

NEXT = T0 - 60_000 + INTERVAL_MS  # the start of the interval after T0's


class Recorder:
    """Collects the order-log records of every call, as the shell appends them."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, effects: list[Effect]) -> list[Effect]:
        self.records.extend(r for a in of(effects, Append) for r in a.records)
        return effects


def settle_one(core: GatewayCore, log: Recorder) -> tuple[str, str]:
    """alice sells 1000 Wh, bob buys 600 of it: t1, locked, acked and settled. Returns the two
    order ids (sell, buy)."""
    log(report(core, "m-a", seq=1, now=T0, soc_bp=8000, export_wh=5000))
    sell, e = core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    log(e)
    buy, e = core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=T0 + 1)
    log(e)
    (p,) = of(e, Prove)
    commitment, proof = prove(p)
    log(core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 10))
    log(
        core.on_message(
            topic="ngrid/gw1/m-a/ack", payload=ack(KEY_A, "m-a", seq=2, trade="t1"), now=T0 + 20
        )
    )
    assert "t1" in core.locks
    return sell, buy


def test_a_closed_interval_is_pruned_once_its_trades_are_sealed(config: GatewayConfig) -> None:
    core, log = new_core(config), Recorder()
    sell, buy = settle_one(core, log)
    interval = core.interval
    closing = log(core.tick(now=NEXT))
    assert "close" in log_ops(closing) and "prune" not in log_ops(closing)
    assert core.prunable() is None  # t1 is settled but in no batch yet
    later, e = core.place(home="bob", side="buy", wh=50, price=90, interval=None, now=NEXT + 1)
    log(e)
    assert log_ops(log(core.tick(now=NEXT + 2))) == []  # still nothing to prune
    core.begin_seal()
    core.batch_sealed(log_last=core.log_seq, trades=("t1",), now=NEXT + 3)
    assert core.prunable() == interval
    effects = log(core.tick(now=NEXT + 4))
    (record,) = [r for a in of(effects, Append) for r in a.records]
    assert {k: record[k] for k in ("op", "interval", "seq")} == {
        "op": "prune",
        "interval": interval,
        "seq": core.log_seq,
    }
    (saved,) = of(effects, SaveSnapshot)
    assert saved.snapshot.log_seq == core.log_seq
    # The interval's orders and its trade are forgotten; the next interval's order is not.
    assert core.engine.order(sell) is None and core.engine.order(buy) is None
    assert core.engine.trade("t1") is None and core.engine.trade_count == 1
    assert core.orders_of("alice") == []
    assert [o["id"] for o in core.orders_of("bob")] == [later]
    assert "alice" not in core.home_orders
    # The lock awaiting its delivery is the core's own record, with what it needs of the trade:
    # pruning leaves it.
    lock = core.locks["t1"]
    assert (lock.seller, lock.buyer, lock.wh, lock.price) == ("alice", "bob", 600, 120)
    assert log_ops(core.tick(now=NEXT + 5)) == []  # pruned once

    # A restart from the saved snapshot and the log after it equals a replay of the whole log.
    log(core.place(home="carol", side="buy", wh=20, price=80, interval=None, now=NEXT + 6)[1])

    def restored(snapshot: Any, log_base: int) -> GatewayCore:
        again, effects = GatewayCore.restore(
            config=config,
            codec=WireCodec(),
            log=log.records[log_base:],
            log_base=log_base,
            settled={"t1"},
            locks=[],
            batched_log_seq=saved.snapshot.log_seq - 1,
            unbatched=(),
            now=NEXT + 7,
            snapshot=snapshot,
        )
        assert effects == []
        return again

    full = restored(None, 0)
    fast = restored(saved.snapshot, saved.snapshot.log_seq)
    assert fast.replayed_from == saved.snapshot.log_seq and full.replayed_from == 0
    assert fast.engine.snapshot() == full.engine.snapshot() == core.engine.snapshot()
    assert fast.home_orders == full.home_orders == core.home_orders
    assert fast.log_seq == full.log_seq == core.log_seq == len(log.records)


def test_a_pending_trade_holds_back_the_prune(config: GatewayConfig) -> None:
    core, log = new_core(config), Recorder()
    log(report(core, "m-a", seq=1, now=NEXT - 2000, soc_bp=8000))
    log(core.place(home="alice", side="sell", wh=500, price=120, interval=None, now=NEXT - 2000)[1])
    _, e = core.place(home="bob", side="buy", wh=500, price=150, interval=None, now=NEXT - 1999)
    log(e)
    assert "t1" in core.pending  # locked, no ack yet
    assert "prune" not in log_ops(log(core.tick(now=NEXT)))  # closed, but t1 is undecided
    assert core.prunable() is None
    deadline = core.pending["t1"].deadline
    assert deadline is not None
    effects = log(core.tick(now=deadline))  # no ack in time: t1 voided, then the prune
    assert log_ops(effects) == ["void", "prune"]
    assert core.engine.trade("t1") is None


def test_an_unbatched_trade_from_the_ledger_holds_back_the_prune(config: GatewayConfig) -> None:
    core, log = new_core(config), Recorder()
    settle_one(core, log)
    interval = core.interval
    log(core.tick(now=NEXT))  # closes the interval
    again, _ = GatewayCore.restore(
        config=config,
        codec=WireCodec(),
        log=log.records,
        settled={"t1"},
        locks=[],
        batched_log_seq=0,
        unbatched=("t1",),
        now=NEXT + 1,
    )
    assert again.unbatched == {"t1": interval} and again.prunable() is None
    assert log_ops(again.tick(now=NEXT + 2)) == []
    again.batch_sealed(log_last=again.log_seq, trades=("t1",), now=NEXT + 3)
    assert log_ops(again.tick(now=NEXT + 4)) == ["prune"]


def test_restore_asks_for_the_whole_log_when_it_cannot_start_from_the_snapshot(
    config: GatewayConfig,
) -> None:
    core, log = new_core(config), Recorder()
    log(core.place(home="bob", side="buy", wh=50, price=90, interval=None, now=T0)[1])
    log(core.place(home="bob", side="buy", wh=60, price=90, interval=None, now=T0 + 1)[1])
    kwargs: dict[str, Any] = dict(
        config=config,
        codec=WireCodec(),
        settled=set(),
        locks=[],
        batched_log_seq=0,
        unbatched=(),
        now=T0 + 2,
    )
    with pytest.raises(LogNotKept, match="kept from record 2"):
        GatewayCore.restore(log=log.records[1:], log_base=1, **kwargs)  # no snapshot
    ahead = core.snapshot()
    with pytest.raises(LogNotKept):  # a snapshot past the end of the log is not used
        GatewayCore.restore(log=log.records[1:1], log_base=1, snapshot=ahead, **kwargs)
    again, _ = GatewayCore.restore(log=log.records, snapshot=ahead, **kwargs)
    assert again.engine.snapshot() == core.engine.snapshot()


def test_a_snapshot_is_saved_every_snapshot_records() -> None:
    core = new_core(make_config(ledger={"snapshot_records": 3}))
    core.place(home="bob", side="buy", wh=50, price=90, interval=None, now=T0)
    core.place(home="bob", side="buy", wh=60, price=90, interval=None, now=T0 + 1)
    assert of(core.tick(now=T0 + 2), SaveSnapshot) == []  # 2 records since the start
    core.place(home="bob", side="buy", wh=70, price=90, interval=None, now=T0 + 3)
    (saved,) = of(core.tick(now=T0 + 4), SaveSnapshot)
    assert saved.snapshot.log_seq == core.log_seq == 3
    assert of(core.tick(now=T0 + 5), SaveSnapshot) == []  # counted again from record 3
    assert make_config().snapshot_records == 100_000  # the default
