"""The six positive and four negative test cases of the Spark engine (seed 001), as energy.

How the cases map. A Spark order gives ``amount0`` of one asset for ``amount1`` of another; here
BTC becomes energy (1 BTC = 1000 Wh) and USDT becomes money, so "20k USDT -> 1 BTC" is a buy of
1000 Wh and "0.51 BTC -> 10k USDT" a sell of 510 Wh. A Spark price is BTC per USDT; ours is money
per kWh, its inverse scaled by 1/100: 0.00005 BTC/USDT = 20,000 USDT/BTC -> 200 ticks/kWh, and
0.000051 -> 19,608 -> 196. So Spark's ``price_a < price_b`` (the seller asks fewer USDT per BTC
than the buyer bids) is our sell price below the buy price, ``==`` is equal prices (both cross),
and ``price_a > price_b`` is a sell above the buy (no trade). Spark compares the orders' sizes in
USDT; we compare them in Wh (buyer's Wh >, ==, < seller's Wh), which keeps each case's meaning
(the buyer's order is the bigger, as big, or the smaller). Spark's negative case 4 (order a pays
USDT, order b wants USDC: different assets) becomes orders for different delivery intervals.

Spark executes at order a's price (it takes the buyer's 20k USDT for 1 BTC): here order a comes
first, so it is the resting maker and the trade is at its price. We also run each case with b
first, where b is the maker and its price applies. Order c, as in Spark, closes whichever order
is left with a remainder, so each case shows exactly what was delivered.
"""

from __future__ import annotations

import pytest

from edge.market import Engine, Order

# (name, buyer Wh, buy price, seller Wh, sell price)
POSITIVE = [
    ("1: sell below buy, buyer bigger", 1000, 200, 510, 196),
    ("2: sell below buy, same size", 1000, 200, 1000, 196),
    ("3: sell below buy, buyer smaller", 500, 200, 1000, 196),
    ("4: same price, buyer bigger", 1000, 200, 500, 200),
    ("5: same price, same size", 1000, 200, 1000, 200),
    ("6: same price, buyer smaller", 500, 200, 1000, 200),
]
NEGATIVE = [
    ("1: sell above buy, buyer bigger", 1000, 196, 500, 200),
    ("2: sell above buy, same size", 1000, 196, 1000, 200),
    ("3: sell above buy, buyer smaller", 500, 196, 1000, 200),
]


@pytest.mark.parametrize("a_first", [True, False], ids=["a-first", "b-first"])
@pytest.mark.parametrize(("name", "buy_wh", "buy_price", "sell_wh", "sell_price"), POSITIVE)
def test_positive_cases_match_then_c_closes_the_rest(
    name, buy_wh, buy_price, sell_wh, sell_price, a_first
):
    engine = Engine()
    a = Order("a", "alice", "buy", buy_wh, buy_price, ts=1)
    b = Order("b", "bob", "sell", sell_wh, sell_price, ts=2)
    first, second = (a, b) if a_first else (b, a)
    assert engine.submit(first) == []
    [trade] = engine.submit(second)
    matched = min(buy_wh, sell_wh)
    assert (trade.buy, trade.sell, trade.wh) == ("a", "b", matched)
    assert trade.price == first.price  # the maker's (first order's) price
    assert trade.maker == first.side
    # Order c closes the bigger order exactly.
    rest = abs(buy_wh - sell_wh)
    if rest == 0:
        assert engine.order("a").status == engine.order("b").status == "filled"
        return
    bigger = a if buy_wh > sell_wh else b
    assert engine.order(bigger.id).remaining == rest
    c_side = "sell" if bigger is a else "buy"
    [close] = engine.submit(Order("c", "carol", c_side, rest, bigger.price, ts=3))
    assert (close.wh, close.price, close.maker_id) == (rest, bigger.price, bigger.id)
    for oid in ("a", "b", "c"):
        assert engine.order(oid).status == "filled"
    assert engine.book(0, "buy") == engine.book(0, "sell") == []


@pytest.mark.parametrize("a_first", [True, False], ids=["a-first", "b-first"])
@pytest.mark.parametrize(("name", "buy_wh", "buy_price", "sell_wh", "sell_price"), NEGATIVE)
def test_negative_cases_do_not_match(name, buy_wh, buy_price, sell_wh, sell_price, a_first):
    engine = Engine()
    a = Order("a", "alice", "buy", buy_wh, buy_price, ts=1)
    b = Order("b", "bob", "sell", sell_wh, sell_price, ts=2)
    for order in (a, b) if a_first else (b, a):
        assert engine.submit(order) == []
    assert [o.id for o in engine.book(0, "buy")] == ["a"]
    assert [o.id for o in engine.book(0, "sell")] == ["b"]
    assert engine.order("a").remaining == buy_wh
    assert engine.order("b").remaining == sell_wh


def test_negative_case_4_different_assets_is_different_intervals():
    engine = Engine()
    assert engine.submit(Order("a", "alice", "buy", 500, 200, ts=1, interval=0)) == []
    assert engine.submit(Order("b", "bob", "sell", 1000, 196, ts=2, interval=1)) == []
    assert [o.id for o in engine.book(0, "buy")] == ["a"]
    assert [o.id for o in engine.book(1, "sell")] == ["b"]
    assert engine.book(0, "sell") == engine.book(1, "buy") == []
