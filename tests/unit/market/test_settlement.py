"""Settlement arithmetic: exact integers, one rounding rule (floor), conservation."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.market import Rates, Settlement, SettlementError, Trade, check_settlement, settle
from edge.market.settlement import MICROTICKS_PER_TICK, SECONDS_PER_YEAR


def trade(wh: int, price: int) -> Trade:
    return Trade("t1", "b", "s", "buyer", "seller", wh, price, 0, 0, "sell")


def test_defaults_are_design_md_rates():
    r = Rates()
    assert r.yield_apy_ppm == 50_000  # 5 % APY
    assert r.commission_ppm == 25_000  # 2.5 %
    assert r.tokens_per_kwh == 1000  # 1 token per Wh
    assert r.carbon_mg_per_kwh == 820_000  # 0.82 kg per kWh
    assert r.interval_s == 900
    assert r.grid_fee_per_kwh == 20


def test_a_worked_example():
    # 1500 Wh at 300 ticks/kWh: 450 ticks = 450,000,000 µticks.
    s = settle(trade(1500, 300))
    assert s.value == 450 * MICROTICKS_PER_TICK
    assert s.commission == 11_250_000  # 2.5 %
    assert s.grid_fee == 30 * MICROTICKS_PER_TICK  # 1.5 kWh x 20 ticks
    assert s.buyer_pays == 480_000_000
    assert s.seller_receives == 438_750_000
    assert s.tokens_burned == 1500
    assert s.carbon_mg == 1_230_000
    # 5 % a year over 900 s: 450e6 * 0.05 * 900 / 31,536,000 = 642.12... -> 642
    assert s.yield_accrual == 642
    assert s.to_dict()["trade"] == "t1"


def test_rounding_is_floor_and_the_fraction_stays_with_the_seller():
    s = settle(trade(1, 1), Rates(commission_ppm=333_333))
    # value 1000 µticks; 333.333 -> 333
    assert (s.value, s.commission, s.seller_receives) == (1000, 333, 667)


def test_rates_are_validated_and_read_from_a_mapping():
    with pytest.raises(ValueError):
        Rates(commission_ppm=-1)
    with pytest.raises(ValueError):
        Rates(commission_ppm=1_000_001)
    assert Rates.from_mapping({"grid_fee_per_kwh": 0}).grid_fee_per_kwh == 0
    with pytest.raises(ValueError, match="grid_fee"):
        Rates.from_mapping({"grid_fees": 1})
    with pytest.raises(ValueError):
        settle(trade(0, 1))


rates = st.builds(
    Rates,
    yield_apy_ppm=st.integers(0, 1_000_000),
    interval_s=st.integers(0, 86_400),
    tokens_per_kwh=st.integers(0, 10_000),
    commission_ppm=st.integers(0, 1_000_000),
    carbon_mg_per_kwh=st.integers(0, 2_000_000),
    grid_fee_per_kwh=st.integers(0, 10_000),
)


@given(st.integers(1, 10**9), st.integers(1, 10**7), rates)
def test_conservation_and_exactness(wh, price, r):
    s = settle(trade(wh, price), r)
    assert s.buyer_pays == s.seller_receives + s.commission + s.grid_fee
    assert s.value == wh * price * 1000  # exact: µticks
    # floor rule: the exact rational value minus the rounded one is in [0, 1)
    assert 0 <= s.value * r.commission_ppm - s.commission * 10**6 < 10**6
    denom = 10**6 * SECONDS_PER_YEAR
    assert 0 <= s.value * r.yield_apy_ppm * r.interval_s - s.yield_accrual * denom < denom
    assert 0 <= wh * r.carbon_mg_per_kwh - s.carbon_mg * 1000 < 1000
    assert 0 <= wh * r.tokens_per_kwh - s.tokens_burned * 1000 < 1000
    assert all(isinstance(v, int) for v in s.to_dict().values() if not isinstance(v, str))
    assert s.seller_receives >= 0
    check_settlement(s, trade(wh, price), r)


@given(st.integers(1, 10**6))
def test_default_tokens_and_carbon_are_exact_per_wh(wh):
    s = settle(trade(wh, 250))
    assert s.tokens_burned == wh
    assert s.carbon_mg == 820 * wh


def test_check_settlement_names_each_broken_identity():
    t = trade(1000, 250)
    good = settle(t)
    check_settlement(good, t)
    bad = replace(good, commission=good.commission + 1)
    with pytest.raises(SettlementError) as err:
        check_settlement(bad, t)
    assert "buyer_pays != seller_receives + commission + grid_fee" in err.value.problems
    assert any(p.startswith("commission:") for p in err.value.problems)
    assert isinstance(bad, Settlement)
