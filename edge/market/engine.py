"""The matching engine: a deterministic continuous double auction, one book per delivery interval.

:class:`Engine` is a pure state machine. :meth:`Engine.submit` takes one event (see
:mod:`edge.market.events`) and returns the trades it caused, in execution order; an event the
engine refuses raises :class:`~edge.market.errors.InvalidEvent` and changes nothing. No clock, no
randomness, no floats, no I/O: the same events give the same trades, byte for byte.

Rules (docs/market.md has the long form):

* Price-time priority per interval: sells cheapest first, buys highest first, earlier (lower log
  position) first within a price. With ``policy="value-time"`` (seed 004), within a price the
  resting order with the larger remaining volume goes first, then the earlier.
* An order trades against the resting orders it crosses, best first; the price is that of the
  order that came first (the resting maker, for an incoming order). A resting remainder keeps its
  place; an incoming remainder rests.
* Self-trade prevention: an order passes over resting orders of its own owner, which stay.
* Reference price: a buy whose limit is below it neither takes nor is taken. When the reference
  price falls, the buys it unblocks trade, best first, as if they came in again (at the price of
  the earlier order of each pair).
* ``max_matches`` bounds the trades one order makes when it comes in (or is unblocked or
  restored); what the bound leaves rests, even if it still crosses.
* A void gives both orders the quantity back at their original priority, and the two never match
  each other again; a restored order that crosses trades as an unblocked one does.
* Closing an interval expires its resting orders; orders for a closed interval are refused.
* A prune forgets every order, trade and void mark of the closed intervals up to its interval;
  events for those intervals, or naming what was forgotten, are refused from then on.

Internally an order is a :class:`_Rec` (a final class with typed fields, which mypyc compiles to
a C struct; see docs/market.md, "Compiled build"); each interval's book (a :class:`_Book`) keeps,
per side, a list of :class:`_Level` sorted by key (``-price`` for buys, ``price`` for sells, so the
best is always first; a level is found by binary search), each holding the orders at its price in
time order (price-time) or a heap on ``(-remaining, seq)`` (value-time). Cancelled and filled
orders are dropped lazily when a match walks past them.
"""

from __future__ import annotations

import gc
import json
import sys
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from heapq import heapify, heappop, heappush, heapreplace
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, cast, final

from edge.market.errors import InvalidEvent, LogError
from edge.market.events import (
    Cancel,
    CloseInterval,
    Event,
    Offer,
    Order,
    Prune,
    ReferencePrice,
    Reserve,
    Void,
    parse_line,
    validate_event,
)
from edge.market.tiers import cheapest_cover

if TYPE_CHECKING:
    from _typeshed import IdentityFunction

try:
    # mypyc_attr(acyclic=True): instances are not tracked by the cyclic garbage collector (see
    # docs/market.md, "Compiled build"); only mypyc reads it.
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover - mypy (and so mypy_extensions) is not installed

    def mypyc_attr(*attrs: str, **kwattrs: object) -> IdentityFunction:
        return lambda cls: cls


__all__ = [
    "POLICIES",
    "Engine",
    "MarketParams",
    "OrderState",
    "Reservation",
    "Trade",
    "iter_log",
    "replay",
    "replay_log",
    "replay_to_lines",
]

POLICIES: Final = ("price-time", "value-time")
SNAPSHOT_FORMAT: Final = "ngrid-market-snapshot"
SNAPSHOT_VERSION: Final = 2  # 2: "pruned_through"; restore also reads 1 (never pruned)

# Order statuses.
_OPEN: Final = 0
_FILLED: Final = 1
_CANCELLED: Final = 2
_EXPIRED: Final = 3
_STATUS_NAMES: Final = ("open", "filled", "cancelled", "expired")
_STATUS_CODES: Final = {name: code for code, name in enumerate(_STATUS_NAMES)}
# Whether this module runs compiled by mypyc (then events.py is too: edge.market._native loads
# both or neither), so that Order's fields are native and their types checked when it is built.
_COMPILED: Final = not __file__.endswith(".py")


# Trade ids "t<n>" without formatting n each time: "t1" .. "t999" are made once, and a larger n is
# the cached prefix "t<n // 1000>" plus n's last three digits, one concatenation (one allocation)
# instead of str(n) and a concatenation (two); see Engine._trade_id.
_SMALL_TRADE_IDS: Final = tuple(f"t{n}" for n in range(1000))
_THREE_DIGITS: Final = tuple(f"{n:03d}" for n in range(1000))


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class MarketParams:
    """Replay parameters: the priority ``policy`` and the bound on matches per order.

    ``policy`` is ``"price-time"`` (default) or ``"value-time"``; ``max_matches`` is ``None`` (no
    bound) or a positive integer.
    """

    policy: str = "price-time"
    max_matches: int | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.max_matches is not None and (
            type(self.max_matches) is not int or self.max_matches <= 0
        ):
            raise ValueError("max_matches must be a positive integer or None")


