"""The energy balance of each home, interval by interval, with or without trades.

Per 15-minute interval a home has its load and its PV output (integer Wh, from
:mod:`neighbourgrid.simulate.inputs`), a battery or none, and possibly a sale it must deliver
and energy bought from neighbours. Sources and sinks are served in a fixed order:

1. a sale is delivered from PV first, then from the battery (down to the reserve; the meter has
   locked that energy for it); what neither covers is not delivered (the seller defaults);
2. the load is served by PV, then energy bought from neighbours, then the battery, then the grid;
3. what PV (and bought energy beyond the load) leaves over charges the battery, the rest is
   exported.

Without trades this is the no-trading baseline: the same homes, weather and batteries. The
community's grid import is the sum of the homes' imports: energy traded between neighbours flows
through the local grid but is not drawn from upstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from neighbourgrid.simulate.battery import Battery
from neighbourgrid.simulate.homes import Home
from neighbourgrid.simulate.inputs import (
    INTERVAL_S,
    INTERVALS_PER_DAY,
    Location,
    load_wh,
    pv_wh,
)

__all__ = ["Flows", "Neighbourhood", "run_baseline"]


@dataclass(frozen=True, kw_only=True)
class Flows:
    """One home's energy in one interval, all in Wh (``soc_bp`` at the interval's end, -1
    without a battery). ``delivered_wh`` is the part of ``sold_wh`` actually delivered;
    ``received_wh`` is energy bought from neighbours and delivered to this home."""

    load_wh: int
    pv_wh: int
    sold_wh: int
    delivered_wh: int
    received_wh: int
    import_wh: int
    export_wh: int
    charged_wh: int
    discharged_wh: int
    soc_bp: int


class Neighbourhood:
    """The physical side of the simulation: homes, their inputs and their batteries.

    ``homes`` and ``days`` of data from ``start``, PV from ``weather`` at ``location`` (None:
    pvlib's shipped TMY3 at its own location; :func:`neighbourgrid.simulate.inputs.pv_wh`);
    :meth:`step` advances one interval.
    """

    def __init__(
        self,
        *,
        homes: Sequence[Home],
        start: date,
        days: int,
        weather: Path | None = None,
        location: Location | None = None,
    ) -> None:
        if days < 1:
            raise ValueError("days must be at least 1")
        self.homes = list(homes)
        self.start = start
        self.intervals = days * INTERVALS_PER_DAY
        self.load = {
            h.id: load_wh(annual_kwh=h.annual_kwh, start=start, intervals=self.intervals)
            for h in self.homes
        }
        self.pv = {
            h.id: pv_wh(
                kwp=h.pv_kwp,
                start=start,
                intervals=self.intervals,
                weather=weather,
                location=location,
            )
            for h in self.homes
        }
        self.batteries = {
            h.id: Battery.at_soc(h.battery, h.initial_soc_bp)
            for h in self.homes
            if h.battery is not None
        }
        self.interval = 0
        self.history: dict[str, list[Flows]] = {h.id: [] for h in self.homes}

    def soc_bp(self, home_id: str) -> int:
        """The home's battery state of charge in basis points (-1 without a battery)."""
        battery = self.batteries.get(home_id)
        return battery.soc_bp if battery else -1

    def sellable_wh(self, home_id: str) -> int:
        """What the home's battery could deliver in one interval now (above the reserve)."""
        battery = self.batteries.get(home_id)
        return battery.max_deliverable_wh(INTERVAL_S) if battery else 0

    def net_wh(self, home_id: str, interval: int) -> int:
        """PV minus load in ``interval`` (negative: a deficit)."""
        return self.pv[home_id][interval] - self.load[home_id][interval]

    def step(
        self, *, sold: Mapping[str, int] | None = None, received: Mapping[str, int] | None = None
    ) -> dict[str, Flows]:
        """Advance one interval. ``sold`` maps a seller to the Wh its trades require it to
        deliver; ``received`` maps a buyer to the Wh delivered to it (the caller derives it
        from what sellers delivered). Returns each home's :class:`Flows`.

        Raises IndexError after the last interval.
        """
        k = self.interval
        if k >= self.intervals:
            raise IndexError("the simulation has no more intervals")
        sold = sold or {}
        received = received or {}
        out: dict[str, Flows] = {}
        for home in self.homes:
            out[home.id] = self._step_home(
                home.id, k, sold.get(home.id, 0), received.get(home.id, 0)
            )
            self.history[home.id].append(out[home.id])
        self.interval += 1
        return out

    def deliverable_wh(self, home_id: str, sold_wh: int) -> int:
        """What the home would deliver of a ``sold_wh`` sale in the current interval."""
        pv = self.pv[home_id][self.interval]
        from_pv = min(sold_wh, pv)
        battery = self.batteries.get(home_id)
        from_battery = battery.max_deliverable_wh(INTERVAL_S) if battery else 0
        return from_pv + min(sold_wh - from_pv, from_battery)

    def _step_home(self, home_id: str, k: int, sold_wh: int, received_wh: int) -> Flows:
        load = self.load[home_id][k]
        pv = self.pv[home_id][k]
        battery = self.batteries.get(home_id)
        charged0 = battery.charged_wh if battery else 0
        discharged0 = battery.discharged_wh if battery else 0
        # 1. the sale: PV first, then the battery.
        pv_left = pv
        from_pv = min(sold_wh, pv_left)
        pv_left -= from_pv
        from_battery = battery.discharge(sold_wh - from_pv, seconds=INTERVAL_S) if battery else 0
        delivered = from_pv + from_battery
        # 2. the load: PV, bought energy, battery, grid.
        load_left = load
        use = min(load_left, pv_left)
        pv_left -= use
        load_left -= use
        use = min(load_left, received_wh)
        load_left -= use
        spare_received = received_wh - use
        if battery and load_left:
            load_left -= battery.discharge(load_left, seconds=INTERVAL_S, used_wh=from_battery)
        grid_import = load_left
        # 3. the rest: charge, then export.
        spare = pv_left + spare_received
        taken = battery.charge(spare, seconds=INTERVAL_S) if battery else 0
        return Flows(
            load_wh=load,
            pv_wh=pv,
            sold_wh=sold_wh,
            delivered_wh=delivered,
            received_wh=received_wh,
            import_wh=grid_import,
            export_wh=spare - taken,
            charged_wh=(battery.charged_wh - charged0) if battery else 0,
            discharged_wh=(battery.discharged_wh - discharged0) if battery else 0,
            soc_bp=battery.soc_bp if battery else -1,
        )


def run_baseline(
    *,
    homes: Sequence[Home],
    start: date,
    days: int,
    weather: Path | None = None,
    location: Location | None = None,
) -> Neighbourhood:
    """The no-trading baseline: every interval stepped with no sales and no purchases (PV from
    ``weather`` at ``location``, as :class:`Neighbourhood`)."""
    hood = Neighbourhood(homes=homes, start=start, days=days, weather=weather, location=location)
    for _ in range(hood.intervals):
        hood.step()
    return hood
