"""Tiered duration offerings: cheapest_cover against a brute-force search, and reservations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.market import (
    Cancel,
    Engine,
    InvalidEvent,
    Offer,
    Reserve,
    TierError,
    cheapest_cover,
)


def test_a_day_of_quarter_hours():
    # 1 slot for 10, 4 slots (an hour) for 35, 96 slots (a day) for 700.
    tiers = [(1, 10), (4, 35), (24, 700)]
    c = cheapest_cover(tiers, 5)
    assert (c.units, c.cost, c.blocks) == (5, 45, (1, 1, 0))
    # 90 slots exactly cost 22 x 35 + 2 x 10 = 790; the whole day costs 700.
    c = cheapest_cover(tiers, 90)
    assert (c.units, c.cost, c.blocks) == (96, 700, (0, 0, 1))


def test_exact_versus_exceeding():
    tiers = [(1, 10), (4, 35)]
    assert (cheapest_cover(tiers, 3).units, cheapest_cover(tiers, 3).cost) == (3, 30)
    assert (cheapest_cover(tiers, 4).units, cheapest_cover(tiers, 4).cost) == (4, 35)
    # 7 exactly: 35 + 3*10 = 65; exceeding: 8 = two blocks, 70. Exact is cheaper.
    assert (cheapest_cover(tiers, 7).units, cheapest_cover(tiers, 7).cost) == (7, 65)
    tiers = [(1, 10), (4, 32)]
    # 7 exactly: 32 + 30 = 62; exceeding: 64 for 8. Exact.
    assert cheapest_cover(tiers, 7).cost == 62
    tiers = [(1, 10), (4, 25)]
    # 7 exactly: 25 + 30 = 55; 8: 50. Exceeding is cheaper.
    assert (cheapest_cover(tiers, 7).units, cheapest_cover(tiers, 7).cost) == (8, 50)


def test_a_smallest_block_larger_than_one_slot():
    tiers = [(2, 10), (3, 25)]  # blocks of 2 slots (10) and 6 slots (25)
    assert (cheapest_cover(tiers, 3).units, cheapest_cover(tiers, 3).cost) == (4, 20)
    assert (cheapest_cover(tiers, 5).units, cheapest_cover(tiers, 5).cost) == (6, 25)


@pytest.mark.parametrize(
    "tiers",
    [[], [(0, 5)], [(1, 0)], [(1, 10), (2, 10)], [(1, 10), (2, 20)], [(1, 10), (3, 9)]],
)
def test_tiers_that_break_the_constraints_raise_value_error(tiers):
    with pytest.raises(ValueError):
        cheapest_cover(tiers, 3)
    if tiers:
        with pytest.raises(TierError):
            cheapest_cover(tiers, 3)


@st.composite
def offerings(draw):
    n = draw(st.integers(1, 4))
    tiers = [(draw(st.integers(1, 3)), draw(st.integers(2, 20)))]
    for _ in range(n - 1):
        m = draw(st.integers(2, 5))
        p_prev = tiers[-1][1]
        p = draw(st.integers(p_prev + 1, m * p_prev - 1))
        tiers.append((m, p))
    return tiers


def brute_force(tiers, d):
    """Cheapest combination of blocks totalling at least d (ties: fewer units)."""
    sizes, size = [], 1
    for m, _ in tiers:
        size *= m
        sizes.append(size)
    prices = [p for _, p in tiers]
    top = d + sizes[-1]  # no cheapest cover needs to go further
    best = [None] * (top + 1)  # best[u] = cheapest cost of exactly u units
    best[0] = 0
    for u in range(1, top + 1):
        options = [
            best[u - s] + p
            for s, p in zip(sizes, prices, strict=True)
            if s <= u and best[u - s] is not None
        ]
        best[u] = min(options) if options else None
    return min((best[u], u) for u in range(d, top + 1) if best[u] is not None)


@given(offerings(), st.integers(1, 200))
def test_cheapest_cover_is_the_cheapest_of_all_covers(tiers, d):
    c = cheapest_cover(tiers, d)
    assert (c.cost, c.units) == brute_force(tiers, d)
    sizes, size = [], 1
    for m, _ in tiers:
        size *= m
        sizes.append(size)
    assert c.units == sum(b * s for b, s in zip(c.blocks, sizes, strict=True))
    assert c.cost == sum(b * p for b, (_, p) in zip(c.blocks, tiers, strict=True))


def test_reservation_takes_the_cheapest_fitting_offer_or_nothing():
    e = Engine()
    e.submit(Offer("f1", "sam", 3000, 0, 96, ((1, 12), (4, 40)), ts=1))
    e.submit(Offer("f2", "sue", 5000, 0, 96, ((1, 11), (4, 42)), ts=2))
    assert e.submit(Reserve("r1", "bob", 2000, 10, 4, 11, ts=3)) == []
    r = e.reservation("r1")
    assert r is not None
    assert (r.offer, r.seller, r.units, r.cost, r.start) == ("f1", "sam", 4, 40, 10)
    # f1 has 1000 W left in slots 10-13: a 2000 W request there goes to f2.
    e.submit(Reserve("r2", "ann", 2000, 11, 1, 11, ts=4))
    assert e.reservation("r2").offer == "f2" and e.reservation("r2").cost == 11
    # Too cheap for anyone: dropped, not resting.
    e.submit(Reserve("r3", "ann", 100, 0, 3, 5, ts=5))
    assert e.reservation("r3") is None
    # Own offers are passed over; cancelled offers are gone.
    e.submit(Cancel("f2", ts=6))
    e.submit(Reserve("r4", "sam", 100, 50, 1, 20, ts=7))
    assert e.reservation("r4") is None
    # Outside the offer's window.
    e.submit(Reserve("r5", "bob", 100, 94, 4, 20, ts=8))
    assert e.reservation("r5") is None
    assert [x.id for x in e.reservations()] == ["r1", "r2"]
    restored = Engine.restore(e.snapshot())
    assert restored.snapshot() == e.snapshot()
    assert restored.reservation("r1") == r
    with pytest.raises(InvalidEvent):
        e.submit(Reserve("r1", "bob", 1, 0, 1, 1, ts=9))  # duplicate id
    assert r.to_dict()["kind"] == "reservation"
