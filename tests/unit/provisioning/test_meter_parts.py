"""The meter flow's board-independent parts: specs, configuration, identity, firmware files.

The whole flow against a MicroPython REPL runs in tests/integration/test_provision_meter.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.board import firmware_files, tree_digest
from provisioning.errors import ProvisionError, UnknownGatewayError
from provisioning.inventory import Inventory
from provisioning.meter import (
    MeterSpec,
    WifiSettings,
    _chip_of,
    _existing_identity,
    meter_config,
    provision_meters,
)
from tests.unit.provisioning.test_inventory import gateway


def test_spec_validates_units_and_ids() -> None:
    assert MeterSpec(port="/dev/ttyUSB0", owner="no-4", capacity_wh=1).reserve_bp == 2000
    with pytest.raises(ValueError, match="positive number of Wh"):
        MeterSpec(port="p", owner="o", capacity_wh=0)
    with pytest.raises(ValueError, match="0-10000 basis points"):
        MeterSpec(port="p", owner="o", capacity_wh=10, reserve_bp=10_001)
    with pytest.raises(ValueError, match="not usable"):
        MeterSpec(port="p", owner="o", capacity_wh=10, meter_id="Meter/1")
    with pytest.raises(ValueError, match="not a home id"):
        MeterSpec(port="p", owner="No. 4", capacity_wh=10)


def test_config_carries_identity_broker_and_battery() -> None:
    key = bytes(range(32))
    config = meter_config(
        meter_id="m-1",
        gateway=gateway(),
        mac_key=key,
        mqtt_password="pw",
        capacity_wh=13_500,
        reserve_bp=2_000,
        wifi=WifiSettings(ssid="Elm", password="secret"),
    )
    assert config["device_id"] == config["broker_user"] == "m-1"
    assert (config["gateway_id"], config["broker_host"], config["broker_port"]) == (
        "gw1",
        "gw.local",
        1883,
    )
    assert bytes.fromhex(config["mac_key"]) == key
    assert (config["capacity_wh"], config["reserve_bp"]) == (13_500, 2_000)
    assert (config["wifi_ssid"], config["wifi_password"]) == ("Elm", "secret")
    # Read back from a board, the same file yields the same identity.
    assert _existing_identity(json.dumps(config).encode()) == ("m-1", key, "pw")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"{not json",
        json.dumps({"device_id": "m-1", "broker_password": "pw"}).encode(),
        json.dumps({"device_id": "m-1", "mac_key": "00" * 16, "broker_password": "pw"}).encode(),
        json.dumps({"device_id": "M 1", "mac_key": "00" * 32, "broker_password": "pw"}).encode(),
        json.dumps({"device_id": "m-1", "mac_key": "00" * 32, "broker_password": ""}).encode(),
    ],
)
def test_unusable_configuration_means_no_identity(raw: bytes | None) -> None:
    assert _existing_identity(raw) is None


def test_chip_from_micropython_machine_string() -> None:
    assert _chip_of("Generic ESP32 module with ESP32") == "esp32"
    assert _chip_of("ESP32S3 module with ESP32S3") == "esp32s3"
    assert _chip_of("ESP32C3 module with ESP32C3") == "esp32c3"
    assert _chip_of("JS with Emscripten") is None


def test_several_ports_checks_gateway_and_duplicates_first(tmp_path: Path) -> None:
    spec = MeterSpec(port=str(tmp_path / "ttyUSB0"), owner="o", capacity_wh=10)
    with Inventory(path=tmp_path / "inv.json") as inv:
        with pytest.raises(UnknownGatewayError):
            provision_meters(inventory=inv, specs=[spec], gateway="gw1", files=[])
        inv.put_gateway(gateway())
        with pytest.raises(ValueError, match="twice"):
            provision_meters(inventory=inv, specs=[spec, spec], gateway="gw1", files=[])
        other = MeterSpec(port=str(tmp_path / "ttyUSB1"), owner="o", capacity_wh=10)
        outcomes = provision_meters(inventory=inv, specs=[spec, other], gateway="gw1", files=[])
        # Both ports are missing: each outcome says so, and nothing was recorded.
        assert [o.port for o in outcomes] == [spec.port, other.port]
        assert all(o.record is None and "no such serial port" in str(o.error) for o in outcomes)
        assert inv.meters() == []


def test_firmware_files_skip_tests_and_compile_with_mpy_cross(tmp_path: Path) -> None:
    device = tmp_path / "device"
    (device / "lib").mkdir(parents=True)
    (device / "tests").mkdir()
    (device / "main.py").write_text("import meter\n")
    (device / "boot.py").write_text("pass\n")
    (device / "lib" / "meter.py").write_text("def run():\n    return 42\n")
    (device / "tests" / "test_meter.py").write_text("assert True\n")
    (device / "test_x.py").write_text("assert True\n")
    (device / "notes.md").write_text("# notes\n")
    plain = firmware_files(device)
    assert [f.path for f in plain] == ["boot.py", "lib/meter.py", "main.py"]
    compiled = firmware_files(device, compile_mpy=True)
    assert [f.path for f in compiled] == ["boot.py", "lib/meter.mpy", "main.py"]
    mpy = compiled[1].data
    assert mpy[:1] == b"M" and mpy != plain[1].data  # an .mpy file starts with 'M'
    assert tree_digest(plain) == tree_digest(list(reversed(plain)))
    assert tree_digest(plain) != tree_digest(compiled)
    with pytest.raises(ProvisionError, match=r"has no main\.py"):
        firmware_files(tmp_path)
