"""Property-based tests of the engine: the rules hold on any event sequence.

The strongest check is against :mod:`tests.unit.market.model`, a brute-force model of the rules:
every trade, in order, and every order's final state must agree, under both policies and with or
without a bound on matches. The other properties are stated on the engine alone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge.market import (
    Cancel,
    CloseInterval,
    Engine,
    InvalidEvent,
    MarketParams,
    Order,
    Prune,
    ReferencePrice,
    Void,
    replay,
)
from tests.unit.market.model import Model

OWNERS = ["ann", "ben", "cat", "dan"]


@st.composite
def an_event(draw: st.DrawFn) -> Any:
    """Mostly orders; now and then a cancel, a reference price, a close, a prune or a void."""
    roll = draw(st.integers(0, 99))
    if roll < 70:
        return Order(
            "",  # numbered by number()
            draw(st.sampled_from(OWNERS)),
            draw(st.sampled_from(["buy", "sell"])),
            draw(st.integers(1, 30)),
            draw(st.integers(8, 14)),
            0,
            draw(st.integers(0, 1)),
        )
    if roll < 80:
        return Cancel(f"o{draw(st.integers(1, 25))}", 0)
    if roll < 88:
        return ReferencePrice(draw(st.sampled_from([0, 9, 11, 13, 14])), 0)
    if roll < 91:
        return CloseInterval(draw(st.integers(0, 2)), 0)
    if roll < 93:
        return Prune(draw(st.integers(0, 2)), 0)
    return Void(f"t{draw(st.integers(1, 12))}", 0)


raw_events = st.lists(an_event(), min_size=1, max_size=80)


def a_busy_order(draw: st.DrawFn, *, last_interval: int) -> Order:
    """An order among three owners at four crowded prices, for intervals 0..last_interval (its
    id is empty: numbered by number())."""
    return Order(
        "",
        draw(st.sampled_from(OWNERS[:3])),
        draw(st.sampled_from(["buy", "sell"])),
        draw(st.integers(1, 20)),
        draw(st.integers(9, 12)),
        0,
        draw(st.integers(0, last_interval)),
    )


@st.composite
def a_busy_event(draw: st.DrawFn) -> Any:
    """Orders, with reference-price swings and voids much more often than in a_event."""
    kind = draw(st.sampled_from(["order"] * 6 + ["reference"] * 2 + ["cancel", "void"]))
    if kind == "order":
        return a_busy_order(draw, last_interval=1)
    if kind == "reference":
        return ReferencePrice(draw(st.sampled_from([13, 0, 10, 11, 12])), 0)
    if kind == "cancel":
        return Cancel(f"o{draw(st.integers(1, 25))}", 0)
    return Void(draw(st.sampled_from([f"t{n}" for n in range(1, 9)])), 0)


busy_events = st.lists(a_busy_event(), min_size=5, max_size=80)


@st.composite
def a_pruning_event(draw: st.DrawFn) -> Any:
    """Orders over three intervals, with closes and prunes (and voids, cancels) often."""
    kind = draw(st.sampled_from(["order"] * 6 + ["close"] * 2 + ["prune", "void", "cancel"]))
    if kind == "order":
        return a_busy_order(draw, last_interval=2)
    if kind == "close":
        return CloseInterval(draw(st.integers(0, 2)), 0)
    if kind == "prune":
        return Prune(draw(st.integers(0, 2)), 0)
    if kind == "cancel":
        return Cancel(f"o{draw(st.integers(1, 25))}", 0)
    return Void(draw(st.sampled_from([f"t{n}" for n in range(1, 13)])), 0)


pruning_events = st.lists(a_pruning_event(), min_size=30, max_size=80)
params = st.builds(
    MarketParams,
    policy=st.sampled_from(["price-time", "value-time"]),
    max_matches=st.one_of(st.none(), st.integers(1, 3)),
)


def number(events: list[Any]) -> list[Any]:
    """Give orders ids o1, o2, ... and every event its index as ``ts``."""
    out = []
    n = 0
    for i, ev in enumerate(events):
        if isinstance(ev, Order):
            n += 1
            ev = Order(f"o{n}", ev.owner, ev.side, ev.wh, ev.price, i, ev.interval)
        else:
            ev = replace(ev, ts=i)
        out.append(ev)
    return out


def accepted(engine: Engine, events: list[Any]) -> tuple[list[Any], list[list[Any]]]:
    """Submit events, dropping those the engine refuses; return the kept ones and their trades."""
    kept, trades = [], []
    for ev in events:
        try:
            result = engine.submit(ev)
        except InvalidEvent:
            continue
        kept.append(ev)
        trades.append(result)
    return kept, trades


def valid_events(raw: list[Any], p: MarketParams) -> list[Any]:
    kept, _ = accepted(Engine(params=p), number(raw))
    return kept


def crossing_pairs(engine: Engine) -> list[tuple[str, str]]:
    """Resting buy/sell pairs of different owners that would trade (buy eligible and crossing)."""
    pairs = []
    for interval in engine.open_intervals():
        buys = [o for o in engine.book(interval, "buy") if o.price >= engine.reference_price]
        sells = engine.book(interval, "sell")
        for b in buys:
            for s in sells:
                if b.owner != s.owner and b.price >= s.price:
                    excluded = any(
                        engine.is_voided(t.id) and {t.buy, t.sell} == {b.id, s.id}
                        for t in engine.trades()
                    )
                    if not excluded:
                        pairs.append((b.id, s.id))
    return pairs


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(raw_events, params)
def test_engine_agrees_with_the_brute_force_model(raw, p):
    engine = Engine(params=p)
    model = Model(p.policy, p.max_matches)
    for ev in number(raw):
        try:
            got = engine.submit(ev)
        except InvalidEvent:
            continue
        want = model.submit(ev)
        assert [t.to_dict() for t in got] == want, ev
    for oid, mo in model.orders.items():
        state = engine.order(oid)
        assert state is not None
        assert (state.remaining, state.status) == (mo.rem, mo.status), oid
    # What a prune forgot, the engine forgot too: same kept orders, trades, voids and closes.
    assert len(json.loads(engine.snapshot())["orders"]) == len(model.orders)
    assert [t.to_dict() for t in engine.trades()] == model.trades
    assert engine.trade_count == model.trade_count
    assert {t.id for t in engine.trades() if engine.is_voided(t.id)} == model.voided
    assert engine.closed_intervals() == sorted(model.closed)


@SETTINGS
@given(busy_events, params)
def test_engine_agrees_with_the_model_through_reference_swings_and_voids(raw, p):
    test_engine_agrees_with_the_brute_force_model.hypothesis.inner_test(raw, p)


@SETTINGS
@given(pruning_events, params)
def test_engine_agrees_with_the_model_through_closes_and_prunes(raw, p):
    test_engine_agrees_with_the_brute_force_model.hypothesis.inner_test(raw, p)


@SETTINGS
@given(pruning_events, params, st.data())
def test_snapshot_then_suffix_equals_the_whole_through_prunes(raw, p, data):
    test_snapshot_then_suffix_equals_the_whole.hypothesis.inner_test(raw, p, data)


@SETTINGS
@given(pruning_events, params)
def test_a_prune_leaves_nothing_of_its_intervals(raw, p):
    engine = Engine(params=p)
    for ev in number(raw):
        try:
            engine.submit(ev)
        except InvalidEvent:
            continue
        k = engine.pruned_through
        if k is None:
            continue
        snap = json.loads(engine.snapshot())
        assert all(row[6] > k for row in snap["orders"])
        assert all(t.interval > k for t in engine.trades())
        assert all(i > k for i in engine.closed_intervals())
        assert len(engine._trades) + engine._tbase == engine.trade_count
        assert not engine._trades or engine._trades[0] is not None


@SETTINGS
@given(busy_events, params)
def test_no_crossed_book_through_reference_swings_and_voids(raw, p):
    test_no_crossed_book_at_rest_without_a_bound.hypothesis.inner_test(raw, p)


@SETTINGS
@given(raw_events, params)
def test_no_crossed_book_at_rest_without_a_bound(raw, p):
    p = MarketParams(policy=p.policy, max_matches=None)
    engine = Engine(params=p)
    for ev in number(raw):
        try:
            engine.submit(ev)
        except InvalidEvent:
            continue
        assert crossing_pairs(engine) == []


@SETTINGS
@given(raw_events, params)
def test_volume_is_conserved_per_order(raw, p):
    engine = Engine(params=p)
    accepted(engine, number(raw))
    traded: dict[str, int] = {}
    for t in engine.trades():
        if engine.is_voided(t.id):
            continue
        assert t.wh > 0
        traded[t.buy] = traded.get(t.buy, 0) + t.wh
        traded[t.sell] = traded.get(t.sell, 0) + t.wh
    seen = 0
    for interval_orders in _all_orders(engine):
        for o in interval_orders:
            seen += 1
            assert o.wh == o.remaining + traded.get(o.id, 0), o
            assert 0 <= o.remaining <= o.wh
            assert (o.status == "filled") == (o.remaining == 0) or o.status in (
                "cancelled",
                "expired",
            )


def _all_orders(engine: Engine) -> list[list[Any]]:
    snap = __import__("json").loads(engine.snapshot())
    return [[engine.order(row[0]) for row in snap["orders"]]]


@SETTINGS
@given(raw_events, params)
def test_trades_respect_price_and_maker_rules(raw, p):
    engine = Engine(params=p)
    accepted(engine, number(raw))
    for t in engine.trades():
        buy, sell = engine.order(t.buy), engine.order(t.sell)
        assert buy is not None and sell is not None
        assert buy.side == "buy" and sell.side == "sell"
        assert buy.owner != sell.owner  # self-trade prevention
        assert buy.interval == sell.interval == t.interval
        assert sell.price <= t.price <= buy.price
        maker = buy if buy.seq < sell.seq else sell
        assert (t.maker, t.maker_id, t.price) == (maker.side, maker.id, maker.price)


@SETTINGS
@given(raw_events, params)
def test_replay_is_deterministic_to_the_byte(raw, p):
    events = number(raw)
    a, b = Engine(params=p), Engine(params=p)
    ta, tb = accepted(a, events)[1], accepted(b, events)[1]
    assert [[t.to_json() for t in x] for x in ta] == [[t.to_json() for t in x] for x in tb]
    assert a.snapshot() == b.snapshot()


@SETTINGS
@given(raw_events, params, st.data())
def test_snapshot_then_suffix_equals_the_whole(raw, p, data):
    events = valid_events(raw, p)
    cut = data.draw(st.integers(0, len(events)))
    whole = Engine(params=p)
    whole_trades = [t.to_json() for ev in events for t in whole.submit(ev)]
    head = Engine(params=p)
    head_trades = [t.to_json() for ev in events[:cut] for t in head.submit(ev)]
    restored = Engine.restore(head.snapshot())
    assert restored.snapshot() == head.snapshot()
    tail_trades = [t.to_json() for ev in events[cut:] for t in restored.submit(ev)]
    assert head_trades + tail_trades == whole_trades
    assert restored.snapshot() == whole.snapshot()
    assert [t.to_json() for t in replay(events, p)] == whole_trades


@SETTINGS
@given(raw_events, params)
def test_book_is_listed_in_priority_order(raw, p):
    engine = Engine(params=p)
    accepted(engine, number(raw))
    for interval in engine.open_intervals():
        for side in ("buy", "sell"):
            book = engine.book(interval, side)
            sign = -1 if side == "buy" else 1
            if p.policy == "value-time":
                keys = [(sign * o.price, -o.remaining, o.seq) for o in book]
            else:
                keys = [(sign * o.price, o.seq) for o in book]
            assert keys == sorted(keys)
            assert all(o.status == "open" and o.remaining > 0 for o in book)


@SETTINGS
@given(raw_events, params)
def test_max_matches_bounds_the_trades_of_each_order(raw, p):
    engine = Engine(params=p)
    events, trades = accepted(engine, number(raw))
    bound = p.max_matches
    for ev, made in zip(events, trades, strict=True):
        if bound is not None and isinstance(ev, Order):
            assert len(made) <= bound
        if isinstance(ev, Order):
            assert all(ev.id in (t.buy, t.sell) for t in made)


@SETTINGS
@given(raw_events, params)
def test_a_void_restores_quantity_at_original_priority(raw, p):
    engine = Engine(params=p)
    accepted(engine, number(raw))
    live = [t for t in engine.trades() if not engine.is_voided(t.id)]
    assume(live)
    t = live[-1]
    before = {oid: engine.order(oid) for oid in (t.buy, t.sell)}
    made = engine.submit(Void(t.id, ts=10_000))
    for oid, old in before.items():
        new = engine.order(oid)
        assert new is not None and old is not None
        again = sum(x.wh for x in made if oid in (x.buy, x.sell))
        assert new.remaining == old.remaining + t.wh - again
        assert new.seq == old.seq
        if old.status in ("cancelled", "expired") or (
            old.status == "filled" and old.interval in engine.closed_intervals()
        ):
            assert new.status in ("cancelled", "expired")
    for x in made:  # the voided pair never trades again
        assert {x.buy, x.sell} != {t.buy, t.sell}
