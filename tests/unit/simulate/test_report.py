"""The report writer, the simulated clock and the firmware's hal over the physics."""

from __future__ import annotations

import csv
import json
import re
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from edge.errors import ConfigError
from hil.virtual.simhal import TICKS_PERIOD, HostClock, SimHal
from neighbourgrid.simulate.firmware import PhysicsSensors
from neighbourgrid.simulate.homes import make_homes
from neighbourgrid.simulate.money import Currency, plain
from neighbourgrid.simulate.physics import run_baseline
from neighbourgrid.simulate.report import (
    ReportData,
    home_accounts,
    write_csvs,
    write_overview_png,
    write_report,
    write_summary,
)
from neighbourgrid.simulate.run import SimClock, SimConfig, behaviours
from tests.unit.simulate.report_fixture import report_data


def _data(summary: dict[str, object], *, trading: bool) -> ReportData:
    homes = make_homes(4, 7)
    base = run_baseline(homes=homes, start=date(2025, 4, 11), days=1)
    other = run_baseline(homes=homes, start=date(2025, 4, 11), days=1) if trading else None
    n = base.intervals
    return ReportData(
        homes=homes,
        start=date(2025, 4, 11),
        days=1,
        baseline=base,
        trading=other,
        traded_wh=[0] * n,
        clearing_price=[None] * n,
        reference_price=[None] * n,
        statements={},
        summary=summary,
        stages={"gateway": "ran", "broker": "ran (embedded amqtt)", "meters": "not run"},
    )


def test_report_is_one_self_contained_page_with_four_figures(tmp_path: Path) -> None:
    summary = {"homes": 4, "days": 1, "seed": 7, "wh_traded": 1500, "trades": 3}
    path = tmp_path / "report.html"
    write_report(path, _data(summary, trading=True))
    page = path.read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 4
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert "1.5 kWh" in page  # the headline number
    assert not list(tmp_path.glob("*.tmp"))


def test_overview_picture_is_a_png(tmp_path: Path) -> None:
    summary = {"homes": 4, "days": 1, "seed": 7, "wh_traded": 1500, "trades": 3}
    path = tmp_path / "report.png"
    write_overview_png(path, _data(summary, trading=True))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_figures_read_not_run_never_a_number(tmp_path: Path) -> None:
    summary = {"homes": 4, "days": 1, "seed": 7, "wh_traded": None, "batches_anchored": None}
    path = tmp_path / "report.html"
    write_report(path, _data(summary, trading=False))
    page = path.read_text()
    assert "not run" in page
    assert page.count('class="notrun"') == 1  # the stage that did not run, and only it


def test_summary_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_summary(path, {"homes": 2, "replay_ok": True})
    assert json.loads(path.read_text()) == {"homes": 2, "replay_ok": True}


def test_sim_clock_moves_only_when_it_jumps() -> None:
    clock = SimClock(1_000)
    assert clock() == 1_000
    time.sleep(0.03)  # real time passing changes nothing
    assert clock() == 1_000
    clock.jump(5_000_000)
    time.sleep(0.01)
    assert clock() == 5_000_000


def test_config_bounds_are_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        SimConfig(homes=1).check()
    assert err.value.key == "homes"
    with pytest.raises(ConfigError):
        SimConfig(days=0).check()


def test_prices_sit_between_feed_in_and_grid_tariff() -> None:
    homes = make_homes(24, 7)
    plan = behaviours(homes, 7)
    for home in homes:
        b = plan[home.id]
        if home.battery is not None:
            assert b.sell_price is not None and 80 < b.sell_price < 320
            assert b.sell_above_bp is not None and b.sell_above_bp > 2000
        else:
            assert b.buy_price is not None and 80 < b.buy_price < 320


def test_the_firmwares_hal_over_the_physics_hands_out_each_pulse_once_in_simulated_time() -> None:
    now = [1_744_329_600_000]
    sensors = PhysicsSensors(soc=lambda: 6543)
    hal = SimHal(HostClock(lambda: now[0]), sensors, None, seed=1)
    assert hal.epoch() == 1_744_329_600
    assert hal.read_soc_bp() == 6543
    sensors.add_energy(import_wh=12, export_wh=300, seconds=900)
    assert hal.read_power_w() == (12 - 300) * 4
    assert hal.take_pulses() == (12, 300)
    assert hal.take_pulses() == (0, 0)
    sensors.add_energy(import_wh=1, export_wh=2, seconds=900)
    sensors.add_energy(import_wh=3, export_wh=4, seconds=900)
    assert hal.take_pulses() == (4, 6)
    t1 = hal.ticks_ms()
    now[0] += 1500
    assert hal.ticks_diff(hal.ticks_ms(), t1) == 1500
    assert 0 <= hal.ticks_ms() < TICKS_PERIOD
    hal.set_lock(True)
    assert sensors.lock and hal.lock_output


