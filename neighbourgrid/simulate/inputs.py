"""Real input data: household load from the BDEW H0 profile, PV from pvlib on a shipped TMY3 file.

Both come from files inside installed packages, so nothing is fetched from the network:

- Household load: the BDEW H0 standard load profile with its dynamisation function, as demandlib
  ships it (``demandlib.bdew.ElecSlp(year).get_profiles("h0_dyn")``), 15-minute resolution,
  normalised over the year and scaled to each home's annual consumption.
- PV: by default the typical meteorological year (TMY3) for Greensboro, North Carolina (36.1 N)
  that pvlib ships as ``pvlib/data/723170TYA.CSV``, read with :func:`pvlib.iotools.read_tmy3`;
  a scenario (:mod:`neighbourgrid.simulate.scenario`) may name another TMY3 or an EPW file
  (:func:`pvlib.iotools.read_epw`) and a :class:`Location` (each figure it leaves out is the
  weather file's own; the roof 30 degrees, facing south, unless it says otherwise). Hourly
  irradiance is interpolated to the 15-minute grid, transposed onto the roof (Hay-Davies),
  turned into cell temperature (SAPM, close-mounted glass/glass), DC power (PVWatts,
  -0.4 %/K), 14 % system losses (PVWatts defaults) and AC power (PVWatts inverter).
  Output is zero whenever the sun is below the horizon.

The load profile is German and the weather American: both are standard, openly shipped data sets,
and the simulation uses local standard time for both (documented in docs/simulate.md).

Floats live here only; the functions that hand energy to the rest of the simulation return
integer Wh per interval, rounded so that running sums are exact (largest-remainder on cumulative
values), hence a home's load over the whole year adds up to its annual consumption to the Wh.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "INTERVALS_PER_DAY",
    "INTERVAL_S",
    "WEATHER_FILE",
    "YEAR",
    "Location",
    "cumulative_round",
    "default_weather_file",
    "h0_profile",
    "interval_index",
    "load_wh",
    "pv_wh",
    "pv_wh_per_kwp_year",
    "read_weather",
]

INTERVAL_S = 900  # the BDEW profile's resolution, and the market's delivery interval
INTERVALS_PER_DAY = 86_400 // INTERVAL_S
YEAR = 2025  # the calendar (weekdays, holidays) both data sets are laid on; not a leap year
_YEAR_INTERVALS = 365 * INTERVALS_PER_DAY


def _pvlib_data(name: str) -> Path:
    import importlib.util

    # Found without importing pvlib (which takes a while): its package directory.
    spec = importlib.util.find_spec("pvlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pvlib is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


WEATHER_FILE = "723170TYA.CSV"
_HOURS_IN_YEAR = 8760


def default_weather_file() -> Path:
    """pvlib's shipped TMY3 for Greensboro, NC: ``pvlib/data/723170TYA.CSV``."""
    return _pvlib_data(WEATHER_FILE)


@dataclass(frozen=True, kw_only=True)
class Location:
    """Where the PV is: ``latitude`` and ``longitude`` (degrees, east positive), ``altitude``
    (m), ``utc_offset`` (hours of local standard time, e.g. -5.0 or 5.5); each left None is the
    weather file's own. ``tilt`` (degrees from horizontal) and ``azimuth`` (degrees clockwise
    from north: 180 faces south) are the roof's."""

    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    utc_offset: float | None = None
    tilt: float = 30.0
    azimuth: float = 180.0