@final
@mypyc_attr(acyclic=True)
@dataclass(init=False, unsafe_hash=True, slots=True)
class Trade:
    """One trade: ``wh`` watt-hours from ``seller`` (order ``sell``) to ``buyer`` (order ``buy``)
    at ``price`` ticks per kWh, for delivery ``interval``, caused by the event stamped ``ts``.

    ``id`` is ``"t<n>"``, ``n`` counting the engine's trades from 1. ``maker`` is the side
    (``"buy"`` or ``"sell"``) of the order that came first, whose price the trade takes (the
    resting order, for an incoming one); :attr:`maker_id` is its order id.

    A dataclass with ``Final`` fields and a hand-written ``__init__``, like
    :class:`~edge.market.events.Order` and for the same reason: mypyc compiles it into a native
    class built in C (read-only fields at run time in that build; mypy refuses assignments in
    any build), which the cyclic garbage collector does not track (``acyclic``: strings and ints
    make no cycle).
    """

    id: Final[str]
    buy: Final[str]
    sell: Final[str]
    buyer: Final[str]
    seller: Final[str]
    wh: Final[int]
    price: Final[int]
    interval: Final[int]
    ts: Final[int]
    maker: Final[str]

    def __init__(
        self,
        id: str,
        buy: str,
        sell: str,
        buyer: str,
        seller: str,
        wh: int,
        price: int,
        interval: int,
        ts: int,
        maker: str,
    ) -> None:
        self.id = id
        self.buy = buy
        self.sell = sell
        self.buyer = buyer
        self.seller = seller
        self.wh = wh
        self.price = price
        self.interval = interval
        self.ts = ts
        self.maker = maker

    def __reduce__(
        self,
    ) -> tuple[type[Trade], tuple[str, str, str, str, str, int, int, int, int, str]]:
        return (
            Trade,
            (
                self.id,
                self.buy,
                self.sell,
                self.buyer,
                self.seller,
                self.wh,
                self.price,
                self.interval,
                self.ts,
                self.maker,
            ),
        )

    @property
    def maker_id(self) -> str:
        """The id of the maker order (the one that came first)."""
        return self.buy if self.maker == "buy" else self.sell

    @property
    def seq(self) -> int:
        """The trade's position in the engine's output, from 1."""
        return int(self.id[1:])

    def to_dict(self) -> dict[str, Any]:
        """The trade's fields as a dict (the JSON object of its output line)."""
        return {
            "id": self.id,
            "buy": self.buy,
            "sell": self.sell,
            "buyer": self.buyer,
            "seller": self.seller,
            "wh": self.wh,
            "price": self.price,
            "interval": self.interval,
            "ts": self.ts,
            "maker": self.maker,
        }

    def to_json(self) -> str:
        """The canonical log-line encoding: sorted keys, no spaces, no trailing newline."""
        return _canonical(self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Trade:
        return cls(
            id=obj["id"],
            buy=obj["buy"],
            sell=obj["sell"],
            buyer=obj["buyer"],
            seller=obj["seller"],
            wh=obj["wh"],
            price=obj["price"],
            interval=obj["interval"],
            ts=obj["ts"],
            maker=obj["maker"],
        )


@final
@mypyc_attr(acyclic=True)
class _Rec:
    """The engine's record of one order (mutable; never leaves the engine).

    ``buy`` is the side as a bool, ``rem`` the unfilled watt-hours, ``seq`` the order's position
    among the log's orders (its time priority), ``status`` one of ``_OPEN`` … ``_EXPIRED``,
    ``excl`` the ids of orders it must not match again (after a void), or ``None``.
    """

    __slots__ = (
        "buy",
        "excl",
        "id",
        "interval",
        "owner",
        "price",
        "rem",
        "seq",
        "status",
        "ts",
        "wh",
    )

    def __init__(
        self,
        id: str,
        owner: str,
        buy: bool,
        price: int,
        rem: int,
        seq: int,
        interval: int,
        wh: int,
        ts: int,
        status: int,
        excl: set[str] | None,
    ) -> None:
        self.id = id
        self.owner = owner
        self.buy = buy
        self.price = price
        self.rem = rem
        self.seq = seq
        self.interval = interval
        self.wh = wh
        self.ts = ts
        self.status = status
        self.excl = excl


@dataclass(frozen=True)
class OrderState:
    """An order as the engine sees it now.

    ``status`` is ``"open"`` (resting on the book, possibly blocked by the reference price),
    ``"filled"``, ``"cancelled"`` or ``"expired"``; ``remaining`` is the unfilled quantity (for a
    cancelled or expired order, what was unfilled when it left the book). ``seq`` is its position
    among the log's orders, from 1: its time priority.
    """

    id: str
    owner: str
    side: str
    wh: int
    price: int
    ts: int
    interval: int
    seq: int
    remaining: int
    status: str

    @property
    def filled(self) -> int:
        return self.wh - self.remaining


@dataclass(frozen=True)
class Reservation:
    """A matched capacity request: ``w`` watts of ``seller``'s offer ``offer`` for ``units`` slots
    from slot ``start``, for ``cost`` ticks in all. ``id`` is ``"r<n>"``; ``request`` is the id of
    the :class:`~edge.market.events.Reserve` event; ``blocks`` the tier blocks bought."""

    id: str
    request: str
    offer: str
    buyer: str
    seller: str
    w: int
    start: int
    units: int
    cost: int
    blocks: tuple[int, ...]
    ts: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["blocks"] = list(self.blocks)
        out["kind"] = "reservation"
        return out

    def to_json(self) -> str:
        return _canonical(self.to_dict())


@final
@mypyc_attr(acyclic=True)
class _Level:
    """The resting orders at one price of one side of a book; ``key`` is ``-price`` for buys and
    ``price`` for sells, so that the best level of either side has the smallest key.

    Price-time: ``items[head:]`` in time order. Taking the front order advances ``head`` instead of
    moving the rest; the dead prefix is cut off once it is more than half of the list. An order
    behind the front (passed over by its owner's own order) leaves with ``pop``. A list and an
    index rather than a deque because mypyc compiles list operations and int fields to C, while
    deque methods stay calls by name. Value-time: ``heap`` on ``(-remaining, seq, order)``
    (``items`` stays empty).
    """

    __slots__ = ("head", "heap", "items", "key")

    def __init__(self, key: int, items: list[_Rec], heap: list[tuple[int, int, _Rec]]) -> None:
        self.key = key
        self.items = items
        self.head = 0
        self.heap = heap

    def live(self) -> list[_Rec]:
        """The orders from the front on (cancelled ones included until a match drops them)."""
        return self.items[self.head :]


@final
@mypyc_attr(acyclic=True)
class _Book:
    """One delivery interval's order book: per side, its price levels best first.

    ``bids`` and ``asks`` are lists of :class:`_Level` sorted by ``key`` (so the best level is
    first on both sides); a level leaves the list when nothing live is left in it.
    """

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: list[_Level] = []
        self.asks: list[_Level] = []

    def side(self, is_buy: bool) -> list[_Level]:
        return self.bids if is_buy else self.asks


_LEVEL_KEY: Final = attrgetter("key")


def _find(levels: list[_Level], key: int) -> int:
    """The position of the first level of ``levels`` whose key is ``>= key`` (binary search).

    Compiled, a loop over native ints; interpreted, :func:`bisect.bisect_left` (in C) is faster.
    """
    if not _COMPILED:
        return bisect_left(levels, key, key=_LEVEL_KEY)
    lo = 0
    hi = len(levels)
    while lo < hi:
        mid = (lo + hi) >> 1
        if levels[mid].key < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _level_at(levels: list[_Level], key: int) -> _Level | None:
    """The level of ``levels`` with this ``key``, or ``None``."""
    i = _find(levels, key)
    if i < len(levels):
        level = levels[i]
        if level.key == key:
            return level
    return None


def _level_for(levels: list[_Level], key: int) -> _Level:
    """The level of ``levels`` with this ``key``, inserted in its place (empty) if there is none."""
    i = _find(levels, key)
    if i < len(levels):
        level = levels[i]
        if level.key == key:
            return level
    level = _Level(key, [], [])
    levels.insert(i, level)
    return level


class Engine:
    """The continuous double auction (see the module docstring for its rules).

    ``Engine(params=MarketParams(...))``; feed it events with :meth:`submit`; inspect it with
    :meth:`book`, :meth:`order`, :meth:`trade`; save it with :meth:`snapshot` and load it with
    :meth:`restore`. Restoring a snapshot and submitting the rest of a log gives the same trades
    and the same final state as submitting the whole log.

    The engine keeps every order and trade until a :class:`~edge.market.events.Prune` event
    makes it forget those of the closed intervals up to the prune's interval.
    """

    def __init__(self, *, params: MarketParams | None = None) -> None:
        self._params = params if params is not None else MarketParams()
        self._vt = self._params.policy == "value-time"
        self._limit = self._params.max_matches or sys.maxsize
        self._ref = 0
        self._seq = 0
        self._tseq = 0
        self._tid_high = 0  # the n // 1000 that _tid_prefix is for (0: none yet)
        self._tid_prefix = ""
        self._rseq = 0
        self._orders: dict[str, _Rec] = {}
        self._books: dict[int, _Book] = {}
        # The book of the interval the last order came for (``-1``: none): most orders come for
        # the same interval as the one before, and this saves a dict lookup each.
        self._cur_interval = -1
        self._cur_book = _Book()
        self._closed: set[int] = set()
        # Trade n is self._trades[n - 1 - self._tbase]: a prune drops the leading forgotten
        # trades (counted by _tbase) and leaves None where a forgotten trade follows a kept one,
        # so that len(self._trades) + self._tbase == self._tseq always (made trades are appended).
        self._trades: list[Trade | None] = []
        self._tbase = 0
        # The last prune's interval (-1: never pruned; intervals are non-negative, so a native
        # int compares on the order path instead of an Optional).
        self._pruned = -1
        self._voided: set[str] = set()
        self._offers: dict[str, list[Any]] = {}
        self._requests: dict[str, Reservation | None] = {}
        self._reservations: list[Reservation] = []

    # ------------------------------------------------------------------ inspection

    @property
    def params(self) -> MarketParams:
        return self._params

    @property
    def reference_price(self) -> int:
        return self._ref

    @property
    def trade_count(self) -> int:
        """How many trades the engine has made (voided and pruned ones included)."""
        return self._tseq

    @property
    def pruned_through(self) -> int | None:
        """The interval of the last :class:`~edge.market.events.Prune` (every interval up to it
        is forgotten), or ``None`` if the engine never pruned."""
        return None if self._pruned < 0 else self._pruned

    def closed_intervals(self) -> list[int]:
        """The closed intervals above :attr:`pruned_through`, ascending."""
        return sorted(self._closed)

    def open_intervals(self) -> list[int]:
        """Intervals that have a book (some order came for them) and are not closed."""
        return sorted(self._books)

    def order(self, order_id: str) -> OrderState | None:
        """The order's current state, or ``None`` if no order has that id (or it was pruned)."""
        o = self._orders.get(order_id)
        return None if o is None else _state(o)

    def book(self, interval: int, side: str) -> list[OrderState]:
        """The resting orders of one side of an interval's book, in priority order."""
        if side not in ("buy", "sell"):
            raise ValueError("side must be 'buy' or 'sell'")
        return [_state(o) for o in self._resting(interval, side == "buy")]

    def best_price(self, interval: int, side: str) -> int | None:
        """The best resting price of one side of an interval's book, or ``None``."""
        resting = self._resting(interval, side == "buy")
        return resting[0].price if resting else None

    def trade(self, trade_id: str) -> Trade | None:
        """The trade with this id, or ``None`` if there is none (or it was pruned)."""
        return self._trade_or_none(trade_id)

    def trades(self) -> list[Trade]:
        """Every trade made so far and not pruned, voided ones included, in execution order."""
        return [t for t in self._trades if t is not None]

    def _trade_or_none(self, trade_id: str) -> Trade | None:
        n = _trade_number(trade_id)
        i = n - 1 - self._tbase
        return self._trades[i] if 0 <= i < len(self._trades) else None

    def is_voided(self, trade_id: str) -> bool:
        return trade_id in self._voided

    def reservation(self, request_id: str) -> Reservation | None:
        """The reservation a :class:`Reserve` request got, or ``None`` (dropped or unknown)."""
        return self._requests.get(request_id)

    def reservations(self) -> list[Reservation]:
        return list(self._reservations)

    def _resting(self, interval: int, is_buy: bool) -> list[_Rec]:
        book = self._books.get(interval)
        if book is None:
            return []
        out: list[_Rec] = []
        for level in book.side(is_buy):
            orders = [entry[2] for entry in sorted(level.heap)] if self._vt else level.live()
            out.extend(o for o in orders if o.status == _OPEN)
        return out

    # ------------------------------------------------------------------ events

    def check(self, event: Event) -> None:
        """Raise :class:`InvalidEvent` if :meth:`submit` would refuse ``event``; change nothing."""
        validate_event(event)
        self._check_state(event)

    def submit(self, event: Event) -> list[Trade]:
        """Apply one event; return the trades it caused, in execution order.

        Raises :class:`InvalidEvent` (and changes nothing) if the event is malformed or not
        allowed now: a duplicate id (among the orders, offers and requests the engine keeps), an
        order for a closed or pruned interval, a close of a closed or pruned interval, a cancel of
        an unknown (or pruned) id, a void of an unknown, pruned or already voided trade, a prune
        that is not above the last one or that leaves an open book behind it.

        A :class:`~edge.market.events.Prune` of interval ``k`` (it returns ``[]``) forgets every
        order of the intervals ``<= k``, every trade of those intervals (a trade's ``interval``)
        and their void marks: :meth:`order` and :meth:`trade` return ``None`` for them,
        :meth:`trades` and :meth:`snapshot` leave them out, and their ids are free again (an
        order id need only be unique among the orders the engine keeps). Trade ids go on
        counting (:attr:`trade_count` counts every trade ever made). Refused, with ``field
        "interval"``, if ``k`` is not above :attr:`pruned_through` (``"already pruned through
        N"``) or an interval ``<= k`` still has an open book (``"interval j is not closed"``).
        Offers, reservation requests and reservations are not pruned.
        """
        if isinstance(event, Order):
            made = len(self._trades)
            self._submit_order(event)
            # Only trades made since `made` are in the slice: no prune-holes (None) among them.
            return cast("list[Trade]", self._trades[made:])
        kind = type(event)
        validate_event(event)
        self._check_state(event)
        if kind is Cancel:
            self._cancel(event)  # type: ignore[arg-type]
            return []
        if kind is ReferencePrice:
            return self._reference_price(event)  # type: ignore[arg-type]
        if kind is CloseInterval:
            self._close(event)  # type: ignore[arg-type]
            return []
        if kind is Void:
            return self._void(event)  # type: ignore[arg-type]
        if kind is Offer:
            self._offer(event)  # type: ignore[arg-type]
            return []
        if kind is Reserve:
            self._reserve(event)  # type: ignore[arg-type]
            return []
        if kind is Prune:
            self._prune(event)  # type: ignore[arg-type]
            return []
        raise InvalidEvent(f"not a market event: {kind.__name__}")  # pragma: no cover

    def _known_id(self, event_id: str) -> bool:
        return event_id in self._orders or event_id in self._offers or event_id in self._requests

    def _check_state(self, event: Event) -> None:
        if isinstance(event, Order | Offer | Reserve):
            if self._known_id(event.id):
                raise InvalidEvent(f"duplicate id {event.id!r}", field="id")
            if isinstance(event, Order):
                if event.interval in self._closed:
                    raise InvalidEvent(f"interval {event.interval} is closed", field="interval")
                if event.interval <= self._pruned:
                    raise InvalidEvent(f"interval {event.interval} is pruned", field="interval")
        elif isinstance(event, Cancel):
            if event.id not in self._orders and event.id not in self._offers:
                raise InvalidEvent(f"no order or offer {event.id!r}", field="id")
        elif isinstance(event, CloseInterval):
            if event.interval <= self._pruned:
                raise InvalidEvent(f"interval {event.interval} is pruned", field="interval")
            if event.interval in self._closed:
                raise InvalidEvent(f"interval {event.interval} is already closed", field="interval")
        elif isinstance(event, Void):
            if self._trade_or_none(event.trade) is None:
                if 0 < _trade_number(event.trade) <= self._tseq:
                    raise InvalidEvent(f"trade {event.trade!r} is pruned", field="trade")
                raise InvalidEvent(f"no trade {event.trade!r}", field="trade")
            if event.trade in self._voided:
                raise InvalidEvent(f"trade {event.trade!r} is already voided", field="trade")
        elif isinstance(event, Prune):
            if event.interval <= self._pruned:
                raise InvalidEvent(f"already pruned through {self._pruned}", field="interval")
            still_open = [i for i in self._books if i <= event.interval]
            if still_open:
                raise InvalidEvent(f"interval {min(still_open)} is not closed", field="interval")

    def _submit_order(self, ev: Order) -> None:
        """Apply an order. Its trades, like every trade, are appended to ``self._trades``."""
        oid = ev.id
        owner = ev.owner
        side = ev.side
        wh = ev.wh
        price = ev.price
        ts = ev.ts
        interval = ev.interval
        if not (
            (
                _COMPILED  # the native Order has checked the types when it was built
                or (
                    type(oid) is str
                    and type(owner) is str
                    and type(wh) is int
                    and type(price) is int
                    and type(ts) is int
                    and type(interval) is int
                )
            )
            and wh > 0
            and price > 0
            and ts >= 0
            and interval >= 0
            and (side == "buy" or side == "sell")
            and 0 < len(oid) <= 200
            and 0 < len(owner) <= 200
        ):
            validate_event(ev)
        seq = self._seq + 1
        is_buy = side == "buy"
        o = _Rec(oid, owner, is_buy, price, wh, seq, interval, wh, ts, _OPEN, None)
        orders = self._orders
        # One lookup registers the id and finds a duplicate (the registry is large and cold).
        duplicate = orders.setdefault(oid, o) is not o
        if not duplicate and (len(self._offers) or len(self._requests)):
            duplicate = oid in self._offers or oid in self._requests
            if duplicate:
                del orders[oid]
        if duplicate:
            raise InvalidEvent(f"duplicate id {oid!r}", field="id")
        if interval == self._cur_interval:
            book = self._cur_book
        else:
            found = self._books.get(interval)
            if found is None:
                if interval in self._closed or interval <= self._pruned:
                    del orders[oid]
                    gone = "closed" if interval in self._closed else "pruned"
                    raise InvalidEvent(f"interval {interval} is {gone}", field="interval")
                found = self._books[interval] = _Book()
            book = found
            self._cur_interval = interval
            self._cur_book = book
        self._seq = seq
        # Does it cross at all? (The common "no" is decided here, without a call.)
        ref = self._ref
        olevels: list[_Level]
        if is_buy:
            olevels = book.asks
            bound = price if price >= ref else 0  # blocked: 0 crosses no sell (prices > 0)
        else:
            olevels = book.bids
            bound = -(price if price >= ref else ref)
        if olevels and olevels[0].key <= bound:
            if self._vt:
                self._match_value_time(o, olevels, bound, ts)
            else:
                self._match(o, olevels, bound, ts)
        if o.rem:  # the remainder rests
            levels = book.bids if is_buy else book.asks
            key = -price if is_buy else price
            n = len(levels)
            lo = _find(levels, key)
            if lo < n and levels[lo].key == key:
                level = levels[lo]
                if self._vt:
                    heappush(level.heap, (-o.rem, seq, o))
                else:
                    level.items.append(o)
            elif self._vt:
                levels.insert(lo, _Level(key, [], [(-o.rem, seq, o)]))
            else:
                levels.insert(lo, _Level(key, [o], []))

    def _take(self, o: _Rec, book: _Book, ts: int) -> None:
        """Match order ``o`` as the aggressor against the opposite side of its book.

        Walks the opposite price levels best first while they cross, skipping the owner's own
        orders and excluded counterparts, until ``o`` is filled or has made ``max_matches``
        trades. Updates ``o.rem`` and ``o.status`` if it fills (the caller rests an incoming
        remainder). Each trade takes the price of whichever order came first. A buy below the
        reference price takes nothing; a sell takes only buys at or above it.
        """
        price = o.price
        ref = self._ref
        if o.buy:
            if price < ref:
                return
            olevels, bound = book.asks, price
        else:
            olevels, bound = book.bids, -(price if price >= ref else ref)
        if olevels and olevels[0].key <= bound:
            if self._vt:
                self._match_value_time(o, olevels, bound, ts)
            else:
                self._match(o, olevels, bound, ts)

    def _match(
        self,
        o: _Rec,
        olevels: list[_Level],
        bound: int,
        ts: int,
    ) -> None:
        """The hot loop of :meth:`_take` for price-time levels: opposite keys ``<= bound`` cross.

        Written out (no helper calls per trade) because it runs for most incoming orders.
        """
        is_buy = o.buy
        price = o.price
        oid = o.id
        owner = o.owner
        oseq = o.seq
        interval = o.interval
        excl = o.excl
        limit = self._limit
        registry = self._trades
        tseq = self._tseq
        rem = o.rem
        nmatch = 0
        j = 0
        nlevels = len(olevels)
        while j < nlevels:
            level = olevels[j]
            if level.key > bound:
                break
            items = level.items
            head = level.head
            i = head
            n = len(items)
            while i < n:
                mk = items[i]
                if mk.status:  # not _OPEN: cancelled, dropped lazily here
                    if i == head:
                        head += 1
                        i += 1
                    else:
                        items.pop(i)
                        n -= 1
                    continue
                if mk.owner == owner or (excl is not None and mk.id in excl):
                    i += 1  # passed over: it keeps its place
                    continue
                q = mk.rem
                if q > rem:
                    q = rem
                tseq += 1
                if tseq < 1000:  # self._trade_id(tseq), inlined
                    tid = _SMALL_TRADE_IDS[tseq]
                else:
                    high = tseq // 1000
                    if high != self._tid_high:
                        self._tid_prefix = f"t{high}"
                        self._tid_high = high
                    tid = self._tid_prefix + _THREE_DIGITS[tseq % 1000]
                if mk.seq < oseq:
                    tprice = mk.price
                    maker = "sell" if is_buy else "buy"
                else:
                    tprice = price
                    maker = "buy" if is_buy else "sell"
                if is_buy:
                    t = Trade(
                        tid,
                        oid,
                        mk.id,
                        owner,
                        mk.owner,
                        q,
                        tprice,
                        interval,
                        ts,
                        maker,
                    )
                else:
                    t = Trade(
                        tid,
                        mk.id,
                        oid,
                        mk.owner,
                        owner,
                        q,
                        tprice,
                        interval,
                        ts,
                        maker,
                    )
                registry.append(t)
                rem -= q
                nmatch += 1
                left = mk.rem - q
                mk.rem = left
                if not left:
                    mk.status = _FILLED
                    if i == head:
                        head += 1
                        i += 1
                    else:
                        items.pop(i)
                        n -= 1
                if not rem or nmatch >= limit:
                    break
            if head < n:
                if head > 32 and head * 2 > n:
                    del items[:head]
                    head = 0
                level.head = head
                j += 1
            else:
                olevels.pop(j)
                nlevels -= 1
            if not rem or nmatch >= limit:
                break
        self._tseq = tseq
        o.rem = rem
        if not rem:
            o.status = _FILLED

    def _match_value_time(
        self,
        o: _Rec,
        olevels: list[_Level],
        bound: int,
        ts: int,
    ) -> None:
        """:meth:`_match` for value-time levels: heaps of ``(-remaining, seq, order)``."""
        owner = o.owner
        excl = o.excl
        limit = self._limit
        rem = o.rem
        nmatch = 0
        j = 0
        while j < len(olevels):
            if olevels[j].key > bound:
                break
            level = olevels[j].heap
            skipped: list[tuple[int, int, _Rec]] = []
            while level:
                mk = level[0][2]
                if mk.status:
                    heappop(level)
                    continue
                if mk.owner == owner or (excl is not None and mk.id in excl):
                    skipped.append(heappop(level))
                    continue
                q = mk.rem
                if q > rem:
                    q = rem
                self._trade(o, mk, q, ts)
                rem -= q
                nmatch += 1
                left = mk.rem - q
                mk.rem = left
                if left:
                    heapreplace(level, (-left, mk.seq, mk))
                else:
                    mk.status = _FILLED
                    heappop(level)
                if not rem or nmatch >= limit:
                    break
            for entry in skipped:
                heappush(level, entry)
            if level:
                j += 1
            else:
                olevels.pop(j)
            if not rem or nmatch >= limit:
                break
        o.rem = rem
        if not rem:
            o.status = _FILLED

    def _trade(self, o: _Rec, mk: _Rec, q: int, ts: int) -> None:
        """Record a trade of ``q`` between aggressor ``o`` and resting ``mk``."""
        self._tseq += 1
        first = mk if mk.seq < o.seq else o
        buy, sell = (o, mk) if o.buy else (mk, o)
        t = Trade(
            self._trade_id(self._tseq),
            buy.id,
            sell.id,
            buy.owner,
            sell.owner,
            q,
            first.price,
            o.interval,
            ts,
            "buy" if first.buy else "sell",
        )
        self._trades.append(t)

    def _trade_id(self, n: int) -> str:
        """``f"t{n}"`` for ``n >= 1``, with one allocation at most (see ``_SMALL_TRADE_IDS``)."""
        if n < 1000:
            return _SMALL_TRADE_IDS[n]
        high = n // 1000
        if high != self._tid_high:
            self._tid_prefix = f"t{high}"
            self._tid_high = high
        return self._tid_prefix + _THREE_DIGITS[n % 1000]

    def _cancel(self, ev: Cancel) -> None:
        offer = self._offers.get(ev.id)
        if offer is not None:
            offer[_OFFER_ACTIVE] = False
            return
        o = self._orders[ev.id]
        if o.status != _OPEN:
            return
        o.status = _CANCELLED
        self._drop_dead_front(o)

    def _drop_dead_front(self, o: _Rec) -> None:
        """Keep the head of ``o``'s level live (and drop the level if nothing live is left)."""
        levels = self._books[o.interval].side(o.buy)
        i = _find(levels, -o.price if o.buy else o.price)
        if i >= len(levels) or levels[i].key != (-o.price if o.buy else o.price):
            return
        level = levels[i]
        if self._vt:
            heap = level.heap
            while heap and heap[0][2].status != _OPEN:
                heappop(heap)
            empty = not heap
        else:
            items = level.items
            head = level.head
            while head < len(items) and items[head].status != _OPEN:
                head += 1
            if head > 32 and head * 2 > len(items):
                del items[:head]
                head = 0
            level.head = head
            empty = head >= len(items)
        if empty:
            levels.pop(i)

    def _reference_price(self, ev: ReferencePrice) -> list[Trade]:
        old = self._ref
        new = ev.price
        self._ref = new
        if new >= old:
            return []
        made = len(self._trades)
        for interval in sorted(self._books):
            book = self._books[interval]
            if not book.asks:
                continue
            # Buys with new <= price < old were blocked and are not any more; best first.
            unblocked = [o for o in self._resting(interval, True) if new <= o.price < old]
            for o in unblocked:
                if o.status == _OPEN:
                    self._retake(o, book, ev.ts)
        return cast("list[Trade]", self._trades[made:])

    def _retake(self, o: _Rec, book: _Book, ts: int) -> None:
        """Let a resting order ``o`` take from the opposite side, then fix its own level."""
        before = o.rem
        self._take(o, book, ts)
        if o.rem == before:
            return
        if o.status != _OPEN:
            self._remove(o)
        elif self._vt:
            self._rebuild_level(o)

    def _remove(self, o: _Rec) -> None:
        """Take a filled order out of its level at once (a void may bring it back)."""
        level = _level_at(self._books[o.interval].side(o.buy), -o.price if o.buy else o.price)
        if level is None:
            return
        if self._vt:
            heap = level.heap
            heap[:] = [entry for entry in heap if entry[2] is not o]
            heapify(heap)
        else:
            level.items = [x for x in level.live() if x is not o]
            level.head = 0
        self._drop_dead_front(o)

    def _rebuild_level(self, o: _Rec) -> None:
        """Re-key a value-time level after the remaining of an order in it changed."""
        level = _level_at(self._books[o.interval].side(o.buy), -o.price if o.buy else o.price)
        if level is None:
            return
        live = [(-x.rem, x.seq, x) for _, _, x in level.heap if x.status == _OPEN]
        heapify(live)
        level.heap[:] = live

    def _close(self, ev: CloseInterval) -> None:
        self._closed.add(ev.interval)
        book = self._books.pop(ev.interval, None)
        if ev.interval == self._cur_interval:
            self._cur_interval = -1
            self._cur_book = _Book()
        if book is None:
            return
        for levels in (book.bids, book.asks):
            for level in levels:
                orders = [entry[2] for entry in level.heap] if self._vt else level.live()
                for o in orders:
                    if o.status == _OPEN:
                        o.status = _EXPIRED

    def _void(self, ev: Void) -> list[Trade]:
        t = self._trade_or_none(ev.trade)
        assert t is not None  # _check_state has made sure
        self._voided.add(ev.trade)
        buy = self._orders[t.buy]
        sell = self._orders[t.sell]
        for o, other in ((buy, sell), (sell, buy)):
            o.rem += t.wh
            if o.excl is None:
                o.excl = set()
            o.excl.add(other.id)
            status = o.status
            if status == _FILLED:
                if o.interval in self._closed:
                    o.status = _EXPIRED
                else:
                    o.status = _OPEN
                    self._reinsert(o)
            elif status == _OPEN and self._vt:
                self._rebuild_level(o)
        made = len(self._trades)
        for o in sorted((buy, sell), key=lambda x: x.seq):
            if o.status == _OPEN:
                self._retake(o, self._books[o.interval], ev.ts)
        return cast("list[Trade]", self._trades[made:])

    def _prune(self, ev: Prune) -> None:
        """Forget the orders, trades and void marks of every interval ``<= ev.interval``.

        The containers are rebuilt rather than deleted from, so that their memory is returned
        (a dict never shrinks on deletion); insertion order, and so the snapshot, is kept.
        """
        k = ev.interval
        self._pruned = k
        self._orders = {oid: o for oid, o in self._orders.items() if o.interval > k}
        self._closed = {i for i in self._closed if i > k}
        trades = self._trades
        kept: list[Trade | None] = []
        for t in trades:
            if t is not None and t.interval <= k:
                self._voided.discard(t.id)
                t = None
            if t is not None or kept:  # leading holes are dropped
                kept.append(t)
        self._tbase += len(trades) - len(kept)
        self._trades = kept

    def _reinsert(self, o: _Rec) -> None:
        """Put a previously filled order back at its original (time) position."""
        book = self._books.get(o.interval)
        if book is None:
            book = self._books[o.interval] = _Book()
        level = _level_for(book.side(o.buy), -o.price if o.buy else o.price)
        if self._vt:
            heappush(level.heap, (-o.rem, o.seq, o))
        else:
            items = level.items
            items.insert(bisect_left(items, o.seq, lo=level.head, key=lambda x: x.seq), o)

    def _offer(self, ev: Offer) -> None:
        self._offers[ev.id] = [
            ev.id,
            ev.owner,
            ev.w,
            ev.start,
            ev.end,
            tuple(tuple(t) for t in ev.tiers),
            ev.ts,
            True,
            {},
        ]

    def _reserve(self, ev: Reserve) -> None:
        best: tuple[int, int, list[Any], Any] | None = None
        for n, offer in enumerate(self._offers.values()):
            if not offer[_OFFER_ACTIVE] or offer[_OFFER_OWNER] == ev.owner:
                continue
            if offer[_OFFER_W] < ev.w:
                continue
            cover = cheapest_cover(list(offer[_OFFER_TIERS]), ev.slots)
            if cover.cost > ev.slots * ev.price:
                continue
            start, stop = ev.start, ev.start + cover.units
            if start < offer[_OFFER_START] or stop > offer[_OFFER_END]:
                continue
            used = offer[_OFFER_USED]
            if any(used.get(slot, 0) + ev.w > offer[_OFFER_W] for slot in range(start, stop)):
                continue
            if best is None or cover.cost < best[0]:
                best = (cover.cost, n, offer, cover)
        if best is None:
            self._requests[ev.id] = None
            return
        _, _, offer, cover = best
        used = offer[_OFFER_USED]
        for slot in range(ev.start, ev.start + cover.units):
            used[slot] = used.get(slot, 0) + ev.w
        self._rseq += 1
        reservation = Reservation(
            id=f"r{self._rseq}",
            request=ev.id,
            offer=offer[_OFFER_ID],
            buyer=ev.owner,
            seller=offer[_OFFER_OWNER],
            w=ev.w,
            start=ev.start,
            units=cover.units,
            cost=cover.cost,
            blocks=cover.blocks,
            ts=ev.ts,
        )
        self._requests[ev.id] = reservation
        self._reservations.append(reservation)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The engine's whole state as canonical JSON bytes (see docs/market.md).

        Equal states give equal bytes, whatever the internal layout of the book.
        """
        orders = [
            [
                o.id,
                o.owner,
                "buy" if o.buy else "sell",
                o.wh,
                o.price,
                o.ts,
                o.interval,
                o.seq,
                o.rem,
                _STATUS_NAMES[o.status],
                sorted(o.excl) if o.excl else [],
            ]
            for o in self._orders.values()
        ]
        offers = [
            [
                f[_OFFER_ID],
                f[_OFFER_OWNER],
                f[_OFFER_W],
                f[_OFFER_START],
                f[_OFFER_END],
                [list(t) for t in f[_OFFER_TIERS]],
                f[_OFFER_TS],
                f[_OFFER_ACTIVE],
                sorted([slot, w] for slot, w in f[_OFFER_USED].items()),
            ]
            for f in self._offers.values()
        ]
        state = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "params": {"policy": self._params.policy, "max_matches": self._params.max_matches},
            "reference_price": self._ref,
            "order_seq": self._seq,
            "trade_seq": self._tseq,
            "reservation_seq": self._rseq,
            "pruned_through": self.pruned_through,
            "closed": sorted(self._closed),
            "orders": orders,
            "trades": [t.to_dict() for t in self._trades if t is not None],
            "voided": sorted(self._voided, key=lambda tid: int(tid[1:])),
            "offers": offers,
            "requests": [[rid, None if r is None else r.id] for rid, r in self._requests.items()],
            "reservations": [r.to_dict() for r in self._reservations],
        }
        return _canonical(state).encode()

    @classmethod
    def restore(cls, snapshot: bytes) -> Engine:
        """Rebuild an engine from :meth:`snapshot` bytes (its parameters included).

        Reads versions 1 (never pruned) and 2. Raises
        :class:`~edge.market.errors.InvalidEvent` (a ``MarketError`` and ``ValueError``) if the
        bytes are not a snapshot this version understands.
        """
        try:
            state = json.loads(snapshot)
            if state.get("format") != SNAPSHOT_FORMAT:
                raise ValueError("not a market snapshot")
            version = state.get("version")
            if version not in (1, SNAPSHOT_VERSION) or type(version) is not int:
                raise ValueError(f"unsupported snapshot version {version!r}")
            if version == 1:
                state["pruned_through"] = None
            return cls._from_state(state)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise InvalidEvent(f"bad snapshot: {err}") from None

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Engine:
        params = state["params"]
        engine = cls(
            params=MarketParams(policy=params["policy"], max_matches=params["max_matches"])
        )
        engine._ref = state["reference_price"]
        engine._seq = state["order_seq"]
        engine._tseq = state["trade_seq"]
        engine._rseq = state["reservation_seq"]
        engine._closed = set(state["closed"])
        pruned = state["pruned_through"]
        if pruned is not None and (type(pruned) is not int or pruned < 0):
            raise ValueError(f"bad pruned_through {pruned!r}")
        engine._pruned = -1 if pruned is None else pruned
        for row in state["orders"]:
            oid, owner, side, wh, price, ts, interval, seq, rem, status, excl = row
            o = _Rec(
                oid,
                owner,
                side == "buy",
                price,
                rem,
                seq,
                interval,
                wh,
                ts,
                _STATUS_CODES[status],
                set(excl) if excl else None,
            )
            engine._orders[oid] = o
            if interval not in engine._closed and interval not in engine._books:
                engine._books[interval] = _Book()
            if o.status == _OPEN:
                level = _level_for(
                    engine._books[interval].side(o.buy), -o.price if o.buy else o.price
                )
                if engine._vt:
                    heappush(level.heap, (-o.rem, o.seq, o))
                else:
                    level.items.append(o)
        # The kept trades, each at its place: trade n at n - 1 - base, where base counts the
        # forgotten trades before the first kept one; forgotten ones after it are None.
        kept = [Trade.from_dict(obj) for obj in state["trades"]]
        base = kept[0].seq - 1 if kept else engine._tseq
        slots: list[Trade | None] = [None] * (engine._tseq - base)
        for trade in kept:
            i = trade.seq - 1 - base
            if not 0 <= i < len(slots) or slots[i] is not None:
                raise ValueError(f"trade {trade.id} is out of order or beyond trade_seq")
            slots[i] = trade
        engine._tbase = base
        engine._trades = slots
        engine._voided = set(state["voided"])
        for row in state["offers"]:
            oid, owner, w, start, end, tiers, ts, active, used = row
            engine._offers[oid] = [
                oid,
                owner,
                w,
                start,
                end,
                tuple(tuple(t) for t in tiers),
                ts,
                active,
                {slot: amount for slot, amount in used},
            ]
        by_id = {}
        for obj in state["reservations"]:
            r = Reservation(
                id=obj["id"],
                request=obj["request"],
                offer=obj["offer"],
                buyer=obj["buyer"],
                seller=obj["seller"],
                w=obj["w"],
                start=obj["start"],
                units=obj["units"],
                cost=obj["cost"],
                blocks=tuple(obj["blocks"]),
                ts=obj["ts"],
            )
            engine._reservations.append(r)
            by_id[r.id] = r
        for rid, res_id in state["requests"]:
            engine._requests[rid] = None if res_id is None else by_id[res_id]
        return engine


# Fields of an internal offer record.
(
    _OFFER_ID,
    _OFFER_OWNER,
    _OFFER_W,
    _OFFER_START,
    _OFFER_END,
    _OFFER_TIERS,
    _OFFER_TS,
    _OFFER_ACTIVE,
    _OFFER_USED,
) = range(9)


def _trade_number(trade_id: str) -> int:
    """``n`` for a canonical trade id ``"t<n>"`` (``n >= 1``, no leading zero), else ``0``."""
    if type(trade_id) is not str or not trade_id.startswith("t"):
        return 0
    digits = trade_id[1:]
    if not digits.isdigit() or not digits.isascii() or digits.startswith("0"):
        return 0
    return int(digits)


def _state(o: _Rec) -> OrderState:
    return OrderState(
        id=o.id,
        owner=o.owner,
        side="buy" if o.buy else "sell",
        wh=o.wh,
        price=o.price,
        ts=o.ts,
        interval=o.interval,
        seq=o.seq,
        remaining=o.rem,
        status=_STATUS_NAMES[o.status],
    )


def replay(events: Iterable[Event], params: MarketParams | None = None) -> list[Trade]:
    """Submit ``events`` in order to a fresh engine; return every trade, in execution order.

    Voided trades stay in the list (a void is an event after them), and so do the trades a
    :class:`~edge.market.events.Prune` makes the engine forget (the list is every trade the
    events caused, as :func:`replay_to_lines` writes them); a malformed event raises
    :class:`InvalidEvent`.
    """
    engine = Engine(params=params)
    # Trades handed over before a prune (None: no prune yet, the engine's list is the answer).
    done: list[Trade] | None = None
    with _gc_paused():
        for event in events:
            if isinstance(event, Order):
                engine._submit_order(event)
                continue
            if type(event) is Prune:
                # Trades made since the last prune are all kept (no holes): take them first.
                if done is None:
                    done = []
                start = len(done) - engine._tbase
                done.extend(cast("list[Trade]", engine._trades[start:]))
            engine.submit(event)
    # Every trade of every event, in execution order, is the engine's record of its trades
    # (from the last prune on); the engine ends here, so the list is the caller's alone.
    if done is None:
        return cast("list[Trade]", engine._trades)
    done.extend(cast("list[Trade]", engine._trades[len(done) - engine._tbase :]))
    return done


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a batch replay, then restore it as it was.

    The engine's structures hold no reference cycles (orders, levels and trades point only
    downwards), so reference counting frees everything and the collector has nothing to find;
    left on, it would repeatedly walk the hundreds of thousands of live orders and trades of a
    long replay (about a third of the time at 200k orders). Only whole-log helpers use this;
    :meth:`Engine.submit` never touches the collector.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def iter_log(lines: Iterable[str | bytes]) -> Iterator[tuple[int, Event]]:
    """Parse an order log: yield ``(line number, event)``, skipping blank lines.

    Raises :class:`LogError` at the first malformed line.
    """
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield line_no, parse_line(line, line_no)


def replay_log(
    lines: Iterable[str | bytes],
    params: MarketParams | None = None,
    *,
    engine: Engine | None = None,
) -> Iterator[tuple[Event, list[Trade]]]:
    """Replay a JSON-lines order log: yield each event with the trades it caused.

    A line that is malformed, or names an event the engine refuses, raises :class:`LogError`
    with its line number. Pass ``engine`` to continue from a restored snapshot.
    """
    if engine is None:
        engine = Engine(params=params)
    for line_no, event in iter_log(lines):
        try:
            trades = engine.submit(event)
        except InvalidEvent as err:
            raise LogError(err.reason, line=line_no, field=err.field) from None
        yield event, trades


def replay_to_lines(
    lines: Iterable[str | bytes],
    params: MarketParams | None = None,
    *,
    reservations: bool = False,
) -> list[str]:
    """Replay a JSON-lines order log into the canonical output lines of ``ngrid market replay``.

    One trade per line (:meth:`Trade.to_json`), in execution order; with ``reservations``, each
    matched reservation's line (``"kind":"reservation"``) too, where its request was. All or
    nothing: a bad line raises :class:`LogError` before anything is returned.
    """
    engine = Engine(params=params)
    out: list[str] = []
    with _gc_paused():
        for event, trades in replay_log(lines, engine=engine):
            out.extend(t.to_json() for t in trades)
            if reservations and type(event) is Reserve:
                reservation = engine.reservation(event.id)
                if reservation is not None:
                    out.append(reservation.to_json())
    return out
