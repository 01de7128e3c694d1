"""Real input data: household load from the BDEW H0 profile, PV from pvlib on a shipped TMY3 file.

Both come from files inside installed packages, so nothing is fetched from the network:

- Household load: the BDEW H0 standard load profile with its dynamisation function, as demandlib
  ships it (``demandlib.bdew.ElecSlp(year).get_profiles("h0_dyn")``), 15-minute resolution,
  normalised over the year and scaled to each home's annual consumption.
- PV: the typical meteorological year (TMY3) for Greensboro, North Carolina (36.1 N) that pvlib
  ships as ``pvlib/data/723170TYA.CSV``, read with :func:`pvlib.iotools.read_tmy3`. Hourly
  irradiance is interpolated to the 15-minute grid, transposed onto a 30 degree south-facing roof
  (Hay-Davies), turned into cell temperature (SAPM, close-mounted glass/glass), DC power
  (PVWatts, -0.4 %/K), 14 % system losses (PVWatts defaults) and AC power (PVWatts inverter).
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
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "INTERVALS_PER_DAY",
    "INTERVAL_S",
    "WEATHER_FILE",
    "YEAR",
    "cumulative_round",
    "h0_profile",
    "interval_index",
    "load_wh",
    "pv_wh",
    "pv_wh_per_kwp_year",
]

INTERVAL_S = 900  # the BDEW profile's resolution, and the market's delivery interval
INTERVALS_PER_DAY = 86_400 // INTERVAL_S
YEAR = 2025  # the calendar (weekdays, holidays) both data sets are laid on; not a leap year
_YEAR_INTERVALS = 365 * INTERVALS_PER_DAY


def _pvlib_data(name: str) -> Path:
    import pvlib

    return Path(pvlib.__file__).parent / "data" / name


WEATHER_FILE = "723170TYA.CSV"


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


@lru_cache(maxsize=1)
def pv_wh_per_kwp_year() -> np.ndarray:
    """AC energy in Wh per installed kWp for each 15-minute interval of :data:`YEAR` (floats)."""
    import pandas as pd
    import pvlib

    weather, meta = pvlib.iotools.read_tmy3(
        str(_pvlib_data(WEATHER_FILE)), coerce_year=YEAR, map_variables=True
    )
    tz = f"Etc/GMT{int(-meta['TZ']):+d}"  # TZ -5 -> Etc/GMT+5 (POSIX sign convention)
    location = pvlib.location.Location(
        meta["latitude"], meta["longitude"], tz=tz, altitude=meta["altitude"]
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
        surface_tilt=30,
        surface_azimuth=180,
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


def pv_wh(*, kwp: float, start: date, intervals: int) -> list[int]:
    """A ``kwp`` system's AC output in Wh per 15-minute interval from the start of ``start``
    (zero for a home without PV; zero at night)."""
    first = interval_index(start, intervals)
    if kwp <= 0:
        return [0] * intervals
    year = pv_wh_per_kwp_year()
    return cumulative_round(year[first : first + intervals], kwp)


def _daily_kwh_per_kwp() -> list[tuple[date, float]]:  # pragma: no cover - a look-up aid
    year = pv_wh_per_kwp_year().reshape(365, INTERVALS_PER_DAY).sum(axis=1) / 1000
    return [(date(YEAR, 1, 1) + timedelta(days=i), float(v)) for i, v in enumerate(year)]
