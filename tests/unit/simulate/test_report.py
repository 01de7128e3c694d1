"""The report writer, the simulated clock and the firmware's hal over the physics."""

from __future__ import annotations

import json
import re
import time
from datetime import date
from pathlib import Path

import pytest

from edge.errors import ConfigError
from hil.virtual.simhal import TICKS_PERIOD, HostClock, SimHal
from neighbourgrid.simulate.firmware import PhysicsSensors
from neighbourgrid.simulate.homes import make_homes
from neighbourgrid.simulate.physics import run_baseline
from neighbourgrid.simulate.report import (
    ReportData,
    write_overview_png,
    write_report,
    write_summary,
)
from neighbourgrid.simulate.run import SimClock, SimConfig, behaviours


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


def test_sim_clock_jumps_and_is_capped() -> None:
    clock = SimClock(1_000)
    first = clock()
    assert first >= 1_000
    clock.jump(5_000_000, cap=5_000_010)
    time.sleep(0.03)
    assert clock() == 5_000_010
    clock.jump(6_000_000)
    assert 6_000_000 <= clock() < 6_000_000 + 5_000


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
