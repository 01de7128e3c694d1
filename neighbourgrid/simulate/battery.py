"""A home battery in integer watt-hours: capacity, power limits, round-trip efficiency, reserve.

The model is the usual "bucket with losses" one: energy drawn from the home's bus to charge is
stored with the charge efficiency, energy delivered to the bus is taken from storage with the
discharge efficiency, and the round-trip efficiency is their product (each is its square root).
Every figure at the boundary is an integer: Wh, W, state of charge in basis points (0-10000).
Rounding always favours the battery's physics over the books: stored gains are rounded down,
stored losses rounded up, so the model never creates energy. The reserve (20 % by default,
DESIGN.md) is a floor no discharge goes below, neither for the home's own use nor for a sale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import isqrt

__all__ = ["Battery", "BatterySpec"]

BP = 10_000  # basis points in one


@dataclass(frozen=True, kw_only=True)
class BatterySpec:
    """What a battery is: ``capacity_wh`` usable capacity, ``max_charge_w`` and
    ``max_discharge_w`` power limits at the bus, ``round_trip_bp`` round-trip efficiency and
    ``reserve_bp`` the state of charge no discharge goes below (both in basis points).

    Raises :class:`ValueError` for a non-positive capacity or limit or an efficiency or reserve
    outside 1-10000 / 0-9999 basis points.
    """

    capacity_wh: int
    max_charge_w: int
    max_discharge_w: int
    round_trip_bp: int = 9_000
    reserve_bp: int = 2_000

    def __post_init__(self) -> None:
        for name in ("capacity_wh", "max_charge_w", "max_discharge_w"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if type(self.round_trip_bp) is not int or not 0 < self.round_trip_bp <= BP:
            raise ValueError(f"round_trip_bp must be 1-{BP}, got {self.round_trip_bp!r}")
        if type(self.reserve_bp) is not int or not 0 <= self.reserve_bp < BP:
            raise ValueError(f"reserve_bp must be 0-{BP - 1}, got {self.reserve_bp!r}")

    @property
    def one_way_bp(self) -> int:
        """Charge (and discharge) efficiency in basis points: the square root of the round trip."""
        return isqrt(self.round_trip_bp * BP)

    @property
    def reserve_wh(self) -> int:
        """The reserve in Wh of stored energy (rounded up: the floor is never undercut)."""
        return -(-self.capacity_wh * self.reserve_bp // BP)


@dataclass(kw_only=True)
class Battery:
    """A battery's state: ``stored_wh`` of energy in it, with running totals for the books.

    ``charged_wh`` is energy drawn from the bus, ``discharged_wh`` energy delivered to it and
    ``losses_wh`` the conversion losses, so at any time
    ``stored_wh - initial_wh == charged_wh - discharged_wh - losses_wh`` exactly.
    """

    spec: BatterySpec
    stored_wh: int
    initial_wh: int = field(init=False)
    charged_wh: int = 0
    discharged_wh: int = 0
    losses_wh: int = 0

    def __post_init__(self) -> None:
        if type(self.stored_wh) is not int or not 0 <= self.stored_wh <= self.spec.capacity_wh:
            raise ValueError(f"stored_wh must be 0-{self.spec.capacity_wh}, got {self.stored_wh!r}")
        self.initial_wh = self.stored_wh

    @classmethod
    def at_soc(cls, spec: BatterySpec, soc_bp: int) -> Battery:
        """A battery of ``spec`` holding ``soc_bp`` basis points of its capacity (rounded down)."""
        return cls(spec=spec, stored_wh=spec.capacity_wh * soc_bp // BP)

    @property
    def soc_bp(self) -> int:
        """State of charge in basis points (0-10000), rounded down."""
        return self.stored_wh * BP // self.spec.capacity_wh

    def max_deliverable_wh(self, seconds: int) -> int:
        """The most energy (Wh at the bus) a discharge over ``seconds`` could deliver now:
        limited by the power limit and by the energy above the reserve, after losses."""
        above = max(0, self.stored_wh - self.spec.reserve_wh)
        by_energy = above * self.spec.one_way_bp // BP
        return min(by_energy, self.spec.max_discharge_w * seconds // 3600)

    def max_acceptable_wh(self, seconds: int) -> int:
        """The most energy (Wh from the bus) a charge over ``seconds`` could accept now."""
        room = self.spec.capacity_wh - self.stored_wh
        by_energy = room * BP // self.spec.one_way_bp
        return min(by_energy, self.spec.max_charge_w * seconds // 3600)

    def charge(self, offered_wh: int, *, seconds: int, used_wh: int = 0) -> int:
        """Charge from up to ``offered_wh`` Wh on the bus over ``seconds``; return the Wh taken.

        ``used_wh`` is energy already taken in this period (the power limit is shared).
        """
        limit = max(0, self.spec.max_charge_w * seconds // 3600 - used_wh)
        taken = max(0, min(offered_wh, limit, self.max_acceptable_wh(seconds)))
        gained = taken * self.spec.one_way_bp // BP
        if gained == 0:  # a Wh or so that conversion would lose entirely: leave it on the bus
            return 0
        self.stored_wh += gained
        self.charged_wh += taken
        self.losses_wh += taken - gained
        return taken

    def discharge(self, wanted_wh: int, *, seconds: int, used_wh: int = 0) -> int:
        """Deliver up to ``wanted_wh`` Wh to the bus over ``seconds``; return the Wh delivered.

        ``used_wh`` is energy already delivered in this period (the power limit is shared), so a
        sale and the home's own use in the same interval together respect ``max_discharge_w``.
        Never goes below the reserve.
        """
        limit = max(0, self.spec.max_discharge_w * seconds // 3600 - used_wh)
        delivered = max(0, min(wanted_wh, limit, self.max_deliverable_wh(seconds)))
        # Rounded up; never more than the energy above the reserve, since delivered was rounded
        # down from it.
        spent = -(-delivered * BP // self.spec.one_way_bp)
        self.stored_wh -= spent
        self.discharged_wh += delivered
        self.losses_wh += spent - delivered
        return delivered
