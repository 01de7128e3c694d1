"""The order log: parsing, refusing bad lines one by one, canonical encodings."""

from __future__ import annotations

import json

import pytest

from edge.errors import NgridError
from edge.market import (
    Cancel,
    CloseInterval,
    Engine,
    InvalidEvent,
    LogError,
    MarketParams,
    Offer,
    Order,
    Prune,
    ReferencePrice,
    Reserve,
    Void,
    encode_event,
    event_to_dict,
    iter_log,
    parse_event,
    parse_line,
    replay_log,
    validate_event,
)

GOOD = [
    (
        '{"op":"order","id":"a","owner":"h1","side":"buy","wh":5,"price":9,"ts":1,"interval":3}',
        Order("a", "h1", "buy", 5, 9, 1, 3),
    ),
    (
        '{"op":"order","id":"a","owner":"h1","side":"sell","wh":5,"price":9,"ts":1}',
        Order("a", "h1", "sell", 5, 9, 1, 0),
    ),
    ('{"op":"cancel","id":"a","ts":2}', Cancel("a", 2)),
    ('{"op":"reference_price","price":0,"ts":2}', ReferencePrice(0, 2)),
    ('{"op":"close","interval":3,"ts":4}', CloseInterval(3, 4)),
    ('{"op":"void","trade":"t1","ts":4}', Void("t1", 4)),
    ('{"op":"prune","interval":3,"ts":5}', Prune(3, 5)),
    (
        '{"op":"offer","id":"f","owner":"h2","w":3000,"start":10,"end":106,'
        '"tiers":[[1,10],[4,35]],"ts":5}',
        Offer("f", "h2", 3000, 10, 106, ((1, 10), (4, 35)), 5),
    ),
    (
        '{"op":"reserve","id":"r","owner":"h3","w":2000,"start":12,"slots":3,"price":12,"ts":6}',
        Reserve("r", "h3", 2000, 12, 3, 12, 6),
    ),
]


@pytest.mark.parametrize(("line", "event"), GOOD)
def test_good_lines_parse_and_encode_back(line, event):
    assert parse_line(line, 1) == event
    again = parse_line(encode_event(event), 1)
    assert again == event
    assert encode_event(event) == json.dumps(
        json.loads(encode_event(event)), sort_keys=True, separators=(",", ":")
    )


ORDER = {"op": "order", "id": "a", "owner": "h1", "side": "buy", "wh": 5, "price": 9, "ts": 1}

BAD = [
    # (the line's JSON object, the field named, words the message contains)
    ({k: v for k, v in ORDER.items() if k != "wh"}, "wh", "is missing"),
    ({**ORDER, "wh": 0}, "wh", "must be a positive integer"),
    ({**ORDER, "wh": -3}, "wh", "must be a positive integer"),
    ({**ORDER, "wh": 1.0}, "wh", "must be a positive integer"),
    ({**ORDER, "wh": "5"}, "wh", "must be a positive integer"),
    ({**ORDER, "wh": True}, "wh", "must be a positive integer"),
    ({**ORDER, "price": 0}, "price", "must be a positive integer"),
    ({**ORDER, "price": None}, "price", "must be a positive integer"),
    ({**ORDER, "side": "BUY"}, "side", "must be 'buy' or 'sell'"),
    ({**ORDER, "id": 7}, "id", "must be a non-empty string"),
    ({**ORDER, "owner": ""}, "owner", "must be a non-empty string"),
    ({**ORDER, "ts": -1}, "ts", "must be a non-negative integer"),
    ({**ORDER, "interval": "0"}, "interval", "must be a non-negative integer"),
    ({**ORDER, "colour": "red"}, "colour", "is not a field of this op"),
    ({"op": "trade", "id": "x"}, "op", "unknown op 'trade'"),
    ({"id": "x"}, "op", "is missing"),
    ({"op": "cancel", "ts": 1}, "id", "is missing"),
    ({"op": "reference_price", "price": -1, "ts": 1}, "price", "must be a non-negative integer"),
    ({"op": "close", "interval": 1.5, "ts": 1}, "interval", "must be a non-negative integer"),
    ({"op": "void", "trade": "", "ts": 1}, "trade", "must be a non-empty string"),
    ({"op": "prune", "interval": -1, "ts": 1}, "interval", "must be a non-negative integer"),
    ({"op": "prune", "interval": True, "ts": 1}, "interval", "must be a non-negative integer"),
    ({"op": "prune", "interval": 0, "ts": "1"}, "ts", "must be a non-negative integer"),
    ({"op": "prune", "ts": 1}, "interval", "is missing"),
    ({"op": "prune", "interval": 0, "ts": 1, "id": "x"}, "id", "is not a field of this op"),
    (
        {
            "op": "offer",
            "id": "f",
            "owner": "o",
            "w": 1,
            "start": 0,
            "end": 5,
            "tiers": [[1, 10], [2, 25]],
            "ts": 0,
        },
        "tiers",
        "m_i+1 * p_i > p_i+1",
    ),
    (
        {
            "op": "offer",
            "id": "f",
            "owner": "o",
            "w": 1,
            "start": 5,
            "end": 5,
            "tiers": [[1, 10]],
            "ts": 0,
        },
        "end",
        "greater than 'start'",
    ),
    (
        {
            "op": "reserve",
            "id": "r",
            "owner": "o",
            "w": 1,
            "start": 0,
            "slots": 0,
            "price": 1,
            "ts": 0,
        },
        "slots",
        "must be a positive integer",
    ),
    # Bounds (docs/market.md): one past each maximum is refused, the maximum itself is not
    # (test_bounds_are_inclusive). Literals, not the module's constants: 10 MWh, 1,000 EUR/kWh.
    ({**ORDER, "wh": 10_000_001}, "wh", "must be at most 10000000"),
    ({**ORDER, "price": 1_000_001}, "price", "must be at most 1000000"),
    ({**ORDER, "price": 10**16}, "price", "must be at most 1000000"),
    ({**ORDER, "interval": 2**53}, "interval", "must be at most 9007199254740991"),
    ({**ORDER, "ts": 2**63}, "ts", "must be at most 9007199254740991"),
    ({"op": "reference_price", "price": 1_000_001, "ts": 0}, "price", "must be at most"),
    ({"op": "close", "interval": 2**64, "ts": 0}, "interval", "must be at most"),
]


