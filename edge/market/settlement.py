"""Settlement arithmetic for one trade: exact integers, one rounding rule, conservation.

Units
-----
* Energy in Wh, prices in integer **ticks per kWh** (as in the order log).
* Money in **microticks** (1 tick = 1,000,000 µticks). A trade's value,
  ``wh * price`` ticks/kWh·Wh = ``wh * price / 1000`` ticks = ``wh * price * 1000`` µticks, is then
  an exact integer, and so is the grid fee; only the percentage amounts need rounding.
* Tokens in whole tokens; CO2 in mg.

The rounding rule (the only one)
--------------------------------
Every amount that is not an exact integer is the **floor** of its exact rational value (all
operands are non-negative, so this is rounding toward zero), computed with integer ``//`` on the
full product, never on an intermediate that was already rounded. The fraction floored away stays
with whoever would have paid it: a floored commission leaves it with the seller, a floored yield
is simply not accrued. With the default rates tokens and carbon are exact (1 token and 820 mg per
Wh), so nothing is floored there.

Who pays what
-------------
``buyer_pays = value + grid_fee``: the buyer pays the trade value and the grid fee.
``seller_receives = value - commission``: the seller pays the liquidity pool's commission.
Hence the conservation identity, to the µtick::

    buyer_pays == seller_receives + commission + grid_fee

It holds by construction and is re-checked by :func:`check_settlement` (which the coordinator
uses on every settlement of a batch) and by the property tests.

The yield record
----------------
``yield_accrual`` is what the trade value earns at ``yield_apy_ppm`` (5 % by default) over **one
delivery interval** (``interval_s``, 900 s by default), on a 365-day year of 31,536,000 s:
``floor(value * yield_apy_ppm * interval_s / (1_000_000 * 31_536_000))`` µticks. It is a record
for the seller's statement (it is not paid by the buyer and is outside the conservation identity).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final, Protocol

from edge.market.errors import MarketError

__all__ = [
    "MICROTICKS_PER_TICK",
    "SECONDS_PER_YEAR",
    "Rates",
    "Settlement",
    "SettlementError",
    "check_settlement",
    "settle",
]

MICROTICKS_PER_TICK: Final = 1_000_000
SECONDS_PER_YEAR: Final = 365 * 24 * 3600
_PPM: Final = 1_000_000
_WH_PER_KWH: Final = 1000


class SettlementError(MarketError, ValueError):
    """A settlement record breaks an identity; ``problems`` lists each broken one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _TradeLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def wh(self) -> int: ...
    @property
    def price(self) -> int: ...


@dataclass(frozen=True)
class Rates:
    """Settlement rates (configuration; the defaults are DESIGN.md's).

    * ``yield_apy_ppm``: the seller's yield, 50,000 ppm = 5 % APY, accrued over ``interval_s``.
    * ``interval_s``: the delivery interval the yield accrues over, 900 s (15 min).
    * ``tokens_per_kwh``: token burn, 1000 tokens per kWh = 1 per Wh.
    * ``commission_ppm``: liquidity-pool commission, 25,000 ppm = 2.5 % of the trade value.
    * ``carbon_mg_per_kwh``: carbon credit, 820,000 mg CO2 per kWh = 820 mg per Wh.
    * ``grid_fee_per_kwh``: the grid operator's fee for using the local network (seed 003),
      in ticks per kWh, paid by the buyer. Default 20 ticks/kWh: with the examples' tick of
      0.1 ct that is 2 ct/kWh, about a reduced local network charge.
    """

    yield_apy_ppm: int = 50_000
    interval_s: int = 900
    tokens_per_kwh: int = 1000
    commission_ppm: int = 25_000
    carbon_mg_per_kwh: int = 820_000
    grid_fee_per_kwh: int = 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{f.name} must be a non-negative integer")
        if self.commission_ppm > _PPM:
            raise ValueError("commission_ppm must be at most 1,000,000 (100 %)")

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> Rates:
        """Rates from a configuration table; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown rate(s): {', '.join(unknown)}")
        return cls(**mapping)


@dataclass(frozen=True)
class Settlement:
    """The settlement records of one trade; every amount an integer (money in µticks)."""

    trade: str
    wh: int
    price: int
    value: int
    buyer_pays: int
    seller_receives: int
    commission: int
    grid_fee: int
    yield_accrual: int
    tokens_burned: int
    carbon_mg: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def settle(trade: _TradeLike, rates: Rates | None = None) -> Settlement:
    """The settlement records of ``trade`` (anything with ``id``, ``wh``, ``price``)."""
    r = rates if rates is not None else Rates()
    wh = trade.wh
    price = trade.price
    if type(wh) is not int or type(price) is not int or wh <= 0 or price <= 0:
        raise ValueError("a trade's wh and price must be positive integers")
    scale = MICROTICKS_PER_TICK // _WH_PER_KWH  # µticks per (Wh x tick/kWh) = 1000
    value = wh * price * scale
    grid_fee = wh * r.grid_fee_per_kwh * scale
    commission = value * r.commission_ppm // _PPM
    yield_accrual = value * r.yield_apy_ppm * r.interval_s // (_PPM * SECONDS_PER_YEAR)
    tokens_burned = wh * r.tokens_per_kwh // _WH_PER_KWH
    carbon_mg = wh * r.carbon_mg_per_kwh // _WH_PER_KWH
    buyer_pays = value + grid_fee
    seller_receives = buyer_pays - commission - grid_fee
    return Settlement(
        trade=trade.id,
        wh=wh,
        price=price,
        value=value,
        buyer_pays=buyer_pays,
        seller_receives=seller_receives,
        commission=commission,
        grid_fee=grid_fee,
        yield_accrual=yield_accrual,
        tokens_burned=tokens_burned,
        carbon_mg=carbon_mg,
    )


def check_settlement(record: Settlement, trade: _TradeLike, rates: Rates | None = None) -> None:
    """Raise :class:`SettlementError` unless ``record`` is exactly :func:`settle`'s answer for
    ``trade`` and its conservation identity holds; each mismatch is named."""
    problems: list[str] = []
    if record.buyer_pays != record.seller_receives + record.commission + record.grid_fee:
        problems.append("buyer_pays != seller_receives + commission + grid_fee")
    expected = settle(trade, rates)
    for f in fields(Settlement):
        got, want = getattr(record, f.name), getattr(expected, f.name)
        if got != want:
            problems.append(f"{f.name}: {got!r} != {want!r}")
    if problems:
        raise SettlementError(problems)