# ---------------------------------------------------------------------------- money for people
# Expected values are worked out by hand in tests/unit/simulate/report_fixture.py (two trades
# in a real ledger; grid 320 and feed-in 80 ticks/kWh; 1 tick = EUR 0.001).


def test_currency_converts_exactly_and_rounds_only_for_display() -> None:
    eur = Currency()
    assert eur.from_microticks(1_755_000_000) == Decimal("1.755")
    assert eur.from_microticks(1) == Decimal("0.000000001")
    assert eur.from_ticks(125) == Decimal("0.125")
    assert eur.energy_cost(5_000, 320) == Decimal("1.6")
    assert eur.format(Decimal("1.755")) == "€1.76"  # half away from zero
    assert eur.format(Decimal("0.045")) == "€0.05"
    assert eur.format(Decimal("-2.04")) == "-€2.04"
    assert eur.format(Decimal("-0.001")) == "€0.00"  # no minus sign on a zero
    assert eur.format(Decimal("1234.5")) == "€1,234.50"
    assert eur.format(Decimal("0.1395"), decimals=3) == "€0.140"
    yen = Currency(code="JPY", symbol="¥", tick_value=Decimal("0.2"), decimals=0)
    assert yen.format(yen.energy_cost(12_000, 150)) == "¥360"
    assert plain(Decimal("1.755")) == "1.755"
    assert plain(Decimal("1.800")) == "1.80"
    assert plain(Decimal("0.000")) == "0.00"
    assert plain(Decimal("-2.04")) == "-2.04"
    assert plain(Decimal("0.000000001")) == "0.000000001"
    with pytest.raises(ValueError):
        Currency(tick_value=Decimal(0))


def test_each_homes_account_matches_the_hand_computed_one(tmp_path: Path) -> None:
    accounts = {a.home: a for a in home_accounts(report_data(tmp_path))}
    assert list(accounts) == ["home-01", "home-02", "home-03", "home-04"]
    buyer, short_buyer = accounts["home-01"], accounts["home-02"]
    seller, short_seller = accounts["home-03"], accounts["home-04"]
    # home-01 bought 12 kWh, all delivered, for EUR 2.04; the grid: 12 x 0.32 = 3.84
    assert (buyer.bought_wh, buyer.received_wh, buyer.sold_wh) == (12_000, 12_000, 0)
    assert buyer.paid == Decimal("2.04") and buyer.earned == 0
    assert buyer.saved == Decimal("1.80") and buyer.net == Decimal("-2.04")
    # home-02 bought 8 kWh, 5 arrived, for EUR 1.16; the grid for 5 kWh: 1.60
    assert (short_buyer.bought_wh, short_buyer.received_wh) == (8_000, 5_000)
    assert short_buyer.saved == Decimal("0.44") and short_buyer.net == Decimal("-1.16")
    # home-03 sold 12 kWh for EUR 1.755; feed-in would have paid 12 x 0.08 = 0.96
    assert (seller.sold_wh, seller.delivered_wh, seller.defaults) == (12_000, 12_000, 0)
    assert seller.earned == Decimal("1.755") and seller.saved == Decimal("0.795")
    # home-04 sold 8 kWh, delivered 5 (one default), paid EUR 0.975; feed-in for 5 kWh: 0.40
    assert (short_seller.sold_wh, short_seller.delivered_wh, short_seller.defaults) == (
        8_000,
        5_000,
        1,
    )
    assert short_seller.earned == Decimal("0.975") and short_seller.saved == Decimal("0.575")
    # the homes' nets add up to minus the commission (0.045 + 0.025) and the fees (0.24 + 0.16)
    assert sum((a.net for a in accounts.values()), Decimal(0)) == Decimal("-0.47")


