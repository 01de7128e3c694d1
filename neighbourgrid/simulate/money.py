"""Money for people: the ledger's integer units turned into a currency, exactly.

Prices are integer **ticks per kWh** and the ledger keeps money in **microticks** (1 tick =
1,000,000 µticks; edge.market.settlement). A :class:`Currency` says what one tick is worth
(EUR 0.001 = 0.1 ct by default). Conversions are exact :class:`~decimal.Decimal` arithmetic;
rounding happens only in :meth:`Currency.format`, for display.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from edge.market.settlement import MICROTICKS_PER_TICK

__all__ = ["EUR", "MICROTICKS_PER_TICK", "Currency", "plain"]

_WH_PER_KWH = 1000


@dataclass(frozen=True, kw_only=True)
class Currency:
    """A currency and the value of one price tick in it.

    ``code`` is the ISO 4217 code (column headers of the CSV files), ``symbol`` what the report
    shows before an amount, ``tick_value`` one tick in the currency's units, ``decimals`` the
    digits shown after the decimal point.
    """

    code: str = "EUR"
    symbol: str = "€"
    tick_value: Decimal = Decimal("0.001")
    decimals: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.tick_value, Decimal) or self.tick_value <= 0:
            raise ValueError("tick_value must be a positive Decimal")
        if not 0 <= self.decimals <= 6:
            raise ValueError("decimals must be 0..6")

    def from_microticks(self, microticks: int) -> Decimal:
        """An amount of money in the ledger's µticks, in currency units (exact)."""
        return Decimal(microticks) * self.tick_value / MICROTICKS_PER_TICK

    def from_ticks(self, ticks: int | Decimal) -> Decimal:
        """A price in ticks per kWh, in currency units per kWh (exact)."""
        return Decimal(ticks) * self.tick_value

    def energy_cost(self, wh: int, price_ticks_per_kwh: int) -> Decimal:
        """What ``wh`` cost at ``price_ticks_per_kwh`` (exact)."""
        return Decimal(wh) * Decimal(price_ticks_per_kwh) * self.tick_value / _WH_PER_KWH

    def format(self, amount: Decimal, *, decimals: int | None = None) -> str:
        """``amount`` for display, e.g. ``€12.34`` or ``-€0.05`` (rounded half away from zero)."""
        places = self.decimals if decimals is None else decimals
        shown = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        sign = "-" if shown < 0 else ""
        return f"{sign}{self.symbol}{abs(shown):,.{places}f}"


EUR = Currency()


def plain(amount: Decimal) -> str:
    """``amount`` as a plain decimal for a CSV file: exact, no exponent, at least two decimals
    (``12.5`` -> ``12.50``, ``0.16659`` -> ``0.16659``)."""
    if amount == 0:
        return "0.00"
    text = format(amount.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
