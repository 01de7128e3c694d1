"""A scenario: which homes, where, under which weather, tariff and currency a simulation runs.

``ngrid simulate --scenario FILE.toml`` reads one with :func:`load_scenario`; without it the run
uses :func:`default_scenario`, today's seeded mix (:func:`~neighbourgrid.simulate.homes.make_homes`)
on pvlib's shipped weather year at its own location, with the default tariff and currency.
docs/scenario.md describes the file, key by key.

Every value is checked before anything runs: an error is a :class:`edge.errors.ConfigError`
naming the key (``homes[3].battery_kwh: must be > 0``, ``tariff.grid_prise: unknown setting``).
A relative weather file is taken from the scenario file's own directory.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.settings import REQUIRED, Table
from neighbourgrid.simulate.battery import BatterySpec
from neighbourgrid.simulate.homes import Home, make_homes
from neighbourgrid.simulate.inputs import Location, default_weather_file, read_weather
from neighbourgrid.simulate.money import Currency

__all__ = [
    "MAX_HOMES",
    "MIN_HOMES",
    "Scenario",
    "Tariff",
    "Trading",
    "default_scenario",
    "describe",
    "load_scenario",
    "parse_scenario",
]

MIN_HOMES = 2
MAX_HOMES = 1000
DEFAULT_C_RATE = 0.5  # a battery's power limit when the file gives neither W nor C-rate
DEFAULT_INITIAL_SOC_BP = 5_000
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")  # also the meter's id ("m-<id>") and MQTT topics
_CODE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, kw_only=True)
class Tariff:
    """What the grid charges per kWh imported (``grid_price``) and pays per kWh exported
    (``feed_in_price``), both in ticks/kWh."""

    grid_price: int = 320
    feed_in_price: int = 80


@dataclass(frozen=True, kw_only=True)
class Trading:
    """The seeded draws for homes that do not set their own prices: a seller's ``sell_above_bp``
    is one of ``sell_above_bp``, its ``sell_price`` and a buyer's ``buy_price`` lie in the
    inclusive ranges, on multiples of ``step`` ticks from the range's low end."""

    sell_above_bp: tuple[int, ...] = (5_000, 6_000, 7_000)
    sell_price: tuple[int, int] = (110, 170)
    buy_price: tuple[int, int] = (230, 300)
    step: int = 5


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A neighbourhood to simulate: ``homes`` (with any prices they set), PV ``location`` and
    ``weather`` file, ``tariff``, ``currency`` (of the report), ``trading`` (the seeded price
    ranges), the scenario's ``name`` and the file it came from (``path``; None when built in)."""

    homes: tuple[Home, ...]
    name: str = "default"
    path: Path | None = None
    location: Location = field(default_factory=Location)
    weather: Path = field(default_factory=default_weather_file)
    tariff: Tariff = field(default_factory=Tariff)
    currency: Currency = field(default_factory=Currency)
    trading: Trading = field(default_factory=Trading)


def default_scenario(homes: int, seed: int) -> Scenario:
    """Today's defaults: ``make_homes(homes, seed)`` on pvlib's shipped TMY3 at its own location,
    a 320/80 ticks/kWh tariff, EUR at 0.001 per tick. ConfigError (key ``homes``) for fewer than
    two homes."""
    try:
        mix = make_homes(homes, seed)
    except ValueError as err:
        raise ConfigError(str(err), key="homes") from None
    return Scenario(homes=tuple(mix))