def test_csv_files_have_one_row_per_trade_and_per_home_in_currency_units(
    tmp_path: Path,
) -> None:
    data = report_data(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    trades_csv, statements_csv = write_csvs(out, data)
    assert (trades_csv.name, statements_csv.name) == ("trades.csv", "statements.csv")
    with trades_csv.open(newline="", encoding="utf-8") as f:
        trades = list(csv.reader(f))
    assert trades == [
        [
            "trade",
            "interval_start_local",
            "seller",
            "buyer",
            "wh",
            "price_EUR_per_kWh",
            "value_EUR",
            "buyer_paid_EUR",
            "seller_received_EUR",
            "status",
            "delivered_wh",
        ],
        [
            "t1",
            "2025-04-11 12:00",
            "home-03",
            "home-01",
            "12000",
            "0.15",
            "1.80",
            "2.04",
            "1.755",
            "delivered",
            "12000",
        ],
        [
            "t2",
            "2025-04-11 18:30",
            "home-04",
            "home-02",
            "8000",
            "0.125",
            "1.00",
            "1.16",
            "0.975",
            "defaulted",
            "5000",
        ],
    ]
    with statements_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["home"] for r in rows] == ["home-01", "home-02", "home-03", "home-04"]
    assert rows[1] == {
        "home": "home-02",
        "earned_EUR": "0.00",
        "paid_EUR": "1.16",
        "saved_EUR": "0.44",
        "net_EUR": "-1.16",
        "sold_kWh": "0.000",
        "delivered_kWh": "0.000",
        "defaults": "0",
        "bought_kWh": "8.000",
        "received_kWh": "5.000",
    }
    assert rows[3]["saved_EUR"] == "0.575" and rows[3]["defaults"] == "1"
    assert not list(out.glob("*.tmp"))


def test_the_report_shows_the_homes_table_in_euros_and_links_the_csv_files(
    tmp_path: Path,
) -> None:
    data = report_data(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    write_report(out / "report.html", data)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'href="trades.csv"' not in page  # not written yet: not linked
    write_csvs(out, data)
    write_report(out / "report.html", data)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'href="trades.csv"' in page and 'href="statements.csv"' in page
    table = page[page.index('<table class="accounts">') : page.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in rows]
    assert cells[1] == ["home-01", "€0.00", "€2.04", "€1.80", "-€2.04", "0.0", "0.0", "0", "12.0"]
    assert cells[4] == ["home-04", "€0.98", "€0.00", "€0.58", "€0.98", "8.0", "5.0", "1", "0.0"]
    assert cells[5][:5] == ["All homes", "€2.73", "€3.20", "€3.61", "-€0.47"]
    assert "€0.32 per kWh" in page and "€0.08 per kWh" in page  # how saved is counted
    assert "€2.24" in page  # buyers' saving: 1.80 + 0.44
    assert "€1.37" in page  # sellers' gain over feed-in: 0.795 + 0.575
    assert "microtick" not in page.lower()


def test_the_report_takes_its_tariffs_and_currency_from_the_data(tmp_path: Path) -> None:
    data = report_data(tmp_path)
    data.grid_price, data.feed_in_price = 400, 50
    data.currency = Currency(code="GBP", symbol="£", tick_value=Decimal("0.001"))
    write_report(tmp_path / "report.html", data)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    # home-01: 12 kWh at the grid's 0.40 = 4.80, minus 2.04 paid
    assert "£2.76" in page and "£0.40 per kWh" in page and "£0.05 per kWh" in page
    assert "€" not in page


def test_stage_lines_are_plain_words(tmp_path: Path) -> None:
    data = report_data(tmp_path)
    data.stages = dict(data.stages) | {
        "meters": "ran (the real firmware, device/ngmeter, hosted on CPython); "
        "lock refusals by the firmware: 3"
    }
    write_report(tmp_path / "report.html", data)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    start = page.index('<ul class="stages">')
    stages = page[start : page.index("</ul>", start)]
    assert stages.count("<li>") == 8
    for jargon in ("CPython", "device/ngmeter", "amqtt", "127.0.0.1", "Merkle", "RPC", "ran ("):
        assert jargon not in stages, jargon
    assert "turned down 3 of the gateway&#x27;s requests" in stages
    assert "every battery home&#x27;s meter ran its real firmware" in stages
    assert "1 of 1 batches" in stages and "2 of 2 trades" in stages


def test_the_battery_figure_names_the_homes_own_reserves() -> None:
    from dataclasses import replace

    from neighbourgrid.simulate.report import _reserves

    homes = make_homes(12, 7)  # every battery at the default 20 %
    assert _reserves(homes) == (20.0, "20 %")
    first = next(i for i, h in enumerate(homes) if h.battery is not None)
    battery = homes[first].battery
    assert battery is not None
    homes[first] = replace(homes[first], battery=replace(battery, reserve_bp=2500))
    assert _reserves(homes) == (20.0, "20-25 %")  # a scenario file set one home's reserve
    assert _reserves([h for h in homes if h.battery is None]) == (20.0, "20 %")
