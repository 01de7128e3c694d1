"""A seeded, realistic mix of homes: household sizes, annual consumption, PV and batteries.

Figures (sources in docs/simulate.md): annual consumption by household size in single-family
houses without electric water heating (Stromspiegel 2023: 1 person 2300 kWh, 2: 3000, 3: 3600,
4: 4000, 5+: 5000) with +/-15 % spread; about 45 % of homes have rooftop PV of 4-10 kWp, about two
thirds of those a battery of 5-13.5 kWh with 0.5 C power limits and 90 % round-trip efficiency.
At least a quarter of the homes have PV with a battery (the sellers) and at least a quarter have
no PV (the buyers), so even a four-home run has both sides of the market. A few battery homes (one
home in eight, at least one when there are two sellers) sell by placing manual orders through the
gateway's HTTP API; the other battery homes sell through standing policies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from neighbourgrid.simulate.battery import BatterySpec

__all__ = ["Home", "make_homes"]

_SIZES = (1, 2, 3, 4, 5)
_SIZE_WEIGHTS = (0.22, 0.36, 0.17, 0.17, 0.08)  # owner-occupied houses skew to families
_ANNUAL_KWH = {1: 2300, 2: 3000, 3: 3600, 4: 4000, 5: 5000}
_KWP = (4.0, 5.5, 7.0, 8.5, 10.0)
# (capacity Wh, charge/discharge limit W): common home battery sizes at about 0.5 C.
_BATTERIES = ((5_000, 2_500), (7_700, 3_300), (10_000, 5_000), (13_500, 5_000))


@dataclass(frozen=True, kw_only=True)
class Home:
    """One home: ``id`` (``home-01`` ...), ``persons``, ``annual_kwh`` consumption, ``pv_kwp``
    (0 without PV), ``battery`` (None without), ``initial_soc_bp`` of the battery, and whether
    the owner places ``manual`` orders instead of relying on standing policies only.

    The trading prices a scenario file may set (:mod:`neighbourgrid.simulate.scenario`):
    ``sell_above_bp`` and ``sell_price`` (ticks/kWh) of a battery home's sell policy or manual
    offers, ``buy_price`` (ticks/kWh) of a home without a battery; None (as
    :func:`make_homes` leaves them) means drawn from the run's seeded ranges
    (:func:`neighbourgrid.simulate.run.behaviours`)."""

    id: str
    persons: int
    annual_kwh: float
    pv_kwp: float
    battery: BatterySpec | None
    initial_soc_bp: int
    manual: bool
    sell_above_bp: int | None = None
    sell_price: int | None = None
    buy_price: int | None = None

    @property
    def kind(self) -> str:
        """``PV+battery``, ``PV``, ``battery`` or ``consumer``."""
        if self.pv_kwp and self.battery:
            return "PV+battery"
        if self.pv_kwp:
            return "PV"
        return "battery" if self.battery else "consumer"


def make_homes(count: int, seed: int) -> list[Home]:
    """``count`` homes drawn from ``seed`` (the same seed gives the same homes).

    Raises ValueError unless ``count >= 2``.
    """
    if count < 2:
        raise ValueError("a neighbourhood needs at least 2 homes")
    rng = random.Random(seed)
    quarter = -(-count // 4)
    # Decide each home's equipment: a quarter sellers, a quarter consumers, the rest drawn.
    kinds = ["PV+battery"] * quarter + ["consumer"] * quarter
    for _ in range(count - len(kinds)):
        if rng.random() < 0.45:
            kinds.append("PV+battery" if rng.random() < 0.65 else "PV")
        else:
            kinds.append("consumer")
    rng.shuffle(kinds)
    sellers = [i for i, kind in enumerate(kinds) if kind == "PV+battery"]
    manual = set(rng.sample(sellers, max(1, count // 8) if len(sellers) > 1 else 0))
    homes = []
    for i, kind in enumerate(kinds):
        persons = rng.choices(_SIZES, weights=_SIZE_WEIGHTS)[0]
        annual = round(_ANNUAL_KWH[persons] * rng.uniform(0.85, 1.15), 1)
        kwp = rng.choice(_KWP) if kind != "consumer" else 0.0
        battery = None
        if kind == "PV+battery":
            capacity, power = rng.choice(_BATTERIES)
            battery = BatterySpec(capacity_wh=capacity, max_charge_w=power, max_discharge_w=power)
        homes.append(
            Home(
                id=f"home-{i + 1:02d}",
                persons=persons,
                annual_kwh=annual,
                pv_kwp=kwp,
                battery=battery,
                initial_soc_bp=rng.randrange(3_000, 7_001, 100) if battery else 0,
                manual=i in manual,
            )
        )
    return homes
