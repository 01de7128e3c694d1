"""The events of an order log, their validation, and their canonical JSON encoding.

A log is a sequence of JSON objects, one per line, each with an ``op``:

======================  ============================================================================
``order``               ``{"op":"order","id":str,"owner":str,"side":"buy"|"sell","wh":int>0,
                        "price":int>0,"ts":int,"interval":int}`` (``interval`` defaults to 0)
``cancel``              ``{"op":"cancel","id":str,"ts":int}``: an order or an offer
``reference_price``     ``{"op":"reference_price","price":int>=0,"ts":int}``
``close``               ``{"op":"close","interval":int,"ts":int}``: the delivery interval ends
``void``                ``{"op":"void","trade":str,"ts":int}``: the seller's meter did not lock
``prune``               ``{"op":"prune","interval":int,"ts":int}``: forget intervals up to this one
``offer``               ``{"op":"offer","id":str,"owner":str,"w":int>0,"start":int,"end":int,
                        "tiers":[[m,p],...],"ts":int}``: discharge capacity for reservation
``reserve``             ``{"op":"reserve","id":str,"owner":str,"w":int>0,"start":int,
                        "slots":int>0,"price":int>0,"ts":int}``: reserve capacity, or nothing
======================  ============================================================================

Integers are JSON integers (``1.0``, ``true`` and ``"1"`` are refused); ``ts``, ``interval``,
``start`` and ``end`` are non-negative. Fields not listed are refused, so a misspelt field is an
error rather than a silently ignored one. ``ts`` is carried into trades but never interpreted:
priority is the position in the log. See docs/market.md for the rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from edge.market.errors import InvalidEvent, LogError
from edge.market.tiers import check_tiers

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
    "MAX_INT",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "Cancel",
    "CloseInterval",
    "Event",
    "Offer",
    "Order",
    "Prune",
    "ReferencePrice",
    "Reserve",
    "Void",
    "encode_event",
    "event_to_dict",
    "parse_event",
    "parse_line",
    "validate_event",
]


@final
@mypyc_attr(acyclic=True, free_list_len=1)
@dataclass(init=False, unsafe_hash=True, slots=True)
class Order:
    """A limit order for ``wh`` watt-hours at ``price`` ticks per kWh, for delivery ``interval``.

    ``Order(id, owner, side, wh, price, ts, interval=0)``, positional or by keyword. A dataclass
    (equality and hashing by fields, ``repr``, ``dataclasses.replace``, copy and pickle) whose
    fields are ``Final``: mypy refuses any assignment, and in the compiled build (mypyc, see
    docs/market.md) the fields are read-only at run time too (``AttributeError``); interpreted,
    Python does not enforce ``Final``. It is not ``frozen=True`` because orders are built on the
    hot path: mypyc compiles this hand-written ``__init__`` to C, while a frozen dataclass's
    generated one stays interpreted. Compiled, it is not tracked by the cyclic garbage collector
    (``acyclic``) and a freed one is kept for the next (``free_list_len=1``). The constructor does
    not validate; :meth:`edge.market.Engine.submit` does.
    """

    id: Final[str]
    owner: Final[str]
    side: Final[str]
    wh: Final[int]
    price: Final[int]
    ts: Final[int]
    interval: Final[int]

    def __init__(
        self, id: str, owner: str, side: str, wh: int, price: int, ts: int, interval: int = 0
    ) -> None:
        self.id = id
        self.owner = owner
        self.side = side
        self.wh = wh
        self.price = price
        self.ts = ts
        self.interval = interval

    def __reduce__(self) -> tuple[type[Order], tuple[str, str, str, int, int, int, int]]:
        fields = (self.id, self.owner, self.side, self.wh, self.price, self.ts, self.interval)
        return (Order, fields)


@dataclass(frozen=True)
class Cancel:
    """Withdraw the unfilled rest of an order (or an offer). Cancelling a filled, cancelled or
    expired order changes nothing; cancelling an id never seen is an error."""

    id: str
    ts: int


@dataclass(frozen=True)
class ReferencePrice:
    """Set the dynamic reference price: a buy whose limit is below it does not match.

    When a lower reference price unblocks resting buys, each unblocked buy, best first, trades
    with the resting sells it crosses, at the price of whichever order came first.
    """

    price: int
    ts: int


@dataclass(frozen=True)
class CloseInterval:
    """The delivery interval ends: its resting orders expire and it takes no more orders."""

    interval: int
    ts: int


@dataclass(frozen=True)
class Prune:
    """Forget every delivery interval up to ``interval``: the engine drops their orders, their
    trades and their void marks, so that a long-running engine (and its snapshot) stays small.

    Logged by the gateway once every trade of those intervals is settled and batched, or voided.
    Every interval ``<= interval`` that has a book must be closed, and ``interval`` must be above
    the last prune's; afterwards, events that name a forgotten interval, order or trade are
    refused (see :meth:`edge.market.Engine.submit` and docs/market.md, rule 11).
    """

    interval: int
    ts: int


@dataclass(frozen=True)
class Void:
    """Undo a trade whose seller's meter did not acknowledge the lock (DESIGN.md principle 4).

    Both orders get the voided quantity back with their original priority; an order that had
    been filled re-enters the book at its original position, unless its interval has closed (it
    stays expired) or it was cancelled (it stays cancelled). The two orders never match each other
    again. Restored orders that now cross the book trade as a reference-price unblock does.
    """

    trade: str
    ts: int


@dataclass(frozen=True)
class Offer:
    """A seller offers ``w`` watts of discharge capacity in slots ``start`` to ``end - 1``.

    ``tiers`` is the tiered duration offering ``((m_1, p_1), ..., (m_N, p_N))`` of seed 002: tier
    ``i`` sells ``m_1*...*m_i`` consecutive slots for ``p_i`` ticks. Slots are delivery intervals.
    """

    id: str
    owner: str
    w: int
    start: int
    end: int
    tiers: tuple[tuple[int, int], ...]
    ts: int


@dataclass(frozen=True)
class Reserve:
    """A buyer asks for ``w`` watts of capacity for ``slots`` slots from slot ``start``, paying at
    most ``slots * price`` ticks. Matched at once against the cheapest fitting offer, or dropped
    (seed 002: buy requests never rest)."""

    id: str
    owner: str
    w: int
    start: int
    slots: int
    price: int
    ts: int


Event = Order | Cancel | ReferencePrice | CloseInterval | Void | Offer | Reserve | Prune

# op -> (class, required fields, optional fields with defaults)
_SCHEMA: Final[dict[str, tuple[type[Any], tuple[str, ...], dict[str, Any]]]] = {
    "order": (Order, ("id", "owner", "side", "wh", "price", "ts"), {"interval": 0}),
    "cancel": (Cancel, ("id", "ts"), {}),
    "reference_price": (ReferencePrice, ("price", "ts"), {}),
    "close": (CloseInterval, ("interval", "ts"), {}),
    "void": (Void, ("trade", "ts"), {}),
    "offer": (Offer, ("id", "owner", "w", "start", "end", "tiers", "ts"), {}),
    "reserve": (Reserve, ("id", "owner", "w", "start", "slots", "price", "ts"), {}),
    "prune": (Prune, ("interval", "ts"), {}),
}
_OP_OF: Final[dict[type[Any], str]] = {cls: op for op, (cls, _, _) in _SCHEMA.items()}

_POSITIVE = frozenset({"wh", "w", "slots"})
_NON_NEGATIVE = frozenset({"ts", "interval", "start", "end"})
_STRINGS = frozenset({"id", "owner", "trade"})
MAX_ID_LEN: Final = 200
#: Upper bounds of the numbers in a market event (docs/market.md, "Bounds"): an order's Wh, a
#: reservation's W and slots at most MAX_QUANTITY (10 MWh); a price at most MAX_PRICE ticks per
#: kWh (1,000 EUR/kWh at 0.1 ct a tick); times, intervals and slot numbers at most MAX_INT
#: (2**53 - 1, exact in every JSON reader). Settlement's largest product, Wh x price x 1000
#: microticks, then stays below 10**16, far inside SQLite's signed 64-bit integers.
MAX_QUANTITY: Final = 10**7
MAX_PRICE: Final = 10**6
MAX_INT: Final = 2**53 - 1


def _is_int(value: object) -> bool:
    return type(value) is int


def _check_field(name: str, value: object) -> None:
    """Raise :class:`InvalidEvent` unless ``value`` is valid for a field called ``name``."""
    if name in _STRINGS:
        if type(value) is not str or not value:
            raise InvalidEvent("must be a non-empty string", field=name)
        if len(value) > MAX_ID_LEN:
            raise InvalidEvent(f"must be at most {MAX_ID_LEN} characters", field=name)
    elif name == "side":
        if value != "buy" and value != "sell":
            raise InvalidEvent("must be 'buy' or 'sell'", field=name)
    elif name in _POSITIVE:
        if not _is_int(value) or value <= 0:  # type: ignore[operator]
            raise InvalidEvent("must be a positive integer", field=name)
        if value > MAX_QUANTITY:  # type: ignore[operator]
            raise InvalidEvent(f"must be at most {MAX_QUANTITY}", field=name)
    elif name in _NON_NEGATIVE:
        if not _is_int(value) or value < 0:  # type: ignore[operator]
            raise InvalidEvent("must be a non-negative integer", field=name)
        if value > MAX_INT:  # type: ignore[operator]
            raise InvalidEvent(f"must be at most {MAX_INT}", field=name)
    elif name == "tiers":
        _check_tiers_shape(value)


def _check_tiers_shape(value: object) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidEvent("must be a non-empty list of [multiplier, price] pairs", field="tiers")
    for pair in value:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(_is_int(x) and x > 0 for x in pair)
        ):
            raise InvalidEvent("each tier must be a pair of positive integers", field="tiers")


def validate_event(event: Event) -> None:
    """Check an event's fields on their own (not against the engine's state).

    Raises :class:`InvalidEvent` naming the first offending field.
    """
    if type(event) is Order:
        _check_field("id", event.id)
        _check_field("owner", event.owner)
        _check_field("side", event.side)
        _check_field("wh", event.wh)
        if not _is_int(event.price) or event.price <= 0:
            raise InvalidEvent("must be a positive integer", field="price")
        if event.price > MAX_PRICE:
            raise InvalidEvent(f"must be at most {MAX_PRICE}", field="price")
        _check_field("ts", event.ts)
        _check_field("interval", event.interval)
        return
    op = _OP_OF.get(type(event))
    if op is None:
        raise InvalidEvent(f"not a market event: {type(event).__name__}")
    _, required, _ = _SCHEMA[op]
    _check_values(op, {name: getattr(event, name) for name in required})
    _check_relations(event)


def _check_values(op: str, values: dict[str, Any]) -> None:
    """Check the fields of an ``op`` event, given as a dict, each on its own."""
    for name, value in values.items():
        if name == "price":
            low_ok = _is_int(value) and (value >= 0 if op == "reference_price" else value > 0)
            if not low_ok:
                kind = "non-negative" if op == "reference_price" else "positive"
                raise InvalidEvent(f"must be a {kind} integer", field="price")
            if value > MAX_PRICE:
                raise InvalidEvent(f"must be at most {MAX_PRICE}", field="price")
        else:
            _check_field(name, value)


def _check_relations(event: Event) -> None:
    """Check what involves more than one field (an offer's tiers and its slot range)."""
    if isinstance(event, Offer):
        try:
            check_tiers(list(event.tiers))
        except ValueError as err:
            raise InvalidEvent(str(err), field="tiers") from None
        if event.end <= event.start:
            raise InvalidEvent("must be greater than 'start'", field="end")


def parse_event(obj: object, line_no: int = 0) -> Event:
    """Turn one decoded log line into an event, or raise :class:`LogError` naming the field."""
    if not isinstance(obj, dict):
        raise LogError("must be a JSON object", line=line_no)
    op = obj.get("op")
    if op is None:
        raise LogError("is missing", line=line_no, field="op")
    if type(op) is not str or op not in _SCHEMA:
        raise LogError(f"unknown op {op!r}", line=line_no, field="op")
    cls, required, optional = _SCHEMA[op]
    for name in obj:
        if name != "op" and name not in required and name not in optional:
            raise LogError("is not a field of this op", line=line_no, field=name)
    values: dict[str, Any] = {}
    for name in required:
        if name not in obj:
            raise LogError("is missing", line=line_no, field=name)
        values[name] = obj[name]
    for name, default in optional.items():
        values[name] = obj.get(name, default)
    if op == "offer" and isinstance(values["tiers"], list):
        tiers = values["tiers"]
        if all(isinstance(pair, list) for pair in tiers):
            values["tiers"] = tuple(tuple(pair) for pair in tiers)
    try:
        # Fields are checked before the event is built: a compiled build's classes refuse
        # arguments of the wrong type with a TypeError, which would not name the field.
        _check_values(op, values)
        event: Event = cls(**values)
        _check_relations(event)
    except InvalidEvent as err:
        raise LogError(err.reason, line=line_no, field=err.field) from None
    return event


def parse_line(line: str | bytes, line_no: int = 0) -> Event:
    """Decode one JSON log line and parse it (see :func:`parse_event`)."""
    try:
        obj = json.loads(line)
    except ValueError as err:
        raise LogError(f"not valid JSON ({err})", line=line_no) from None
    return parse_event(obj, line_no)


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event as the JSON object of its log line (``op`` first, then its fields)."""
    op = _OP_OF[type(event)]
    _, required, optional = _SCHEMA[op]
    out: dict[str, Any] = {"op": op}
    for name in (*required, *optional):
        value = getattr(event, name)
        out[name] = [list(pair) for pair in value] if name == "tiers" else value
    return out


def encode_event(event: Event) -> str:
    """The event's canonical log line: sorted keys, no spaces, no trailing newline."""
    return json.dumps(event_to_dict(event), sort_keys=True, separators=(",", ":"))
