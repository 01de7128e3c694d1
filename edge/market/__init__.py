"""Market core: the deterministic continuous double auction, its order log and its settlement.

A pure state machine (no clock, randomness, floats or I/O): the same ordered event log gives the
same trades, byte for byte, on any machine, so the coordinator verifies a gateway by replaying its
log with this very package. See docs/market.md for the rules and formats. ``make market`` compiles
the engine with mypyc; the same source runs interpreted without it (:func:`is_compiled` says which).

>>> from edge.market import Engine, MarketParams, Order
>>> engine = Engine(params=MarketParams())
>>> engine.submit(Order("s1", "alice", "sell", 500, 300, ts=1))
[]
>>> [t.to_json() for t in engine.submit(Order("b1", "bob", "buy", 200, 320, ts=2))]
['{"buy":"b1","buyer":"bob","id":"t1","interval":0,"maker":"sell","price":300,"sell":"s1","seller":"alice","ts":2,"wh":200}']
"""

from edge.market._native import is_compiled
from edge.market.engine import (
    POLICIES,
    Engine,
    MarketParams,
    OrderState,
    Reservation,
    Trade,
    iter_log,
    replay,
    replay_log,
    replay_to_lines,
)
from edge.market.errors import InvalidEvent, LogError, MarketError, TierError
from edge.market.events import (
    MAX_INT,
    MAX_PRICE,
    MAX_QUANTITY,
    Cancel,
    CloseInterval,
    Event,
    Offer,
    Order,
    Prune,
    ReferencePrice,
    Reserve,
    Void,
    encode_event,
    event_to_dict,
    parse_event,
    parse_line,
    validate_event,
)
from edge.market.settlement import Rates, Settlement, SettlementError, check_settlement, settle
from edge.market.tiers import Cover, cheapest_cover, check_tiers

__all__ = [
    "MAX_INT",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "POLICIES",
    "Cancel",
    "CloseInterval",
    "Cover",
    "Engine",
    "Event",
    "InvalidEvent",
    "LogError",
    "MarketError",
    "MarketParams",
    "Offer",
    "Order",
    "OrderState",
    "Prune",
    "Rates",
    "ReferencePrice",
    "Reservation",
    "Reserve",
    "Settlement",
    "SettlementError",
    "TierError",
    "Trade",
    "Void",
    "cheapest_cover",
    "check_settlement",
    "check_tiers",
    "encode_event",
    "event_to_dict",
    "is_compiled",
    "iter_log",
    "parse_event",
    "parse_line",
    "replay",
    "replay_log",
    "replay_to_lines",
    "settle",
    "validate_event",
]