@lru_cache(maxsize=4)
def read_weather(path: Path) -> tuple[Any, dict[str, Any]]:
    """A typical year of hourly weather and its metadata: ``*.epw`` with
    :func:`pvlib.iotools.read_epw`, anything else as TMY3 with :func:`pvlib.iotools.read_tmy3`,
    laid on :data:`YEAR`. The data has ``ghi``, ``dni``, ``dhi``, ``temp_air`` and
    ``wind_speed`` columns, stamped at the end of each hour (TMY3's stamps; pvlib stamps EPW
    rows at the start of their hour, so those move on by an hour); the metadata ``latitude``,
    ``longitude``, ``altitude`` and ``TZ`` (hours).

    Raises ValueError if the file is not a whole typical year of either format (OSError if it
    cannot be read).
    """
    import pandas as pd
    import pvlib

    epw = path.suffix.lower() == ".epw"
    try:
        if epw:
            data, meta = pvlib.iotools.read_epw(str(path), coerce_year=YEAR)
            data.index = data.index + pd.Timedelta(hours=1)  # the end of each hour, as TMY3
        else:
            data, meta = pvlib.iotools.read_tmy3(str(path), coerce_year=YEAR, map_variables=True)
    except OSError:
        raise
    except Exception as err:  # pandas and pvlib raise many kinds for a malformed file
        raise ValueError(f"{path} is not a {'EPW' if epw else 'TMY3'} weather file: {err}") from err
    missing = {"ghi", "dni", "dhi", "temp_air", "wind_speed"} - set(data.columns)
    if missing:
        raise ValueError(f"{path} has no {', '.join(sorted(missing))} data")
    if len(data) != _HOURS_IN_YEAR:
        raise ValueError(f"{path} has {len(data)} hours; a typical year has {_HOURS_IN_YEAR}")
    for name in ("latitude", "longitude", "altitude", "TZ"):
        if not isinstance(meta.get(name), int | float):
            raise ValueError(f"{path} has no {name} in its header")
    return data, meta


def _tz(offset_h: float) -> Any:
    if float(offset_h).is_integer():
        return f"Etc/GMT{int(-offset_h):+d}"  # -5 -> Etc/GMT+5 (POSIX sign convention)
    return timezone(timedelta(hours=offset_h))


def cumulative_round(values: Sequence[float] | np.ndarray, scale: float = 1.0) -> list[int]:
    """Integers whose running sums are the rounded running sums of ``values * scale``.

    Each element differs from its float by less than one, and every prefix sum is within 0.5 of
    the float prefix sum, so totals are preserved. Values must be non-negative.
    """
    cum = np.rint(np.cumsum(np.asarray(values, dtype=float) * scale)).astype(np.int64)
    out = np.diff(cum, prepend=0)
    return [int(x) for x in out]


def interval_index(start: date, intervals: int) -> int:
    """The interval of the year (0-based) at which ``start`` begins; raises ValueError if
    ``start`` plus ``intervals`` does not fit in the year the data sets cover."""
    first = (start - date(YEAR, 1, 1)).days * INTERVALS_PER_DAY
    if start.year != YEAR or first + intervals > _YEAR_INTERVALS:
        raise ValueError(f"the simulated period must lie within {YEAR}")
    return first


@lru_cache(maxsize=1)
def h0_profile() -> np.ndarray:
    """The BDEW H0 (dynamised) profile for :data:`YEAR` at 15 minutes, summing to exactly 1."""
    with warnings.catch_warnings():
        # demandlib's ElecSlp calls warnings.simplefilter("error") (a process-wide change);
        # catch_warnings puts the caller's filters back afterwards.
        warnings.simplefilter("ignore")
        from demandlib import bdew

        slp = bdew.ElecSlp(year=YEAR)
        profile: np.ndarray = slp.get_profiles("h0_dyn")["h0_dyn"].to_numpy(dtype=float)
    if len(profile) != _YEAR_INTERVALS:
        raise RuntimeError(f"unexpected H0 profile length {len(profile)}")
    normalised: np.ndarray = profile / float(profile.sum())
    return normalised


@lru_cache(maxsize=64)
def _load_year(annual_wh: int) -> tuple[int, ...]:
    return tuple(cumulative_round(h0_profile(), float(annual_wh)))


def load_wh(*, annual_kwh: float, start: date, intervals: int) -> list[int]:
    """A home's consumption in Wh per 15-minute interval for ``intervals`` intervals from the
    start of ``start``, on the H0 profile scaled to ``annual_kwh`` (the whole year's intervals
    add up to ``round(annual_kwh * 1000)`` Wh exactly)."""
    first = interval_index(start, intervals)
    return list(_load_year(round(annual_kwh * 1000))[first : first + intervals])


