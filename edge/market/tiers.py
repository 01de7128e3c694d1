"""Tiered duration offerings (seed 002): the cheapest way to cover a requested duration.

A seller's offering is a list of tiers ``[(m_1, p_1), ..., (m_N, p_N)]``: tier ``i`` is a block of
``D_i = m_1*...*m_i`` consecutive slots sold for ``p_i`` ticks. The constraints ``p_{i+1} > p_i``
and ``m_{i+1}*p_i > p_{i+1}`` make a bigger block cheaper than the smaller blocks it replaces, and
``D_i`` divides ``D_{i+1}``, so every cheapest combination can be written with fewer than
``m_{i+1}`` blocks of tier ``i`` (otherwise ``m_{i+1}`` of them would be swapped for one block of
tier ``i+1``, cheaper). Among those canonical combinations:

* the minimal combination that matches ``d`` exactly is the greedy one (biggest blocks first) and
  exists when ``D_1`` divides ``d``;
* the minimal combination that exceeds ``d`` is the cheapest of the ``N`` round-ups
  ``u_j = (d // D_j + 1) * D_j``, each written greedily: a cover larger than ``d`` first departs
  from ``d``'s digits at some tier ``j``, where it takes one more block, and is cheapest with no
  smaller blocks below that.

"Minimal" means cheapest; equal costs go to the fewer slots. :func:`cheapest_cover` returns the
cheaper of the two (the exact one on a tie), which is the cheapest combination covering at least
``d`` slots: the property tests check it against a brute-force search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge.market.errors import TierError

__all__ = ["Cover", "cheapest_cover", "check_tiers"]


@dataclass(frozen=True)
class Cover:
    """A combination of blocks: ``blocks[i]`` blocks of tier ``i``, ``units`` slots in all, for
    ``cost`` ticks."""

    units: int
    cost: int
    blocks: tuple[int, ...]


def check_tiers(tiers: Sequence[tuple[int, int]]) -> None:
    """Raise :class:`TierError` (a ``ValueError``) unless ``tiers`` is a valid offering."""
    if not tiers:
        raise TierError("an offering needs at least one tier")
    previous: tuple[int, int] | None = None
    for i, tier in enumerate(tiers, start=1):
        if len(tier) != 2:
            raise TierError(f"tier {i} must be a (multiplier, price) pair")
        m, p = tier
        if type(m) is not int or type(p) is not int or m <= 0 or p <= 0:
            raise TierError(f"tier {i} must have a positive integer multiplier and price")
        if previous is not None:
            _, p_prev = previous
            if not p > p_prev:
                raise TierError(f"tier {i}: price must exceed tier {i - 1}'s (p_i+1 > p_i)")
            if not m * p_prev > p:
                raise TierError(
                    f"tier {i}: multiplier times tier {i - 1}'s price must exceed its price"
                    " (m_i+1 * p_i > p_i+1)"
                )
        previous = (m, p)


def _durations(tiers: Sequence[tuple[int, int]]) -> list[int]:
    durations: list[int] = []
    size = 1
    for m, _ in tiers:
        size *= m
        durations.append(size)
    return durations


def _greedy(total: int, durations: list[int], prices: list[int]) -> Cover:
    """The canonical (biggest blocks first) combination of exactly ``total`` slots."""
    blocks = [0] * len(durations)
    rest = total
    cost = 0
    for i in range(len(durations) - 1, -1, -1):
        count, rest = divmod(rest, durations[i])
        blocks[i] = count
        cost += count * prices[i]
    if rest:
        raise AssertionError("total is not a multiple of the smallest block")
    return Cover(units=total, cost=cost, blocks=tuple(blocks))


def cheapest_cover(tiers: Sequence[tuple[int, int]], d: int) -> Cover:
    """The cheaper of the minimal exact and the minimal exceeding combination for ``d`` slots.

    Raises :class:`TierError` (a ``ValueError``) if the tiers break their constraints, and
    ``ValueError`` if ``d`` is not a positive integer.
    """
    check_tiers(tiers)
    if type(d) is not int or d <= 0:
        raise ValueError("d must be a positive integer")
    durations = _durations(tiers)
    prices = [p for _, p in tiers]
    best: Cover | None = None
    if d % durations[0] == 0:
        best = _greedy(d, durations, prices)
    for size in durations:
        candidate = _greedy((d // size + 1) * size, durations, prices)
        if best is None or (candidate.cost, candidate.units) < (best.cost, best.units):
            best = candidate
    assert best is not None
    return best
