"""The wire format on both sides against the golden vectors (edge/wire/vectors.json).

The MicroPython VM runs the same checks on the firmware in tests/vm/test_vm_firmware.py.
"""

from __future__ import annotations

import hmac
from hashlib import sha256
from typing import Any

import pytest

from edge import wire
from hil.virtual.firmware import import_firmware

VECTORS = wire.load_vectors()
fw_wire = import_firmware("ngmeter.wire")


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


@pytest.mark.parametrize("vector", VECTORS["hmac_sha256"], ids=_ids(VECTORS["hmac_sha256"]))
def test_firmware_hmac_matches_rfc4231(vector: dict[str, Any]) -> None:
    key, data = bytes.fromhex(vector["key"]), bytes.fromhex(vector["data"])
    assert fw_wire.hmac_sha256(key, data).hex() == vector["mac"]
    assert hmac.new(key, data, sha256).hexdigest() == vector["mac"]


@pytest.mark.parametrize("vector", VECTORS["messages"], ids=_ids(VECTORS["messages"]))
def test_both_sides_produce_the_vector(vector: dict[str, Any]) -> None:
    key, fields = bytes.fromhex(vector["key"]), vector["fields"]
    for side in (wire, fw_wire):
        assert side.canonical(fields) == vector["canonical"].encode()
        assert side.mac_hex(key, fields) == vector["mac"]
        assert side.seal(key, fields) == vector["payload"].encode()


@pytest.mark.parametrize("vector", VECTORS["messages"], ids=_ids(VECTORS["messages"]))
def test_both_sides_open_the_vector(vector: dict[str, Any]) -> None:
    key, payload = bytes.fromhex(vector["key"]), vector["payload"].encode()
    kinds = frozenset({vector["fields"]["kind"]})
    assert wire.open_payload(key, payload, kinds=kinds) == vector["fields"]
    assert fw_wire.open_payload(key, payload) == vector["fields"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=_ids(VECTORS["invalid"]))
def test_both_sides_refuse_with_the_same_reason(vector: dict[str, Any]) -> None:
    key, payload = bytes.fromhex(vector["key"]), vector["payload"].encode()
    with pytest.raises(wire.WireError) as gateway_err:
        wire.open_payload(key, payload, kinds=wire.METER_KINDS | wire.COMMAND_KINDS)
    with pytest.raises(fw_wire.WireError) as meter_err:
        fw_wire.open_payload(key, payload)
    assert gateway_err.value.reason == meter_err.value.reason == vector["reason"]


def test_field_tables_agree() -> None:
    assert dict(wire.FIELDS) == fw_wire.FIELDS
    reasons = {v for k, v in vars(fw_wire).items() if k.isupper() and isinstance(v, str)}
    assert reasons >= wire.REASONS


def test_mac_sits_inside_every_kind() -> None:
    # open_payload finds the signed bytes by cutting ',"mac":"..."' out of the payload: that
    # needs a field sorting before "mac" in every kind (and "v" after it).
    for kind, names in wire.FIELDS.items():
        assert names[0] < "mac" < names[-1], kind


@pytest.mark.parametrize("name", ["fw", "meter"])
def test_a_value_shaped_like_the_mac_pair_is_refused(name: str) -> None:
    # No value can carry the quotes and comma of a second mac pair: canonical() refuses it
    # (malformed) before any MAC is computed; without that check it would be a bad_mac.
    state = {v["name"]: v for v in VECTORS["messages"]}["state"]
    payload, key = state["payload"].encode(), bytes.fromhex(state["key"])
    value = state["fields"][name]
    forged = payload.replace(
        f'"{name}":"{value}"'.encode(),
        f'"{name}":"a\\",\\"mac\\":\\"{state["mac"]}"'.encode(),
    )
    assert forged != payload
    with pytest.raises(wire.WireError) as err:
        wire.open_payload(key, forged, kinds=wire.METER_KINDS)
    assert err.value.reason == "malformed"


def test_gateway_parses_typed_messages() -> None:
    by_name = {v["name"]: v for v in VECTORS["messages"]}
    state = by_name["state"]
    telemetry = wire.parse_meter_message(
        state["payload"].encode(), key=bytes.fromhex(state["key"]), meter="m-001"
    )
    assert telemetry == wire.Telemetry(
        meter="m-001",
        seq=1042,
        ts=1767225600,
        soc_bp=7350,
        import_wh=48211,
        export_wh=1520,
        power_w=-1830,
        locked_wh=500,
        fw="0.1.0",
    )
    refusal = by_name["ack-insufficient-reserve"]
    ack = wire.parse_meter_message(
        refusal["payload"].encode(), key=bytes.fromhex(refusal["key"]), meter="m-001"
    )
    assert isinstance(ack, wire.Ack)
    assert (ack.ok, ack.reason, ack.cmd) == (False, "insufficient_reserve", 78)
    assert ack.trade == "t-000018"
    with pytest.raises(wire.WireError) as err:
        wire.parse_meter_message(
            state["payload"].encode(), key=bytes.fromhex(state["key"]), meter="m-002"
        )
    assert err.value.reason == "wrong_meter"


def test_gateway_builds_the_lock_vector() -> None:
    lock = next(v for v in VECTORS["messages"] if v["name"] == "lock")
    f = lock["fields"]
    built = wire.build_lock(
        key=bytes.fromhex(lock["key"]),
        meter=f["meter"],
        seq=f["seq"],
        ts=f["ts"],
        exp=f["exp"],
        trade=f["trade"],
        wh=f["wh"],
        start=f["start"],
        end=f["end"],
    )
    assert built == lock["payload"].encode()


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"soc_bp": 10001}, "soc_bp"),
        ({"import_wh": -1}, "import_wh"),
        ({"seq": -5}, "seq"),
    ],
)
def test_gateway_refuses_out_of_range_values(fields: dict[str, int], detail: str) -> None:
    state = next(v for v in VECTORS["messages"] if v["name"] == "state")
    key = bytes.fromhex(state["key"])
    payload = wire.seal(key, {**state["fields"], **fields})
    with pytest.raises(wire.WireError, match=detail) as err:
        wire.parse_meter_message(payload, key=key, meter="m-001")
    assert err.value.reason == "malformed"


def test_builders_refuse_bad_values() -> None:
    key = bytes(32)
    with pytest.raises(wire.WireError, match="end must be after start"):
        wire.build_lock(key=key, meter="m", seq=1, ts=0, exp=9, trade="t", wh=5, start=9, end=9)
    with pytest.raises(wire.WireError, match="wh"):
        wire.build_lock(key=key, meter="m", seq=1, ts=0, exp=9, trade="t", wh=0, start=0, end=9)
    with pytest.raises(wire.WireError, match="trade"):
        wire.build_release(key=key, meter="m", seq=1, ts=0, exp=9, trade="bad id!")
    with pytest.raises(wire.WireError, match="32 bytes"):
        wire.build_ping(key=b"short", meter="m", seq=1, ts=0, exp=9)


def test_topics_round_trip() -> None:
    name = wire.topic("gw-1", "m-001", "cmd")
    assert name == "ngrid/gw-1/m-001/cmd"
    assert wire.parse_topic(name) == wire.Topic(gateway="gw-1", meter="m-001", leaf="cmd")
    for bad in ("ngrid/gw/m", "other/gw/m/state", "ngrid/gw/m/nope", "ngrid/g w/m/state"):
        with pytest.raises(wire.WireError):
            wire.parse_topic(bad)
