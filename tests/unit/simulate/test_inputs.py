"""The input models: H0 load scaling, PV at night and by day, the home mix, the baseline."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from neighbourgrid.simulate import inputs
from neighbourgrid.simulate.homes import make_homes
from neighbourgrid.simulate.physics import Neighbourhood, run_baseline

DAYS_IN_YEAR = 365


def test_load_over_the_whole_year_sums_to_the_annual_consumption() -> None:
    for annual in (2300.0, 3517.4):
        year = inputs.load_wh(annual_kwh=annual, start=date(2025, 1, 1), intervals=365 * 96)
        assert sum(year) == round(annual * 1000)
        assert min(year) >= 0


def test_load_scales_linearly_and_follows_the_h0_shape() -> None:
    day = date(2025, 4, 11)
    small = inputs.load_wh(annual_kwh=2000, start=day, intervals=96)
    big = inputs.load_wh(annual_kwh=4000, start=day, intervals=96)
    assert abs(sum(big) - 2 * sum(small)) <= 2
    # H0: households use less at 3-4 am than in the evening peak 6-9 pm
    assert sum(small[12:16]) < sum(small[72:84]) / 3


def test_h0_profile_comes_from_demandlib_and_is_normalised() -> None:
    profile = inputs.h0_profile()
    assert len(profile) == DAYS_IN_YEAR * 96
    assert profile.sum() == pytest.approx(1.0)
    assert (profile > 0).all()


def test_pv_is_zero_at_night_and_positive_on_a_sunny_noon() -> None:
    day = date(2025, 4, 11)
    pv = inputs.pv_wh(kwp=8.0, start=day, intervals=96)
    assert pv[:20] == [0] * 20  # 00:00-05:00 local standard time
    assert pv[-12:] == [0] * 12  # 21:00-24:00
    assert max(pv[44:56]) > 800  # 8 kWp near noon gives well over 3.2 kW
    assert max(pv) <= 8_000 * 900 // 3600  # never above nameplate


def test_pv_year_yield_is_plausible_and_zero_whenever_the_sun_is_down() -> None:
    year = inputs.pv_wh_per_kwp_year()
    assert 1100 < year.sum() / 1000 < 1600  # kWh per kWp per year at 36 N
    by_slot = year.reshape(DAYS_IN_YEAR, 96)
    assert np.all(by_slot[:, :16] == 0)  # before 04:00 nobody sees the sun at 36 N


def test_pv_scales_with_kwp_and_is_zero_without_pv() -> None:
    day = date(2025, 6, 1)
    assert inputs.pv_wh(kwp=0, start=day, intervals=96) == [0] * 96
    five = sum(inputs.pv_wh(kwp=5, start=day, intervals=96))
    ten = sum(inputs.pv_wh(kwp=10, start=day, intervals=96))
    assert abs(ten - 2 * five) <= 1


def test_period_outside_the_data_year_is_refused() -> None:
    with pytest.raises(ValueError):
        inputs.load_wh(annual_kwh=3000, start=date(2025, 12, 31), intervals=192)
    with pytest.raises(ValueError):
        inputs.pv_wh(kwp=3, start=date(2024, 6, 1), intervals=96)


def test_cumulative_round_preserves_totals() -> None:
    values = [0.4] * 10
    rounded = inputs.cumulative_round(values)
    assert sum(rounded) == 4
    assert all(x in (0, 1) for x in rounded)


def test_home_mix_is_seeded_and_has_both_sides_of_the_market() -> None:
    assert make_homes(24, 7) == make_homes(24, 7)
    assert make_homes(24, 7) != make_homes(24, 8)
    for count in (2, 4, 24):
        homes = make_homes(count, 3)
        assert len({h.id for h in homes}) == count
        assert any(h.kind == "PV+battery" for h in homes)
        assert any(h.kind == "consumer" for h in homes)
        assert all(h.battery is not None for h in homes if h.manual)
    assert sum(h.manual for h in make_homes(24, 7)) == 3
    with pytest.raises(ValueError):
        make_homes(1, 7)


def test_baseline_energy_balance_per_home() -> None:
    homes = make_homes(6, 2)
    hood = run_baseline(homes=homes, start=date(2025, 4, 11), days=1)
    for home in homes:
        flows = hood.history[home.id]
        assert len(flows) == 96
        for f in flows:
            # every interval: sources == sinks
            assert f.pv_wh + f.import_wh + f.discharged_wh + f.received_wh == (
                f.load_wh + f.export_wh + f.charged_wh + f.delivered_wh
            )


def test_a_sale_is_delivered_and_the_buyer_imports_less() -> None:
    homes = make_homes(4, 7)
    seller = next(h for h in homes if h.kind == "PV+battery")
    buyer = next(h for h in homes if h.kind == "consumer")
    base = Neighbourhood(homes=homes, start=date(2025, 4, 11), days=1)
    trade = Neighbourhood(homes=homes, start=date(2025, 4, 11), days=1)
    base.step()
    sale = min(100, trade.deliverable_wh(seller.id, 100))
    flows = trade.step(sold={seller.id: sale}, received={buyer.id: sale})
    assert flows[seller.id].delivered_wh == sale
    assert flows[buyer.id].import_wh == max(0, base.history[buyer.id][0].import_wh - sale)


def test_energy_balances_with_sales_and_purchases_every_interval() -> None:
    homes = make_homes(8, 5)
    sellers = [h.id for h in homes if h.battery is not None]
    buyers = [h.id for h in homes if h.battery is None]
    hood = Neighbourhood(homes=homes, start=date(2025, 4, 11), days=1)
    for k in range(hood.intervals):
        sold = {s: 150 + 10 * k for s in sellers}
        delivered = {s: hood.deliverable_wh(s, wh) for s, wh in sold.items()}
        share = sum(delivered.values()) // len(buyers)
        flows = hood.step(sold=sold, received=dict.fromkeys(buyers, share))
        for f in flows.values():
            assert 0 <= f.delivered_wh <= f.sold_wh
            assert f.pv_wh + f.import_wh + f.discharged_wh + f.received_wh == (
                f.load_wh + f.export_wh + f.charged_wh + f.delivered_wh
            )
        for s in sellers:
            assert flows[s].delivered_wh == delivered[s]
            assert flows[s].soc_bp >= 2000  # sales never take a battery below its reserve
