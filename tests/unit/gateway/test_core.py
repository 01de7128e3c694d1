"""The gateway core: telemetry checks, matching to lock to settlement, voids, delivery, restart."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edge.batch import proof_context
from edge.gateway.config import GatewayConfig
from edge.gateway.core import (
    Append,
    Deliver,
    Effect,
    GatewayCore,
    OrderRejected,
    Prove,
    Publish,
    Seal,
    Settle,
    reference_price,
)
from edge.gateway.meterwire import WireCodec
from edge.market import Rates, settle
from edge.wire import parse_command
from edge.zk import verify_at_least
from tests.unit.gateway.conftest import (
    INTERVAL_MS,
    KEY_A,
    KEY_B,
    T0,
    ack,
    delivery,
    make_config,
    telemetry,
)

PREFIX = "ngrid/gw1"


def new_core(config: GatewayConfig, now: int = T0) -> GatewayCore:
    core, effects = GatewayCore.restore(
        config=config,
        codec=WireCodec(),
        log=[],
        settled=set(),
        locks=[],
        batched_log_seq=0,
        unbatched=(),
        now=now,
    )
    assert effects == []
    return core


def report(core: GatewayCore, meter: str, *, seq: int, now: int, **kw: Any) -> list[Effect]:
    key = KEY_A if meter == "m-a" else KEY_B
    payload = telemetry(key, meter, seq=seq, ts=kw.pop("ts", now), **kw)
    return core.on_message(topic=f"{PREFIX}/{meter}/state", payload=payload, now=now)


def of(effects: list[Effect], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def log_ops(effects: list[Effect]) -> list[str]:
    return [r["op"] for e in of(effects, Append) for r in e.records]


def prove(effect: Prove) -> tuple[bytes, bytes]:
    from edge.gateway.service import make_proof

    return make_proof(effect.soc_bp, effect.threshold_bp, effect.reserved_bp, effect.context)


def matched(core: GatewayCore, now: int = T0) -> tuple[list[Effect], Prove]:
    report(core, "m-a", seq=1, now=now, soc_bp=8000)
    _, e1 = core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=now)
    _, e2 = core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=now + 1)
    assert of(e1, Prove) == []
    (p,) = of(e2, Prove)
    return e2, p


def test_order_to_lock_to_settlement(prove_first: GatewayConfig) -> None:
    config = prove_first
    core = new_core(config)
    effects, p = matched(core)
    assert log_ops(effects) == ["order"]
    # Proof first, then the lock command.
    assert of(effects, Publish) == []
    assert p.threshold_bp == 2000 + 600  # reserve + 600 Wh of a 10 kWh battery
    assert p.reserved_bp == 0
    assert p.context == proof_context(
        gateway="gw1", trade="t1", seller="alice", meter="m-a", wh=600, interval=core.interval
    )
    commitment, proof = prove(p)
    lock_effects = core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 40)
    (lock,) = of(lock_effects, Publish)
    assert lock.topic == f"{PREFIX}/m-a/cmd" and lock.kind == "lock"
    cmd = parse_command(lock.payload, key=KEY_A, meter="m-a")  # MAC checked by edge.wire
    assert (cmd.kind, cmd.trade, cmd.wh) == ("lock", "t1", 600)
    assert cmd.exp == (T0 + 40 + config.locks.timeout_ms) // 1000
    assert (cmd.start, cmd.end) == (core.interval * 900, (core.interval + 1) * 900)
    settled = core.on_message(
        topic=f"{PREFIX}/m-a/ack", payload=ack(KEY_A, "m-a", seq=2, trade="t1"), now=T0 + 50
    )
    (s,) = of(settled, Settle)
    expected = settle(core.engine.trade("t1"), Rates(interval_s=900))
    assert s.record.wh == 600 and s.record.price == 120  # the resting sell's price
    assert (s.record.buyer, s.record.seller) == ("bob", "alice")
    assert s.record.meter == "m-a"  # the seller's meter, the one that locked and was proven
    assert s.record.value == expected.value
    assert s.record.buyer_pays == s.record.seller_receives + s.record.commission + s.record.grid_fee
    assert s.record.tokens_burned == 600 and s.record.carbon_mg == 600 * 820
    assert verify_at_least(
        s.record.commitment,
        threshold=s.record.soc_threshold_bp,
        reserved=s.record.soc_reserved_bp,
        context=p.context,
        proof=s.record.proof,
    )
    assert "t1" in core.locks and "t1" not in core.pending


def test_lock_sent_before_proof_by_default(config: GatewayConfig) -> None:
    core = new_core(config)
    effects, p = matched(core)
    assert [e.kind for e in of(effects, Publish)] == ["lock"]
    # An ack before the proof is held until the proof is there.
    early = core.on_message(
        topic=f"{PREFIX}/m-a/ack", payload=ack(KEY_A, "m-a", seq=2, trade="t1"), now=T0 + 5
    )
    assert of(early, Settle) == []
    commitment, proof = prove(p)
    later = core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 45)
    assert len(of(later, Settle)) == 1


def test_append_comes_before_the_lock_command() -> None:
    core = new_core(make_config(locks={"prove_before_lock": False}))
    effects, _ = matched(core)
    kinds = [type(e).__name__ for e in effects if isinstance(e, Append | Publish)]
    assert kinds.index("Append") < kinds.index("Publish")


def test_lock_timeout_voids_and_restores_priority(prove_first: GatewayConfig) -> None:
    core = new_core(prove_first)
    _, p = matched(core)
    commitment, proof = prove(p)
    core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 10)
    # Another buyer at the same price arrives later; it should stay behind bob after the void.
    core.place(home="carol", side="buy", wh=100, price=110, interval=None, now=T0 + 20)
    assert of(core.tick(now=T0 + 10 + prove_first.locks.timeout_ms - 1), Publish) == []
    effects = core.tick(now=T0 + 10 + prove_first.locks.timeout_ms)
    assert "void" in log_ops(effects)
    assert [e.kind for e in of(effects, Publish)] == ["release"]
    assert core.voids["timeout"] == 1
    assert core.engine.is_voided("t1")
    bob = core.orders_of("bob")[0]
    alice = core.orders_of("alice")[0]
    assert (bob["remaining"], bob["status"]) == (600, "open")
    assert alice["remaining"] == 1000
    book = [o.id for o in core.engine.book(core.interval, "buy")]
    assert book.index(bob["id"]) < book.index(core.orders_of("carol")[0]["id"])
    # A late ack of the voided trade is ignored and the meter told to release.
    late = core.on_message(
        topic=f"{PREFIX}/m-a/ack", payload=ack(KEY_A, "m-a", seq=3, trade="t1"), now=T0 + 9000
    )
    assert of(late, Settle) == [] and [e.kind for e in of(late, Publish)] == ["release"]


def test_refused_lock_voids(config: GatewayConfig) -> None:
    core = new_core(config)
    _, p = matched(core)
    commitment, proof = prove(p)
    core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 10)
    effects = core.on_message(
        topic=f"{PREFIX}/m-a/ack",
        payload=ack(KEY_A, "m-a", seq=2, trade="t1", ok=False, reason="insufficient_reserve"),
        now=T0 + 20,
    )
    assert "void" in log_ops(effects) and of(effects, Settle) == []
    assert core.voids["refused"] == 1


@pytest.mark.parametrize(
    ("reason", "cancelled"),
    [("too_many_locks", True), ("insufficient_reserve", True), ("expired", False)],
)
def test_a_full_meter_refusing_a_lock_cancels_the_rest_of_the_sell(
    config: GatewayConfig, reason: str, cancelled: bool
) -> None:
    # A meter holding all the locks it can refuses the next; rematching the sell order's rest
    # with the next buyer would only be refused again (a storm of voids at 384 homes).
    core = new_core(config)
    matched(core)  # alice sells 1000, bob buys 600: t1
    core.place(home="carol", side="buy", wh=300, price=150, interval=None, now=T0 + 5)
    effects = core.on_message(
        topic=f"{PREFIX}/m-a/ack",
        payload=ack(KEY_A, "m-a", seq=2, trade="t1", ok=False, reason=reason),
        now=T0 + 20,
    )
    alice = core.orders_of("alice")[0]
    if cancelled:
        assert log_ops(effects) == ["void", "cancel"]
        assert alice["status"] == "cancelled"
        assert core.orders_of("bob")[0]["status"] == "open"  # bob waits for another seller
    else:
        assert log_ops(effects)[0] == "void" and "cancel" not in log_ops(effects)
        assert alice["status"] != "cancelled"
    assert core.voids["refused"] == 1


def test_the_gateway_asks_a_meter_for_no_more_locks_than_it_holds(config: GatewayConfig) -> None:
    # alice's meter holds at most 8 locks (the firmware's MAX_LOCKS, below): the 9th trade of
    # her sell order is voided at the gateway and the order's rest cancelled, never sent.
    core = new_core(config)
    report(core, "m-a", seq=1, now=T0, soc_bp=9000)  # 7,000 Wh above the reserve: SoC is not it
    core.place(home="alice", side="sell", wh=5000, price=120, interval=None, now=T0)
    proved = []
    for i in range(10):
        _, effects = core.place(home="bob", side="buy", wh=100, price=150, interval=None, now=T0)
        proved += [p.trade for p in of(effects, Prove)]
        if i == 8:
            assert log_ops(effects) == ["order", "void", "cancel"]
    assert proved == [f"t{n}" for n in range(1, 9)]
    assert core.voids["meter_full"] == 1
    assert core.orders_of("alice")[0]["status"] == "cancelled"
    assert [o["status"] for o in core.orders_of("bob")][8:] == ["open", "open"]


def test_the_gateway_and_the_firmware_agree_on_a_meters_lock_capacity() -> None:
    from edge.wire import METER_MAX_LOCKS
    from hil.virtual.firmware import import_firmware

    assert import_firmware("ngmeter.locks").MAX_LOCKS == METER_MAX_LOCKS == 8


@pytest.mark.parametrize(
    ("field", "value"),
    [("price", 10**16), ("price", 1_000_001), ("wh", 10_000_001), ("interval", 2**63)],
)
def test_numbers_past_the_markets_bounds_are_refused_before_anything_is_logged(
    config: GatewayConfig, field: str, value: int
) -> None:
    # A buy at price 10**16 once reached settlement and crashed the gateway there (SQLite
    # integer overflow), again after every restart (issue 17). Refused now with a 400.
    core = new_core(config)
    order = {"side": "buy", "wh": 1, "price": 10, "interval": None} | {field: value}
    with pytest.raises(OrderRejected) as err:
        core.place(home="bob", now=T0, **order)  # type: ignore[arg-type]
    assert err.value.status == 400 and "must be at most" in str(err.value)
    assert core.log_seq == 0 and core.orders_of("bob") == []


def test_seller_below_reserve_is_voided_and_sell_cancelled(config: GatewayConfig) -> None:
    core = new_core(config)
    report(core, "m-a", seq=1, now=T0, soc_bp=2500)  # 500 Wh above the 20 % reserve
    core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    _, effects = core.place(home="bob", side="buy", wh=600, price=200, interval=None, now=T0 + 1)
    assert log_ops(effects) == ["order", "void", "cancel"]
    assert of(effects, Prove) == [] and of(effects, Publish) == []
    assert core.orders_of("alice")[0]["status"] == "cancelled"
    assert core.orders_of("bob")[0]["status"] == "open"
    assert core.voids["soc_below_reserve"] == 1


def test_trade_waits_for_the_sellers_telemetry(config: GatewayConfig) -> None:
    core = new_core(config)
    core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    _, effects = core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=T0 + 1)
    assert log_ops(effects) == ["order"] and of(effects, Prove) == []
    # Telemetry arrives within telemetry_wait_ms: the trade goes on to its proof.
    effects = report(core, "m-a", seq=1, now=T0 + 500, soc_bp=8000)
    assert [p.trade for p in of(effects, Prove)] == ["t1"]


def test_silent_seller_voids_the_trade_and_cancels_the_sell(config: GatewayConfig) -> None:
    core = new_core(config)
    core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=T0 + 1)
    wait = config.locks.telemetry_wait_ms
    assert log_ops(core.tick(now=T0 + wait)) == []
    assert log_ops(core.tick(now=T0 + 1 + wait)) == ["void", "cancel"]
    assert core.voids["no_telemetry"] == 1
    assert core.orders_of("bob")[0]["status"] == "open"


def test_locks_already_held_count_against_the_next_sale(config: GatewayConfig) -> None:
    core = new_core(config)
    report(core, "m-a", seq=1, now=T0, soc_bp=3500)  # 1500 Wh above the reserve
    core.place(home="alice", side="sell", wh=2000, price=120, interval=None, now=T0)
    _, e1 = core.place(home="bob", side="buy", wh=1000, price=200, interval=None, now=T0 + 1)
    (p1,) = of(e1, Prove)
    _, e2 = core.place(home="carol", side="buy", wh=600, price=200, interval=None, now=T0 + 2)
    assert of(e2, Prove) == [] and core.voids["soc_below_reserve"] == 1
    assert p1.reserved_bp == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda now: telemetry(KEY_B, "m-a", seq=1, ts=now), "bad_mac"),
        (lambda now: b'{"dev":"m-a"', "malformed"),
        (lambda now: telemetry(KEY_A, "m-a", seq=1, ts=now - 31_000), "stale"),
        (lambda now: telemetry(KEY_A, "m-a", seq=1, ts=now + 6_000), "future"),
        (lambda now: telemetry(KEY_A, "m-a", seq=1, ts=now, soc_bp=10_001), "malformed"),
        (lambda now: telemetry(KEY_A, "m-a", seq=1, ts=now, power_w=60_000), "implausible"),
        (lambda now: telemetry(KEY_A, "m-b", seq=1, ts=now), "wrong_meter"),
    ],
)
def test_bad_telemetry_is_refused_and_counted(
    config: GatewayConfig, payload: Any, reason: str
) -> None:
    core = new_core(config)
    effects = core.on_message(topic=f"{PREFIX}/m-a/state", payload=payload(T0), now=T0)
    assert core.refusals == {reason: 1}
    assert of(effects, Append) == []
    assert "m-a" not in core.telemetry


def test_replay_and_backwards_counters_are_refused(config: GatewayConfig) -> None:
    core = new_core(config)
    first = telemetry(KEY_A, "m-a", seq=5, ts=T0, export_wh=100)
    core.on_message(topic=f"{PREFIX}/m-a/state", payload=first, now=T0)
    core.on_message(topic=f"{PREFIX}/m-a/state", payload=first, now=T0 + 1000)
    older = telemetry(KEY_A, "m-a", seq=4, ts=T0 + 1000)
    core.on_message(topic=f"{PREFIX}/m-a/state", payload=older, now=T0 + 1000)
    backwards = telemetry(KEY_A, "m-a", seq=6, ts=T0 + 1000, export_wh=99)
    core.on_message(topic=f"{PREFIX}/m-a/state", payload=backwards, now=T0 + 1000)
    unknown = telemetry(KEY_A, "m-zz", seq=1, ts=T0)
    core.on_message(topic=f"{PREFIX}/m-zz/state", payload=unknown, now=T0)
    assert core.refusals == {"replay": 2, "implausible": 1, "unknown_meter": 1}
    assert core.telemetry["m-a"].seq == 5


def test_reference_price_follows_capacity_weighted_soc(config: GatewayConfig) -> None:
    core = new_core(config)
    report(core, "m-a", seq=1, now=T0, soc_bp=5000)  # 10 kWh
    report(core, "m-b", seq=1, now=T0, soc_bp=8000)  # 5 kWh
    # (5000*10000 + 8000*5000) / 15000 = 6000 bp; 100 * (1 + 1.0 * 0.4) = 140 ticks/kWh.
    assert core.community_soc() == 6000
    assert core.engine.reference_price == 140
    assert reference_price(base_price=100, scarcity_bp=10_000, soc_bp=0) == 200
    assert reference_price(base_price=100, scarcity_bp=10_000, soc_bp=10_000) == 100
    # A buy below the reference price does not match.
    core.place(home="alice", side="sell", wh=100, price=100, interval=None, now=T0)
    _, effects = core.place(home="carol", side="buy", wh=100, price=139, interval=None, now=T0)
    assert of(effects, Prove) == []
    # Stale meters drop out of the community SoC.
    core.tick(now=T0 + 121_000)
    assert core.community_soc() is None


def settled_core(config: GatewayConfig) -> GatewayCore:
    core = new_core(config)
    report(core, "m-a", seq=1, now=T0, soc_bp=8000, export_wh=5000)
    core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    _, e = core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=T0 + 1)
    (p,) = of(e, Prove)
    commitment, proof = prove(p)
    core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 10)
    core.on_message(
        topic=f"{PREFIX}/m-a/ack", payload=ack(KEY_A, "m-a", seq=2, trade="t1"), now=T0 + 20
    )
    return core


@pytest.mark.parametrize(("reported", "status"), [(600, "delivered"), (250, "defaulted")])
def test_delivery_report_decides_the_lock(
    config: GatewayConfig, reported: int, status: str
) -> None:
    core = settled_core(config)
    end = (core.interval + 1) * INTERVAL_MS
    payload = delivery(KEY_A, "m-a", seq=9, ts=end, trade="t1", wh=600, delivered_wh=reported)
    effects = core.on_message(topic=f"{PREFIX}/m-a/state", payload=payload, now=end + 500)
    (d,) = of(effects, Deliver)
    assert (d.record.trade, d.record.status, d.record.delivered_wh) == ("t1", status, reported)
    assert core.locks == {}
    # A replayed report changes nothing.
    again = core.on_message(topic=f"{PREFIX}/m-a/state", payload=payload, now=end + 600)
    assert of(again, Deliver) == [] and core.refusals["replay"] == 1


@pytest.mark.parametrize(("exported", "status"), [(600, "delivered"), (250, "defaulted")])
def test_without_a_report_the_export_counter_decides(
    config: GatewayConfig, exported: int, status: str
) -> None:
    core = settled_core(config)
    end = (core.interval + 1) * INTERVAL_MS
    report(core, "m-a", seq=3, now=end + 1000, export_wh=5000 + exported)
    assert of(core.tick(now=end + 29_000), Deliver) == []
    effects = core.tick(now=end + 30_000)
    (d,) = of(effects, Deliver)
    assert (d.record.trade, d.record.status, d.record.delivered_wh) == ("t1", status, exported)
    assert [e.kind for e in of(effects, Publish)] == ["release"]
    assert core.locks == {}


def test_interval_close_and_standing_policies() -> None:
    homes = [
        {"id": "alice", "token": "a" * 20, "sell_above_bp": 5000, "sell_price": 110},
        {"id": "bob", "token": "b" * 20, "buy_below_bp": 6000, "buy_price": 200},
    ]
    core = new_core(make_config(homes=homes))
    report(core, "m-a", seq=1, now=T0, soc_bp=7000)
    report(core, "m-b", seq=1, now=T0, soc_bp=4000)
    core.place(home="alice", side="sell", wh=10, price=500, interval=None, now=T0)
    nxt = (core.interval + 1) * INTERVAL_MS
    report(core, "m-a", seq=2, now=nxt - 100, soc_bp=7000)
    report(core, "m-b", seq=2, now=nxt - 100, soc_bp=4000)
    effects = core.tick(now=nxt)
    ops = log_ops(effects)
    # The closed interval had no trade: it is pruned at once, before the new orders.
    assert ops[:2] == ["close", "prune"] and ops.count("order") == 2
    orders = {
        o["side"]: o
        for o in core.orders_of("alice") + core.orders_of("bob")
        if o["interval"] == core.interval
    }
    assert orders["sell"]["wh"] == (7000 - 5000) * 10_000 // 10_000
    assert orders["buy"]["wh"] == (6000 - 4000) * 5_000 // 10_000
    # alice's order of the closed interval expired and was forgotten with its interval.
    assert [o["interval"] for o in core.orders_of("alice")] == [core.interval]
    # the two policy orders cross (200 >= 110): a trade, proved against alice's meter
    assert len(of(effects, Prove)) == 1


def test_bad_orders_are_rejected_without_logging(config: GatewayConfig) -> None:
    core = new_core(config)
    cases = [
        {"side": "hold", "wh": 1, "price": 1, "interval": None},
        {"side": "buy", "wh": 0, "price": 1, "interval": None},
        {"side": "buy", "wh": 1.5, "price": 1, "interval": None},
        {"side": "buy", "wh": 1, "price": -3, "interval": None},
        {"side": "buy", "wh": 1, "price": 1, "interval": core.interval - 1},
    ]
    for case in cases:
        with pytest.raises(OrderRejected):
            core.place(home="alice", now=T0, **case)
    with pytest.raises(OrderRejected) as err:
        core.place(home="carol", side="sell", wh=1, price=1, interval=None, now=T0)
    assert err.value.status == 409
    with pytest.raises(OrderRejected) as err:
        core.cancel(home="alice", order_id="o1", now=T0)
    assert err.value.status == 404
    assert core.log_seq == 0


def test_batch_sealed_after_max_trades() -> None:
    core = settled_core(make_config(batch={"max_trades": 1}))
    assert core.settled_since_batch == 1
    core2 = new_core(make_config(batch={"max_trades": 1, "every_s": 60}))
    assert of(core2.tick(now=T0 + 61_000), Seal) == []  # nothing to batch
    core2.place(home="bob", side="buy", wh=5, price=5, interval=None, now=T0)
    assert of(core2.tick(now=T0 + 61_000), Seal) != []


def test_one_seal_outstanding_at_a_time() -> None:
    """A Seal effect is not emitted again until the shell records the seal (or skips it), even
    when the timer keeps firing and settlements reach ``max_trades`` meanwhile."""
    core = new_core(make_config(batch={"every_s": 60, "max_trades": 1}))
    core.place(home="bob", side="buy", wh=5, price=5, interval=None, now=T0)
    assert [s.reason for s in of(core.tick(now=T0 + 61_000), Seal)] == ["every_s"]
    first = core.begin_seal()  # the shell starts the seal the effect asked for
    assert first == 1
    for dt in (61_010, 122_000, 500_000):  # later ticks, the seal still on disk
        assert of(core.tick(now=T0 + dt), Seal) == []
    core.place(home="bob", side="buy", wh=6, price=5, interval=None, now=T0 + 500_001)
    core.batch_sealed(log_last=1, trades=(), now=T0 + 500_002)
    assert core.begin_seal() == 2 and core.batched_log_seq == 1  # the next slice joins on
    core.seal_skipped(now=T0 + 500_003)
    assert of(core.tick(now=T0 + 500_004), Seal) == []  # a skipped seal backs off every_s
    assert [s.reason for s in of(core.tick(now=T0 + 560_003), Seal)] == ["every_s"]


def test_settlement_during_a_seal_emits_no_second_seal() -> None:
    core = new_core(make_config(batch={"max_trades": 1}))
    core.begin_seal()  # e.g. a seal on demand is in progress
    report(core, "m-a", seq=1, now=T0, soc_bp=8000, export_wh=5000)
    core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    _, e = core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=T0 + 1)
    (p,) = of(e, Prove)
    commitment, proof = prove(p)
    core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=T0 + 10)
    settled = core.on_message(
        topic=f"{PREFIX}/m-a/ack", payload=ack(KEY_A, "m-a", seq=2, trade="t1"), now=T0 + 20
    )
    assert of(settled, Settle) != [] and of(settled, Seal) == []
    # The seal in progress read the ledger before this settlement: it stays counted, and the
    # next tick after the seal is recorded asks for the batch it is due.
    core.batch_sealed(log_last=core.log_seq, trades=(), now=T0 + 30)
    assert core.settled_since_batch == 1
    assert [s.reason for s in of(core.tick(now=T0 + 40), Seal)] == ["max_trades"]


def test_restart_voids_unsettled_trades_deterministically(config: GatewayConfig) -> None:
    core = new_core(config)
    report(core, "m-a", seq=1, now=T0, soc_bp=8000)
    records: list[dict[str, Any]] = []
    _, e1 = core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    _, e2 = core.place(home="bob", side="buy", wh=300, price=150, interval=None, now=T0 + 1)
    _, e3 = core.place(home="bob", side="buy", wh=300, price=150, interval=None, now=T0 + 2)
    for effects in (e1, e2, e3):
        for a in of(effects, Append):
            records.extend(a.records)
    # An earlier telemetry's reference-price record is part of the log too.
    log = [r for r in records]
    assert [r["seq"] for r in log] == list(range(log[0]["seq"], log[0]["seq"] + len(log)))
    full = (
        [{"seq": 1, "op": "reference_price", "price": 120, "ts": T0}] if log[0]["seq"] == 2 else []
    )
    restored, effects = GatewayCore.restore(
        config=config,
        codec=WireCodec(),
        log=full + log,
        settled={"t1"},
        locks=[],
        batched_log_seq=0,
        unbatched=("t1",),
        now=T0 + 60_000,
    )
    assert log_ops(effects) == ["void"]
    assert next(r for a in of(effects, Append) for r in a.records)["trade"] == "t2"
    assert [e.kind for e in of(effects, Publish)] == ["release"]
    assert restored.engine.is_voided("t2") and not restored.engine.is_voided("t1")
    assert restored.log_seq == len(full + log) + 1


def test_saved_sequence_numbers_refuse_replays_after_restart(config: GatewayConfig) -> None:
    core, _ = GatewayCore.restore(
        config=config,
        codec=WireCodec(),
        log=[],
        settled=set(),
        locks=[],
        batched_log_seq=0,
        unbatched=(),
        now=T0,
        last_seq={("m-a", "state"): 40},
    )
    old = telemetry(KEY_A, "m-a", seq=40, ts=T0)  # fresh, but not above the saved seq
    core.on_message(topic=f"{PREFIX}/m-a/state", payload=old, now=T0)
    assert core.refusals == {"replay": 1}
    core.on_message(
        topic=f"{PREFIX}/m-a/state", payload=telemetry(KEY_A, "m-a", seq=41, ts=T0), now=T0
    )
    assert core.telemetry["m-a"].seq == 41


def test_restore_from_a_snapshot_equals_a_full_replay(config: GatewayConfig) -> None:
    core = new_core(config)
    records: list[dict[str, Any]] = []

    def keep(effects: list[Effect]) -> None:
        records.extend(r for a in of(effects, Append) for r in a.records)

    keep(report(core, "m-a", seq=1, now=T0, soc_bp=9000))
    keep(core.place(home="alice", side="sell", wh=900, price=120, interval=None, now=T0)[1])
    keep(core.place(home="bob", side="buy", wh=300, price=200, interval=None, now=T0 + 1)[1])
    snap = core.snapshot()
    keep(core.place(home="carol", side="buy", wh=200, price=100, interval=None, now=T0 + 2)[1])
    keep(core.cancel(home="carol", order_id=f"o{core.log_seq}", now=T0 + 3))
    keep(core.place(home="bob", side="sell", wh=50, price=500, interval=None, now=T0 + 4)[1])

    def restored(snapshot: Any) -> GatewayCore:
        again, _ = GatewayCore.restore(
            config=config,
            codec=WireCodec(),
            log=records,
            settled={"t1"},
            locks=[],
            batched_log_seq=0,
            unbatched=(),
            now=T0 + 5,
            snapshot=snapshot,
        )
        return again

    full, fast = restored(None), restored(snap)
    assert fast.engine.snapshot() == full.engine.snapshot()
    assert fast.home_orders == full.home_orders and fast.log_seq == full.log_seq == len(records)
    # A snapshot the log on disk does not reach is ignored: the whole log is replayed.
    ahead = dataclasses.replace(snap, log_seq=len(records) + 1)
    assert restored(ahead).engine.snapshot() == full.engine.snapshot()