def load_scenario(path: str | Path) -> Scenario:
    """Read and check the scenario file at ``path`` (TOML; docs/scenario.md).

    Raises :class:`ConfigError` naming the offending key, or ``scenario`` for a file that cannot
    be read or is not TOML.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}", key="scenario") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}", key="scenario") from None
    return parse_scenario(data, base=path.resolve().parent, path=path, name=path.stem)


def parse_scenario(
    data: dict[str, Any], *, base: Path, path: Path | None = None, name: str = "scenario"
) -> Scenario:
    """Check a parsed scenario document; a relative weather file is taken from ``base``."""
    root = Table(data)
    title = root.text("name", name)
    if not title.strip():
        raise ConfigError("must not be empty", key="name")
    tariff = _tariff(root.table("tariff"))
    trading = _trading(root.table("trading"))
    currency = _currency(root.table("currency"))
    location = _location(root.table("location"))
    weather = _weather(root.table("weather"), base)
    entries = root.get("homes", (list,), "an array of tables ([[homes]])", REQUIRED)
    if not MIN_HOMES <= len(entries) <= MAX_HOMES:
        raise ConfigError(
            f"must list {MIN_HOMES}..{MAX_HOMES} homes, got {len(entries)}", key="homes"
        )
    homes: list[Home] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        key = f"homes[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"expected a table, got {entry!r}", key=key)
        home = _home(Table(entry, key))
        if home.id in seen:
            raise ConfigError(f"{home.id!r} is already used by another home", key=f"{key}.id")
        seen.add(home.id)
        homes.append(home)
    root.done()
    return Scenario(
        homes=tuple(homes),
        name=title,
        path=path,
        location=location,
        weather=weather,
        tariff=tariff,
        currency=currency,
        trading=trading,
    )


# ---------------------------------------------------------------------------- readers


def _number(
    table: Table,
    name: str,
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> Any:
    """A finite int or float setting as a float, within the bounds given (None stays None)."""
    value = table.get(name, (int, float), "a number", default)
    if value is None:
        return None
    value = float(value)
    key = table.key(name)
    if not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value}", key=key)
    if gt is not None and value <= gt:
        raise ConfigError(f"must be > {gt:g}, got {value:g}", key=key)
    if ge is not None and value < ge:
        raise ConfigError(f"must be >= {ge:g}, got {value:g}", key=key)
    if le is not None and value > le:
        raise ConfigError(f"must be <= {le:g}, got {value:g}", key=key)
    return value


def _int_range(table: Table, name: str, default: tuple[int, int]) -> tuple[int, int]:
    value = table.get(name, (list,), "[low, high]", default)
    key = table.key(name)
    if len(value) != 2 or any(type(v) is not int for v in value) or not 1 <= value[0] <= value[1]:
        raise ConfigError(f"expected [low, high] with 1 <= low <= high, got {value!r}", key=key)
    return int(value[0]), int(value[1])


def _tariff(table: Table) -> Tariff:
    defaults = Tariff()
    tariff = Tariff(
        grid_price=table.integer("grid_price", defaults.grid_price, lo=1),
        feed_in_price=table.integer("feed_in_price", defaults.feed_in_price, lo=0),
    )
    table.done()
    return tariff


def _trading(table: Table) -> Trading:
    defaults = Trading()
    above = table.get("sell_above_bp", (list,), "a list of basis points", defaults.sell_above_bp)
    if not above or any(type(v) is not int or not 0 <= v <= 10_000 for v in above):
        raise ConfigError(
            f"expected a non-empty list of 0..10000, got {above!r}",
            key=table.key("sell_above_bp"),
        )
    trading = Trading(
        sell_above_bp=tuple(above),
        sell_price=_int_range(table, "sell_price", defaults.sell_price),
        buy_price=_int_range(table, "buy_price", defaults.buy_price),
        step=table.integer("step", defaults.step, lo=1),
    )
    table.done()
    return trading


def _currency(table: Table) -> Currency:
    defaults = Currency()
    code = table.text("code", defaults.code)
    if not _CODE.match(code):
        raise ConfigError(
            f"expected an ISO 4217 code like EUR, got {code!r}", key=table.key("code")
        )
    symbol = table.text("symbol", defaults.symbol)
    if not symbol.strip():
        raise ConfigError("must not be empty", key=table.key("symbol"))
    raw = table.get("tick_value", (str, int, float), 'a decimal string like "0.001"', None)
    tick_value = defaults.tick_value
    if raw is not None:
        try:
            tick_value = Decimal(str(raw).strip())
        except InvalidOperation:
            tick_value = Decimal("NaN")
        if not tick_value.is_finite() or tick_value <= 0:
            raise ConfigError(
                f'expected a positive decimal like "0.001", got {raw!r}',
                key=table.key("tick_value"),
            )
    decimals = table.integer("decimals", defaults.decimals, hi=6)
    table.done()
    return Currency(code=code, symbol=symbol, tick_value=tick_value, decimals=decimals)


def _standard_offset(table: Table, zone: str) -> float:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {zone!r} (an IANA name like Europe/Berlin)",
            key=table.key("timezone"),
        ) from None
    moment = datetime(2025, 1, 1, 12)
    offset = tz.utcoffset(moment)
    dst = tz.dst(moment)
    if offset is None:  # pragma: no cover - ZoneInfo always knows
        raise ConfigError("has no UTC offset", key=table.key("timezone"))
    return (offset - (dst or timedelta(0))).total_seconds() / 3600


def _location(table: Table) -> Location:
    """Each figure left out is the weather file's own (inputs.Location)."""
    defaults = Location()
    utc_offset = _number(table, "utc_offset", None, ge=-12, le=14)
    zone = table.text("timezone", None)
    if zone is not None:
        if utc_offset is not None:
            raise ConfigError("set utc_offset or timezone, not both", key=table.key("timezone"))
        utc_offset = _standard_offset(table, zone)
    location = Location(
        latitude=_number(table, "latitude", None, ge=-90, le=90),
        longitude=_number(table, "longitude", None, ge=-180, le=180),
        altitude=_number(table, "altitude", None, ge=-500, le=9000),
        utc_offset=utc_offset,
        tilt=_number(table, "tilt", defaults.tilt, ge=0, le=90),
        azimuth=_number(table, "azimuth", defaults.azimuth, ge=0, le=360),
    )
    table.done()
    return location