def pv_wh_per_kwp_year(weather: Path | None = None, location: Location | None = None) -> np.ndarray:
    """AC energy in Wh per installed kWp for each 15-minute interval of :data:`YEAR` (floats),
    from ``weather`` (default :func:`default_weather_file`) at ``location`` (default: the
    weather file's own, on a 30 degree south-facing roof)."""
    return _pv_year(weather or default_weather_file(), location or Location())


@lru_cache(maxsize=4)
def _pv_year(weather_file: Path, where: Location) -> np.ndarray:
    import pandas as pd
    import pvlib

    weather, meta = read_weather(weather_file)

    def pick(value: float | None, key: str) -> float:
        return float(meta[key]) if value is None else value

    tz = _tz(pick(where.utc_offset, "TZ"))
    location = pvlib.location.Location(
        pick(where.latitude, "latitude"),
        pick(where.longitude, "longitude"),
        tz=tz,
        altitude=pick(where.altitude, "altitude"),
    )
    # TMY3 stamps are the end of each hour; the values are the hour's mean, so they belong to
    # the middle of the hour. Interpolate them to the middle of each 15-minute interval.
    hourly = weather[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].copy()
    hourly.index = hourly.index.tz_convert(tz) - pd.Timedelta(minutes=30)
    hourly = hourly.sort_index()
    starts = pd.date_range(datetime(YEAR, 1, 1), periods=_YEAR_INTERVALS, freq="15min", tz=tz)
    mids = starts + pd.Timedelta(seconds=INTERVAL_S // 2)
    src_x = hourly.index.asi8.astype(float)
    dst_x = mids.asi8.astype(float)
    period = float(365 * 86_400 * 10**9) * (dst_x[1] - dst_x[0]) / (INTERVAL_S * 10**9)
    columns = {
        name: np.interp(dst_x, src_x, hourly[name].to_numpy(dtype=float), period=period)
        for name in hourly.columns
    }
    solpos = location.get_solarposition(mids)
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=where.tilt,
        surface_azimuth=where.azimuth,
        solar_zenith=solpos["apparent_zenith"],
        solar_azimuth=solpos["azimuth"],
        dni=columns["dni"],
        ghi=columns["ghi"],
        dhi=columns["dhi"],
        dni_extra=pvlib.irradiance.get_extra_radiation(mids),
        model="haydavies",
    )
    poa_global = np.nan_to_num(np.asarray(poa["poa_global"], dtype=float)).clip(min=0)
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["close_mount_glass_glass"]
    temp_cell = pvlib.temperature.sapm_cell(
        poa_global, columns["temp_air"], columns["wind_speed"], **params
    )
    pdc0 = 1000.0  # W per kWp
    dc = pvlib.pvsystem.pvwatts_dc(poa_global, temp_cell, pdc0=pdc0, gamma_pdc=-0.004)
    dc = np.asarray(dc, dtype=float) * (1 - pvlib.pvsystem.pvwatts_losses() / 100)
    ac = np.asarray(pvlib.inverter.pvwatts(dc, pdc0=pdc0), dtype=float)
    daylight = np.asarray(solpos["apparent_elevation"], dtype=float) > 0
    ac = np.where(daylight, np.nan_to_num(ac).clip(min=0), 0.0)
    return ac * INTERVAL_S / 3600  # W over 15 minutes -> Wh


def pv_wh(
    *,
    kwp: float,
    start: date,
    intervals: int,
    weather: Path | None = None,
    location: Location | None = None,
) -> list[int]:
    """A ``kwp`` system's AC output in Wh per 15-minute interval from the start of ``start``
    (zero for a home without PV; zero at night), on ``weather`` at ``location``
    (:func:`pv_wh_per_kwp_year`)."""
    first = interval_index(start, intervals)
    if kwp <= 0:
        return [0] * intervals
    year = pv_wh_per_kwp_year(weather, location)
    return cumulative_round(year[first : first + intervals], kwp)


def _daily_kwh_per_kwp() -> list[tuple[date, float]]:  # pragma: no cover - a look-up aid
    year = pv_wh_per_kwp_year().reshape(365, INTERVALS_PER_DAY).sum(axis=1) / 1000
    return [(date(YEAR, 1, 1) + timedelta(days=i), float(v)) for i, v in enumerate(year)]
