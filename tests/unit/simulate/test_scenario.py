"""Scenario files (neighbourgrid.simulate.scenario): the example, every check naming its key,
weather paths relative to the file, the built-in default equal to today's generated mix, and a
weather file of either format (TMY3, EPW) giving the same PV."""

from __future__ import annotations

import copy
import shutil
import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.errors import ConfigError
from neighbourgrid.cli import main
from neighbourgrid.simulate import inputs
from neighbourgrid.simulate.homes import make_homes
from neighbourgrid.simulate.inputs import Location, default_weather_file
from neighbourgrid.simulate.money import Currency
from neighbourgrid.simulate.physics import run_baseline
from neighbourgrid.simulate.run import SimConfig, behaviours
from neighbourgrid.simulate.scenario import (
    Scenario,
    Tariff,
    Trading,
    default_scenario,
    describe,
    load_scenario,
    parse_scenario,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "scenario.toml"

# The smallest valid document: a seller and a buyer.
MINIMAL: dict[str, Any] = {
    "homes": [
        {"id": "a", "annual_kwh": 3000, "pv_kwp": 6, "battery_kwh": 10},
        {"id": "b", "annual_kwh": 2500},
    ]
}


def parse(doc: dict[str, Any], base: Path | None = None) -> Scenario:
    return parse_scenario(doc, base=base or Path("."))


def with_change(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with ``path`` (``homes.1.battery_kwh``, ``tariff.grid_price``) set to
    ``value``; a ``...`` value deletes the key."""
    doc = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


# ---------------------------------------------------------------------------- the example


def test_the_example_file_loads() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.name == "Six homes in Greensboro, NC"
    assert scenario.path == EXAMPLE
    assert len(scenario.homes) == 6
    kinds = [h.kind for h in scenario.homes]
    assert kinds.count("PV+battery") == 3
    assert sum(h.manual for h in scenario.homes) == 1
    assert sum(h.battery is None for h in scenario.homes) == 3
    assert scenario.tariff == Tariff(grid_price=150, feed_in_price=50)
    assert scenario.currency == Currency(code="USD", symbol="$", tick_value=Decimal("0.001"))
    assert scenario.trading == Trading(
        sell_above_bp=(5000, 6000), sell_price=(70, 110), buy_price=(115, 145), step=5
    )
    assert scenario.location == Location(
        latitude=36.1, longitude=-79.95, altitude=273.0, utc_offset=-5.0, tilt=30.0, azimuth=180.0
    )
    assert scenario.weather == default_weather_file()
    first = scenario.homes[0]
    assert first.battery is not None
    assert (first.battery.capacity_wh, first.battery.max_discharge_w) == (10_000, 5_000)
    assert (first.battery.reserve_bp, first.battery.round_trip_bp) == (2000, 9000)
    second = scenario.homes[1]
    assert second.battery is not None
    assert second.battery.max_charge_w == round(0.37 * 13_500)
    assert second.battery.reserve_bp == 2500
    # Prices a home sets are used; the others are drawn from [trading]'s ranges.
    plan = behaviours(scenario.homes, 7, scenario.trading)
    assert (plan["maple-1"].sell_above_bp, plan["maple-1"].sell_price) == (5000, 90)
    assert plan["maple-3"].sell_above_bp in (5000, 6000)
    assert plan["maple-3"].sell_price is not None and 70 <= plan["maple-3"].sell_price <= 110
    assert plan["oak-2"].buy_price == 140
    assert plan["oak-4"].buy_price is not None and 115 <= plan["oak-4"].buy_price <= 145
    summary = describe(scenario)
    assert summary["currency"] == {"code": "USD", "symbol": "$", "tick_value": "0.001"}
    assert summary["scenario"]["name"] == scenario.name


def test_the_examples_location_is_the_weather_files_own_so_pv_is_unchanged() -> None:
    scenario = load_scenario(EXAMPLE)
    assert np.array_equal(
        inputs.pv_wh_per_kwp_year(scenario.weather, scenario.location),
        inputs.pv_wh_per_kwp_year(),
    )


# ---------------------------------------------------------------------------- the default


@pytest.mark.parametrize(("count", "seed"), [(2, 1), (4, 7), (24, 7), (384, 7)])
def test_the_default_scenario_is_todays_generated_mix(count: int, seed: int) -> None:
    scenario = default_scenario(count, seed)
    assert scenario.homes == tuple(make_homes(count, seed))
    assert scenario.tariff == Tariff(grid_price=320, feed_in_price=80)
    assert scenario.currency == Currency()
    assert scenario.location == Location()
    assert scenario.weather == default_weather_file()
    assert scenario.path is None
    # The default ranges draw exactly the prices behaviours() drew before scenarios existed.
    assert behaviours(scenario.homes, seed, scenario.trading) == behaviours(
        make_homes(count, seed), seed
    )
    assert SimConfig(homes=count, seed=seed).scenario_or_default() == scenario


def test_the_default_scenario_gives_todays_baseline() -> None:
    scenario = default_scenario(6, 2)
    start = date(2025, 4, 11)
    before = run_baseline(homes=make_homes(6, 2), start=start, days=1)
    after = run_baseline(
        homes=scenario.homes,
        start=start,
        days=1,
        weather=scenario.weather,
        location=scenario.location,
    )
    assert after.history == before.history


def test_the_default_scenario_needs_two_homes() -> None:
    with pytest.raises(ConfigError, match=r"^homes: "):
        default_scenario(1, 7)


def test_simconfig_takes_up_to_1000_homes_and_counts_a_scenarios_homes() -> None:
    SimConfig(homes=384).check()
    SimConfig(homes=1000).check()
    with pytest.raises(ConfigError, match=r"^homes: must be 2\.\.1000"):
        SimConfig(homes=1001).check()
    scenario = load_scenario(EXAMPLE)
    SimConfig(homes=5000, scenario=scenario).check()  # the scenario's six homes count
    assert SimConfig(scenario=scenario).scenario_or_default() is scenario


# ---------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("change", "value", "error"),
    [
        # a wrong type
        ("homes.0.annual_kwh", "lots", "homes[0].annual_kwh: expected a number, got 'lots'"),
        ("homes.0.manual", "yes", "homes[0].manual: expected true or false"),
        ("homes.0.battery_power_w", 2.5, "homes[0].battery_power_w: expected an integer"),
        ("homes.1.id", 7, "homes[1].id: expected a string"),
        ("tariff.grid_price", "320", "tariff.grid_price: expected an integer"),
        ("location", "Berlin", "location: expected a table"),
        ("homes", {"id": "x"}, "homes: expected an array of tables"),
        ("homes.1", "b", "homes[1]: expected a table"),
        # a missing key
        ("homes.0.annual_kwh", ..., "homes[0].annual_kwh: is required"),
        ("homes.1.id", ..., "homes[1].id: is required"),
        ("homes", ..., "homes: is required"),
        # a negative, zero or out-of-range figure
        ("homes.1.battery_kwh", -5, "homes[1].battery_kwh: must be > 0, got -5"),
        ("homes.0.battery_kwh", 0, "homes[0].battery_kwh: must be > 0, got 0"),
        ("homes.0.battery_kwh", 0.0001, "homes[0].battery_kwh: must be at least 0.001"),
        ("homes.0.annual_kwh", 0, "homes[0].annual_kwh: must be > 0"),
        ("homes.0.pv_kwp", -1, "homes[0].pv_kwp: must be >= 0"),
        ("homes.0.battery_c_rate", -0.5, "homes[0].battery_c_rate: must be > 0"),
        ("homes.0.battery_power_w", 0, "homes[0].battery_power_w: must be >= 1"),
        ("homes.0.reserve_bp", 10_000, "homes[0].reserve_bp: must be 0..9999"),
        ("homes.0.initial_soc_bp", -1, "homes[0].initial_soc_bp: must be 0..10000"),
        ("homes.0.sell_price", 0, "homes[0].sell_price: must be >= 1"),
        ("homes.0.annual_kwh", float("nan"), "homes[0].annual_kwh: must be a finite number"),
        ("tariff.feed_in_price", -1, "tariff.feed_in_price: must be >= 0"),
        ("location.latitude", 91, "location.latitude: must be <= 90"),
        ("location.utc_offset", -13, "location.utc_offset: must be >= -12"),
        ("location.tilt", 95, "location.tilt: must be <= 90"),
        ("homes", [MINIMAL["homes"][0]], "homes: must list 2..1000 homes, got 1"),
        # an unknown key, named
        ("homes.0.colour", "red", "homes[0].colour: unknown setting"),
        ("tariff.grid_prise", 300, "tariff.grid_prise: unknown setting"),
        ("currency.rate", 1, "currency.rate: unknown setting"),
        ("weather.path", "x.csv", "weather.path: unknown setting"),
        ("hoems", [], "hoems: unknown setting"),
        # settings that contradict each other
        ("homes.1.id", "a", "homes[1].id: 'a' is already used by another home"),
        ("homes.1.id", "a b", "homes[1].id: use 1-32 letters"),
        ("homes.1.manual", True, "homes[1].manual: manual orders sell from a battery"),
        ("homes.1.sell_price", 120, "homes[1].sell_price: needs a battery (battery_kwh)"),
        ("homes.1.battery_power_w", 3000, "homes[1].battery_power_w: needs a battery"),
        ("homes.0.buy_price", 250, "homes[0].buy_price: only homes without a battery bid"),
        ("location.timezone", "Mars/Olympus", "location.timezone: unknown time zone"),
        ("currency.code", "euro", "currency.code: expected an ISO 4217 code"),
        ("currency.tick_value", "abc", "currency.tick_value: expected a positive decimal"),
        ("currency.tick_value", "-0.01", "currency.tick_value: expected a positive decimal"),
        ("currency.decimals", 7, "currency.decimals: must be 0..6"),
        ("trading.sell_price", [170, 110], "trading.sell_price: expected [low, high]"),
        ("trading.buy_price", [230], "trading.buy_price: expected [low, high]"),
        ("trading.sell_above_bp", [], "trading.sell_above_bp: expected a non-empty list"),
        ("name", " ", "name: must not be empty"),
    ],
)
def test_each_bad_setting_is_an_error_naming_its_key(change: str, value: Any, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_change(change, value))
    assert str(caught.value).startswith(error), str(caught.value)
    assert caught.value.key is not None
    assert error.startswith(caught.value.key + ": ")


def test_power_and_c_rate_together_are_refused() -> None:
    doc = with_change("homes.0.battery_power_w", 4000)
    doc["homes"][0]["battery_c_rate"] = 0.5
    with pytest.raises(ConfigError, match=r"^homes\[0\]\.battery_c_rate: set battery_power_w or"):
        parse(doc)


def test_utc_offset_and_timezone_together_are_refused() -> None:
    doc = with_change("location.utc_offset", 1)
    doc["location"]["timezone"] = "Europe/Berlin"
    with pytest.raises(ConfigError, match=r"^location\.timezone: set utc_offset or timezone"):
        parse(doc)


def test_defaults_of_a_minimal_file() -> None:
    scenario = parse(MINIMAL)
    seller, buyer = scenario.homes
    assert seller.battery is not None
    assert seller.battery.capacity_wh == 10_000
    assert seller.battery.max_charge_w == seller.battery.max_discharge_w == 5_000  # 0.5 C
    assert (seller.battery.reserve_bp, seller.battery.round_trip_bp) == (2000, 9000)
    assert seller.initial_soc_bp == 5000
    assert (buyer.battery, buyer.pv_kwp, buyer.initial_soc_bp, buyer.manual) == (
        None,
        0.0,
        0,
        False,
    )
    assert scenario.tariff == Tariff()
    assert scenario.currency == Currency()
    assert scenario.trading == Trading()
    assert scenario.location == Location()
    assert scenario.weather == default_weather_file()


@pytest.mark.parametrize(
    ("zone", "hours"),
    [("America/New_York", -5.0), ("Asia/Kolkata", 5.5), ("Australia/Sydney", 10.0)],
)
def test_a_timezone_gives_its_standard_offset(zone: str, hours: float) -> None:
    # Standard time even where 1 January is in daylight saving time (Sydney).
    assert parse(with_change("location.timezone", zone)).location.utc_offset == hours


def test_a_tick_value_may_be_a_number_and_stays_exact() -> None:
    scenario = parse(with_change("currency.tick_value", 0.001))
    assert scenario.currency.tick_value == Decimal("0.001")


def test_unreadable_or_malformed_files_name_the_scenario(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^scenario: cannot read"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[tariff\ngrid_price = 1\n")
    with pytest.raises(ConfigError, match=r"^scenario: .* is not valid TOML"):
        load_scenario(bad)


def test_the_cli_refuses_a_scenario_with_homes(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["simulate", "--scenario", str(EXAMPLE), "--homes", "4", "--no-progress"])
    assert status == 2
    assert "homes: the scenario file lists the homes" in capsys.readouterr().err


def test_the_cli_names_the_key_of_a_bad_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text().replace("battery_kwh = 7.7", "battery_kwh = -7.7")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["simulate", "--scenario", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "ngrid: error: homes[2].battery_kwh: must be > 0, got -7.7" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- weather files


def scenario_text(weather: str) -> str:
    return (
        f'[weather]\nfile = "{weather}"\n\n'
        '[[homes]]\nid = "a"\nannual_kwh = 3000\npv_kwp = 5\n\n'
        '[[homes]]\nid = "b"\nannual_kwh = 2000\n'
    )


def test_a_relative_weather_file_is_taken_from_the_scenarios_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "scenarios"
    (folder / "weather").mkdir(parents=True)
    shutil.copy(default_weather_file(), folder / "weather" / "gso.csv")
    (folder / "mine.toml").write_text(scenario_text("weather/gso.csv"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for path in (folder / "mine.toml", Path("..") / "scenarios" / "mine.toml"):
        scenario = load_scenario(path)
        assert scenario.weather == (folder / "weather" / "gso.csv").resolve()
    # The same file under another name gives the same PV.
    assert np.array_equal(
        inputs.pv_wh_per_kwp_year(scenario.weather, scenario.location),
        inputs.pv_wh_per_kwp_year(),
    )
    # Relative to the scenario, not to the working directory.
    monkeypatch.chdir(folder)
    (tmp_path / "other.toml").write_text(scenario_text("weather/gso.csv"))
    with pytest.raises(ConfigError, match=r"^weather\.file: no such file: .*weather/gso\.csv"):
        load_scenario(tmp_path / "other.toml")


def test_a_weather_file_that_is_not_a_typical_year_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("this is not weather\n1,2,3\n")
    (tmp_path / "s.toml").write_text(scenario_text("notes.csv"))
    with pytest.raises(ConfigError, match=r"^weather\.file: .*notes\.csv"):
        load_scenario(tmp_path / "s.toml")


def write_epw(path: Path) -> None:
    """The shipped TMY3 rewritten as an EPW file (EPW stamps each row with the hour it ends,
    1-24, as TMY3 does; pvlib's reader stamps it with the hour's start)."""
    weather, meta = inputs.read_weather(default_weather_file())
    lines = [
        "LOCATION,Greensboro,NC,USA,TMY3,723170,{},{},{},{}".format(
            meta["latitude"], meta["longitude"], meta["TZ"], meta["altitude"]
        ),
        "DESIGN CONDITIONS,0",
        "TYPICAL/EXTREME PERIODS,0",
        "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
        "COMMENTS 1,written by the test from 723170TYA.CSV",
        "COMMENTS 2,",
        "DATA PERIODS,1,1,Data,Wednesday, 1/ 1,12/31",
    ]
    for stamp, row in weather.iterrows():
        start = stamp - np.timedelta64(1, "h")  # the hour this row ends, 1-24
        fields = [2025, start.month, start.day, start.hour + 1, 0, "?"]
        fields += [row["temp_air"], 0, 50, 101325, 0, 0, 300]
        fields += [row["ghi"], row["dni"], row["dhi"], 0, 0, 0, 0]
        fields += [180, row["wind_speed"], 0, 0, 10, 77777, 9, 999999999]
        fields += [0, 0.1, 0, 88, 0.2, 0, 0]
        lines.append(",".join(str(f) for f in fields))
    path.write_text("\n".join(lines) + "\n")


def test_an_epw_file_gives_the_same_pv_as_the_tmy3_it_was_written_from(tmp_path: Path) -> None:
    epw = tmp_path / "gso.epw"
    write_epw(epw)
    (tmp_path / "s.toml").write_text(scenario_text("gso.epw"))
    scenario = load_scenario(tmp_path / "s.toml")
    assert scenario.weather == epw.resolve()
    from_epw = inputs.pv_wh_per_kwp_year(scenario.weather, scenario.location)
    assert np.allclose(from_epw, inputs.pv_wh_per_kwp_year(), atol=1e-6)


def test_tilt_and_azimuth_change_the_pv() -> None:
    default = inputs.pv_wh_per_kwp_year()
    east = inputs.pv_wh_per_kwp_year(None, Location(azimuth=90.0))
    assert 0.7 * default.sum() < east.sum() < default.sum()  # less than facing south
    noon = 48  # 12:00 local standard time: an east roof has its best hours before it
    by_day = east.reshape(365, 96)
    assert by_day[:, :noon].sum() > by_day[:, noon:].sum()


def test_toml_example_in_the_docs_is_the_example_file() -> None:
    """docs/scenario.md shows the example file in full; they must not drift apart."""
    doc = (EXAMPLE.parent.parent / "scenario.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    assert tomllib.loads(block) == tomllib.loads(EXAMPLE.read_text())
