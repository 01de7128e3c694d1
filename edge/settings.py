"""Typed reads from a parsed TOML document: the one reader behind ``gateway.toml`` and
``coordinator.toml``.

Every error is a :class:`edge.errors.ConfigError` naming the dotted key (``mqtt.port``,
``homes[2].token`` …), raised before anything starts. A table refuses keys it was never asked
for (:meth:`Table.done`), so a misspelt setting is an error, not a silent default.

:func:`read_market` and :func:`read_rates` read the community's rules, ``[market]`` and
``[settlement]``, which the gateway and the coordinator must read alike (docs/gateway.md lists
the keys and defaults).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.market import MarketParams, Rates

__all__ = ["REQUIRED", "Table", "read_market", "read_rates"]

REQUIRED: Any = object()
"""Pass as ``default`` for a setting that must be present."""


class Table:
    """One TOML table (a mapping) at dotted path ``path`` (``""`` for the document root)."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted key of ``name`` in this table, as error messages name it."""
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kinds: tuple[type, ...], what: str, default: Any) -> Any:
        """The value of ``name`` if it is one of ``kinds`` (a bool is never an int here),
        ``default`` if absent; ConfigError if absent and ``default is REQUIRED``, or mistyped."""
        self.used.add(name)
        if name not in self.data:
            if default is REQUIRED:
                raise ConfigError("is required", key=self.key(name))
            return default
        value = self.data[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ConfigError(f"expected {what}, got {value!r}", key=self.key(name))
        return value

    def text(self, name: str, default: Any = REQUIRED) -> Any:
        """A string setting."""
        return self.get(name, (str,), "a string", default)

    def integer(
        self, name: str, default: Any = REQUIRED, *, lo: int = 0, hi: int | None = None
    ) -> Any:
        """An integer setting in ``[lo, hi]`` (``hi`` None: no upper bound); a ``None``
        default stays None when the setting is absent."""
        value = self.get(name, (int,), "an integer", default)
        if isinstance(value, int) and (value < lo or (hi is not None and value > hi)):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"must be {span}, got {value}", key=self.key(name))
        return value

    def number(self, name: str, default: float, *, lo: float = 0.0) -> float:
        """A finite number (int or float) >= ``lo``, as a float."""
        value = float(self.get(name, (int, float), "a number", default))
        if not math.isfinite(value) or value < lo:
            raise ConfigError(f"must be a number >= {lo}, got {value}", key=self.key(name))
        return value

    def flag(self, name: str, default: bool) -> bool:
        """A boolean setting."""
        return bool(self.get(name, (bool,), "true or false", default))

    def path_or_none(self, name: str, base: Path) -> Path | None:
        """A file path relative to ``base`` (the config file's folder), or None if unset/empty."""
        value = self.text(name, "")
        return (base / value) if value else None

    def table(self, name: str) -> Table:
        """The sub-table ``name`` (empty if absent)."""
        return Table(self.get(name, (dict,), "a table", {}), self.key(name))

    def done(self) -> None:
        """Refuse any key of this table that was never read: ConfigError "unknown setting"."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError("unknown setting", key=self.key(unknown[0]))


def read_market(table: Table) -> tuple[int, MarketParams]:
    """``[market]``'s rules: ``interval_s`` (default 900, the delivery interval in seconds),
    ``policy`` (``price-time`` default, or ``value-time``) and ``max_matches`` (none, or >= 1)
    as edge.market's :class:`MarketParams`. Leaves other keys of the table to the caller
    (call :meth:`Table.done` after)."""
    interval_s = table.integer("interval_s", 900, lo=1)
    policy = table.text("policy", "price-time")
    max_matches = table.integer("max_matches", None, lo=1)
    try:
        params = MarketParams(policy=policy, max_matches=max_matches)
    except ValueError as err:
        which = "policy" if "policy" in str(err) else "max_matches"
        raise ConfigError(str(err), key=table.key(which)) from err
    return interval_s, params


#: [settlement] key -> (the :class:`Rates` field, its factor: bp -> ppm, per Wh -> per kWh).
_RATE_KEYS = {
    "yield_apy_bp": ("yield_apy_ppm", 100),
    "tokens_per_wh": ("tokens_per_kwh", 1000),
    "pool_commission_bp": ("commission_ppm", 100),
    "carbon_mg_per_wh": ("carbon_mg_per_kwh", 1000),
    "grid_fee_per_kwh": ("grid_fee_per_kwh", 1),
}


def read_rates(table: Table, *, interval_s: int) -> Rates:
    """``[settlement]`` as edge.market's :class:`Rates`: ``yield_apy_bp`` (500) and
    ``pool_commission_bp`` (250, at most 10000) in basis points -> ppm; ``tokens_per_wh`` (1)
    and ``carbon_mg_per_wh`` (820) per Wh -> per kWh; ``grid_fee_per_kwh`` (20 ticks);
    ``interval_s`` from ``[market]``. Calls :meth:`Table.done`. Any value :class:`Rates` refuses
    is a ConfigError naming its key."""
    defaults = Rates()
    values: dict[str, int] = {}
    for name, (field, factor) in _RATE_KEYS.items():
        hi = 10000 if name == "pool_commission_bp" else None
        values[field] = table.integer(name, getattr(defaults, field) // factor, hi=hi) * factor
    table.done()
    try:
        return Rates(interval_s=interval_s, **values)
    except ValueError as err:
        names = [n for n, (f, _) in _RATE_KEYS.items() if str(err).startswith(f)]
        raise ConfigError(str(err), key=table.key(names[0]) if names else table.path) from err
