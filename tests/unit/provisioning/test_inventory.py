"""The installer's inventory: records, fingerprints, the key store, atomic writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from provisioning.errors import InventoryError, UnknownGatewayError
from provisioning.inventory import (
    GatewayRecord,
    Inventory,
    MeterRecord,
    fingerprint,
    validate_id,
)

KEY = bytes(range(32))


def gateway(gateway_id: str = "gw1") -> GatewayRecord:
    return GatewayRecord(
        id=gateway_id,
        public_key="ab" * 32,
        key_fingerprint=fingerprint(bytes.fromhex("ab" * 32)),
        broker_host="gw.local",
        broker_port=1883,
        mqtt_user=f"gw-{gateway_id}",
        mqtt_password_hash="$7$101$x$y",
        bundle="/tmp/bundle",
        provisioned_at="2026-06-01T14:00:00+00:00",
        provisioned_by="ann@laptop",
    )


def meter(meter_id: str = "m-1", *, key: bytes = KEY, gw: str = "gw1") -> MeterRecord:
    return MeterRecord(
        id=meter_id,
        gateway=gw,
        owner="no-4",
        capacity_wh=13_500,
        reserve_bp=2_000,
        key_fingerprint=fingerprint(key),
        mqtt_password_hash="$7$101$a$b",
        port="/dev/ttyUSB0",
        chip="ESP32",
        firmware_sha256="f" * 64,
        image_sha256=None,
        self_test="passed",
        provisioned_at="2026-06-01T14:05:00+00:00",
        provisioned_by="ann@laptop",
    )


def test_fingerprint_is_sha256_prefix_and_ids_are_topic_safe() -> None:
    assert fingerprint(b"") == "sha256:e3b0c44298fc1c14"
    assert validate_id("m-01", what="meter") == "m-01"
    for bad in ("", "M1", "a/b", "a+b", "a#", "a b", "-x", "x" * 33):
        with pytest.raises(ValueError, match="not usable"):
            validate_id(bad, what="meter")


def test_records_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    with Inventory(path=path) as inv:
        inv.put_gateway(gateway())
        inv.put_meter(meter("m-2"), mac_key=KEY)
        inv.put_meter(meter("m-1"), mac_key=KEY)
    with Inventory(path=path) as inv:
        assert inv.gateway("gw1") == gateway()
        assert [m.id for m in inv.meters(gateway="gw1")] == ["m-1", "m-2"]
        assert inv.find_meter("m-1") == meter("m-1")
        assert inv.keystore.get("m-1") == KEY


def test_inventory_holds_fingerprints_and_the_key_store_the_secrets(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    with Inventory(path=path) as inv:
        inv.put_gateway(gateway())
        inv.put_meter(meter(), mac_key=KEY)
        keystore = inv.keystore.path
    assert KEY.hex() not in path.read_text()
    assert fingerprint(KEY) in path.read_text()
    assert json.loads(keystore.read_text())["meters"]["m-1"]["mac_key"] == KEY.hex()
    assert stat.S_IMODE(os.stat(keystore).st_mode) == 0o600


def test_put_meter_refuses_unknown_gateway_and_mismatched_key(tmp_path: Path) -> None:
    with Inventory(path=tmp_path / "inv.json") as inv:
        with pytest.raises(UnknownGatewayError, match="ngrid provision gateway --name gw9"):
            inv.put_meter(meter(gw="gw9"), mac_key=KEY)
        inv.put_gateway(gateway())
        with pytest.raises(ValueError, match="does not match"):
            inv.put_meter(meter(), mac_key=bytes(32))
        with pytest.raises(ValueError, match="32 bytes"):
            inv.put_meter(meter(), mac_key=b"short")
        assert inv.meters() == []
        assert list(inv.keystore) == []


def test_a_failed_write_leaves_the_previous_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "inv.json"
    with Inventory(path=path) as inv:
        inv.put_gateway(gateway())
    before = path.read_bytes()

    def power_cut(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)
    with Inventory(path=path) as inv, pytest.raises(OSError):
        inv.put_gateway(gateway("gw2"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["inv.json"]  # no temp file left behind


def test_corrupt_inventory_is_reported_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text('{"gateways": {')
    with pytest.raises(InventoryError, match="not valid JSON"):
        Inventory(path=path).gateways()


def test_missing_key_is_an_actionable_error(tmp_path: Path) -> None:
    with (
        Inventory(path=tmp_path / "inv.json") as inv,
        pytest.raises(InventoryError, match="--new-identity"),
    ):
        inv.keystore.get("m-9")