def _weather(table: Table, base: Path) -> Path:
    value = table.text("file", None)
    table.done()
    if value is None:
        return default_weather_file()
    key = table.key("file")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (base / path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}", key=key)
    try:
        read_weather(path.resolve())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}", key=key) from None
    except ValueError as err:
        raise ConfigError(str(err), key=key) from None
    return path.resolve()


def _home(table: Table) -> Home:
    home_id = table.text("id")
    if not _ID.match(home_id):
        raise ConfigError("use 1-32 letters, digits, '.', '_' or '-'", key=table.key("id"))
    persons = table.integer("persons", 0, hi=20)
    annual_kwh = _number(table, "annual_kwh", REQUIRED, gt=0, le=1_000_000)
    pv_kwp = _number(table, "pv_kwp", 0.0, ge=0, le=10_000)
    battery_kwh = _number(table, "battery_kwh", None, gt=0, le=10_000)
    power_w = table.integer("battery_power_w", None, lo=1)
    c_rate = _number(table, "battery_c_rate", None, gt=0, le=10)
    round_trip_bp = table.integer("round_trip_bp", None, lo=1, hi=10_000)
    reserve_bp = table.integer("reserve_bp", None, hi=9_999)
    initial_soc_bp = table.integer("initial_soc_bp", None, hi=10_000)
    manual = table.flag("manual", False)
    sell_above_bp = table.integer("sell_above_bp", None, hi=10_000)
    sell_price = table.integer("sell_price", None, lo=1)
    buy_price = table.integer("buy_price", None, lo=1)
    table.done()

    battery: BatterySpec | None = None
    if battery_kwh is None:
        for name, value in (
            ("battery_power_w", power_w),
            ("battery_c_rate", c_rate),
            ("round_trip_bp", round_trip_bp),
            ("reserve_bp", reserve_bp),
            ("initial_soc_bp", initial_soc_bp),
            ("sell_above_bp", sell_above_bp),
            ("sell_price", sell_price),
        ):
            if value is not None:
                raise ConfigError("needs a battery (battery_kwh)", key=table.key(name))
        if manual:
            raise ConfigError(
                "manual orders sell from a battery: set battery_kwh", key=table.key("manual")
            )
    else:
        if buy_price is not None:
            raise ConfigError(
                "only homes without a battery bid (battery homes sell)",
                key=table.key("buy_price"),
            )
        if power_w is not None and c_rate is not None:
            raise ConfigError(
                "set battery_power_w or battery_c_rate, not both", key=table.key("battery_c_rate")
            )
        capacity_wh = round(battery_kwh * 1000)
        if capacity_wh < 1:
            raise ConfigError("must be at least 0.001 (1 Wh)", key=table.key("battery_kwh"))
        if power_w is None:
            power_w = max(1, round((c_rate or DEFAULT_C_RATE) * capacity_wh))
        if initial_soc_bp is None:
            initial_soc_bp = DEFAULT_INITIAL_SOC_BP
        given = {"round_trip_bp": round_trip_bp, "reserve_bp": reserve_bp}
        try:
            battery = BatterySpec(
                capacity_wh=capacity_wh,
                max_charge_w=power_w,
                max_discharge_w=power_w,
                **{name: value for name, value in given.items() if value is not None},
            )
        except ValueError as err:  # pragma: no cover - the reads above bound every field
            raise ConfigError(str(err), key=table.path) from None
    return Home(
        id=home_id,
        persons=persons,
        annual_kwh=annual_kwh,
        pv_kwp=pv_kwp,
        battery=battery,
        initial_soc_bp=0 if battery is None else initial_soc_bp,
        manual=manual,
        sell_above_bp=sell_above_bp,
        sell_price=sell_price,
        buy_price=buy_price,
    )


def describe(scenario: Scenario) -> dict[str, Any]:
    """What summary.json records of the scenario: its name, file, weather file, tariff and
    currency (``tick_value`` as an exact decimal string)."""
    return {
        "scenario": {
            "name": scenario.name,
            "path": str(scenario.path) if scenario.path is not None else None,
            "weather": scenario.weather.name,
        },
        "tariff": {
            "grid_price": scenario.tariff.grid_price,
            "feed_in_price": scenario.tariff.feed_in_price,
        },
        "currency": {
            "code": scenario.currency.code,
            "symbol": scenario.currency.symbol,
            "tick_value": str(scenario.currency.tick_value),
        },
    }