def test_bounds_are_inclusive():
    line = {**ORDER, "wh": 10_000_000, "price": 1_000_000, "interval": 2**53 - 1, "ts": 2**53 - 1}
    ((event, trades),) = list(replay_log([json.dumps(line)]))
    assert (event.wh, event.price, event.interval, trades) == (10_000_000, 1_000_000, 2**53 - 1, [])


@pytest.mark.parametrize(("obj", "field", "words"), BAD)
def test_each_bad_line_names_its_line_and_field(obj, field, words):
    lines = [json.dumps(ORDER | {"id": "first"}), "", json.dumps(obj)]
    with pytest.raises(LogError) as err:
        list(replay_log(lines))
    assert err.value.line == 3
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith(f"line 3: field {field!r}: ")
    assert str(err.value.with_source("log.jsonl")).startswith(f"log.jsonl:3: field {field!r}: ")
    assert isinstance(err.value, NgridError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("line", "words"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("7", "JSON object")],
)
def test_lines_that_are_not_json_objects(line, words):
    with pytest.raises(LogError) as err:
        list(iter_log([line]))
    assert err.value.line == 1 and err.value.field is None
    assert words in str(err.value)


CLOSE_0 = {"op": "close", "interval": 0, "ts": 1}
PRUNE_0 = {"op": "prune", "interval": 0, "ts": 2}


@pytest.mark.parametrize(
    ("lines", "line", "field"),
    [
        ([ORDER, ORDER], 2, "id"),  # duplicate id
        ([{"op": "cancel", "id": "ghost", "ts": 1}], 1, "id"),
        ([{"op": "void", "trade": "t1", "ts": 1}], 1, "trade"),
        ([{"op": "close", "interval": 0, "ts": 1}, ORDER], 2, "interval"),
        (
            [{"op": "close", "interval": 0, "ts": 1}, {"op": "close", "interval": 0, "ts": 2}],
            2,
            "interval",
        ),
        ([ORDER, {"op": "prune", "interval": 0, "ts": 1}], 2, "interval"),  # 0 is open
        ([CLOSE_0, PRUNE_0, PRUNE_0], 3, "interval"),  # already pruned through 0
        ([CLOSE_0, PRUNE_0, ORDER], 3, "interval"),  # interval 0 is pruned
    ],
)
def test_events_the_engine_refuses_name_their_line(lines, line, field):
    with pytest.raises(LogError) as err:
        list(replay_log(json.dumps(x) for x in lines))
    assert (err.value.line, err.value.field) == (line, field)


def test_parse_event_takes_a_decoded_object():
    assert parse_event(ORDER, 4) == Order("a", "h1", "buy", 5, 9, 1)
    with pytest.raises(LogError) as err:
        parse_event({**ORDER, "wh": 0}, 4)
    assert err.value.line == 4


def test_trade_lines_are_canonical_and_round_trip():
    lines = [
        json.dumps(ORDER | {"side": "sell", "owner": "s", "id": "s1", "price": 7}),
        json.dumps(ORDER | {"id": "b1", "ts": 2}),
    ]
    [(_, []), (_, [trade])] = list(replay_log(lines))
    text = trade.to_json()
    assert text == (
        '{"buy":"b1","buyer":"h1","id":"t1","interval":0,"maker":"sell","price":7,'
        '"sell":"s1","seller":"s","ts":2,"wh":5}'
    )
    assert type(trade).from_dict(json.loads(text)) == trade
    assert trade.maker_id == "s1" and trade.seq == 1


def test_replay_log_can_continue_a_restored_engine():
    first = [json.dumps(ORDER | {"side": "sell", "owner": "s", "id": "s1"})]
    second = [json.dumps(ORDER | {"id": "b1"})]
    engine = Engine(params=MarketParams())
    list(replay_log(first, engine=engine))
    restored = Engine.restore(engine.snapshot())
    [(_, trades)] = list(replay_log(second, engine=restored))
    assert [t.sell for t in trades] == ["s1"]


def test_prune_is_checked_like_close_through_the_python_api():
    e = Engine()
    for event, field in ((Prune(-1, 0), "interval"), (Prune(0, -1), "ts")):
        with pytest.raises(InvalidEvent) as err:
            e.submit(event)
        assert err.value.field == field
    assert validate_event(Prune(0, 0)) is None
    assert event_to_dict(Prune(2, 9)) == {"op": "prune", "interval": 2, "ts": 9}
    assert encode_event(Prune(2, 9)) == '{"interval":2,"op":"prune","ts":9}'
